#!/usr/bin/env bash
# FHIR writes by device backends: batch Bundles of readings POSTed to /fhir by N clients, against
# a release gateway on a fresh SQLite file (durability process-crash, then power-loss). Loopback.
#   bench/fhir.sh                    # 8 clients, 2000 requests of 50 Observations
#   CLIENTS=1 PER_REQUEST=1 bench/fhir.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${CLIENTS:-8}"
REQUESTS="${REQUESTS:-2000}"
PER_REQUEST="${PER_REQUEST:-50}"
cargo build --release --quiet --bin v2fhir --example fhir_load
BIN="${BIN:-target/release/v2fhir}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
for durability in process-crash power-loss; do
  V2FHIR_STORE_DURABILITY="$durability" V2FHIR_LOG_LEVEL=warn "$BIN" serve --store "sqlite://$work/$durability.db" \
    --mllp "" --http 127.0.0.1:0 >"$work/out" 2>"$work/err" &
  pid=$!
  addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^v2fhir: HTTP listening on //p' "$work/out")
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$work/err"; exit 1; }
  printf 'durability=%-13s ' "$durability"
  target/release/examples/fhir_load --addr "$addr" --clients "$CLIENTS" --requests "$REQUESTS" --per-request "$PER_REQUEST"
  kill -TERM "$pid"; wait "$pid" || true
done
