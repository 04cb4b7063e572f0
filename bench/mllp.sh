#!/usr/bin/env bash
# MLLP throughput and latency of the release gateway with conversion and durable commit on SQLite.
#   bench/mllp.sh                 # ADT^A01 template
#   TEMPLATE=tests/golden/oru_r01_lab.hl7 bench/mllp.sh
# Runs: 1 and 8 connections with durability=process-crash (WAL, synchronous=NORMAL), then
# 8 connections with durability=power-loss (an fsync per group commit). Loopback only.
#   PG_URL=postgres://postgres:PASSWORD@127.0.0.1:5432/postgres bench/mllp.sh
# runs the same load against PostgreSQL instead (a fresh database `v2fhir_bench` per run, dropped
# afterwards; durability is PostgreSQL's own, so the power-loss row is not repeated).
set -euo pipefail
cd "$(dirname "$0")/.."
TEMPLATE="${TEMPLATE:-tests/golden/adt_a01.hl7}"
MESSAGES="${MESSAGES:-40000}"
cargo build --release --quiet --bin v2fhir --example mllp_load
BIN="${BIN:-target/release/v2fhir}" # BIN=path/to/other/v2fhir for A/B runs
LOAD=target/release/examples/mllp_load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

psql_admin() { # SQL, run on the admin database of PG_URL
  local url="$PG_URL"
  PGCONNECT_TIMEOUT=5 psql -q "$url" -c "$1" >/dev/null 2>&1 || { echo "psql: $1 failed" >&2; exit 1; }
}

run() { # durability connections messages
  local store="sqlite://$work/$1-$2.db"
  if [ -n "${PG_URL:-}" ]; then
    psql_admin "DROP DATABASE IF EXISTS v2fhir_bench"
    psql_admin "CREATE DATABASE v2fhir_bench"
    store="${PG_URL%/*}/v2fhir_bench"
  fi
  V2FHIR_STORE_DURABILITY="$1" V2FHIR_LOG_LEVEL=warn "$BIN" serve --store "$store" \
    --mllp 127.0.0.1:0 --http "" >"$work/out" 2>"$work/err" &
  local pid=$!
  local addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^v2fhir: MLLP listening on //p' "$work/out")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$work/err"; exit 1; }
  if [ -n "${PG_URL:-}" ]; then printf 'store=postgresql '; else printf 'durability=%-13s ' "$1"; fi
  "$LOAD" --addr "$addr" --connections "$2" --messages "$3" --template "$TEMPLATE"
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "    gateway peak RSS: $((rss / 1024)) MiB"
  kill -TERM "$pid"; wait "$pid" || true
}

if [ -n "${PG_URL:-}" ]; then echo "template: $TEMPLATE store: postgresql"; else echo "template: $TEMPLATE store: sqlite"; fi
run process-crash 1 $((MESSAGES / 4))
run process-crash 8 "$MESSAGES"
if [ -z "${PG_URL:-}" ]; then
  run power-loss 8 "$MESSAGES"
else
  psql_admin "DROP DATABASE IF EXISTS v2fhir_bench"
fi
