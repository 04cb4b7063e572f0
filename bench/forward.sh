#!/usr/bin/env bash
# MLLP forwarding (`[forward]`): how fast a gateway passes accepted messages on to a downstream
# MLLP receiver, which here is a second release gateway (it parses, converts, commits, then ACKs,
# as a real interface would). Loopback only.
#   bench/forward.sh                  # 5,000 ADT^A01 (golden template)
#   MESSAGES=20000 bench/forward.sh
# Two runs:
#   live     the receiver is up while 8 connections send: messages are forwarded as they arrive
#   backlog  the receiver is down while they arrive; it is started afterwards and the queue
#            drains (the catch-up after an EHR outage)
# Reports the forwarding rate (messages / seconds until the queue is empty).
set -euo pipefail
cd "$(dirname "$0")/.."
TEMPLATE="${TEMPLATE:-tests/golden/adt_a01.hl7}"
MESSAGES="${MESSAGES:-5000}"
cargo build --release --quiet --bin v2fhir --example mllp_load
BIN="${BIN:-target/release/v2fhir}"
LOAD=target/release/examples/mllp_load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

addr_of() { # file what → the address printed as "v2fhir: WHAT listening on ADDR"
  local a=""
  for _ in $(seq 1 100); do
    a=$(sed -n "s/^v2fhir: $2 listening on //p" "$1")
    [ -n "$a" ] && break
    sleep 0.1
  done
  [ -n "$a" ] || { echo "no $2 address in $1" >&2; exit 1; }
  echo "$a"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

receiver() { # name port → starts a receiving gateway on that port
  V2FHIR_STORE_DURABILITY=process-crash V2FHIR_LOG_LEVEL=warn "$BIN" serve \
    --store "sqlite://$work/$1-receiver.db" --mllp "127.0.0.1:$2" --http "" \
    >"$work/$1-receiver.out" 2>"$work/$1-receiver.err" &
  addr_of "$work/$1-receiver.out" MLLP >/dev/null
}

pending() { # http address → forward.pending of /health
  curl -s "http://$1/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["forward"]["default"]["pending"])'
}

run() { # name live|backlog
  local port; port=$(free_port)
  [ "$2" = live ] && receiver "$1" "$port"
  V2FHIR_STORE_DURABILITY=process-crash V2FHIR_LOG_LEVEL=warn V2FHIR_FORWARD_MLLP="127.0.0.1:$port" \
    V2FHIR_FORWARD_RETRY_MAX_SECS=1 "$BIN" serve --store "sqlite://$work/$1.db" \
    --mllp 127.0.0.1:0 --http 127.0.0.1:0 >"$work/$1.out" 2>"$work/$1.err" &
  local mllp http
  mllp=$(addr_of "$work/$1.out" MLLP)
  http=$(addr_of "$work/$1.out" HTTP)
  local start; start=$(date +%s.%N)
  printf '%-8s ingest: ' "$2"
  "$LOAD" --addr "$mllp" --connections 8 --messages "$MESSAGES" --template "$TEMPLATE"
  if [ "$2" = backlog ]; then
    start=$(date +%s.%N)
    receiver "$1" "$port"
  fi
  while [ "$(pending "$http")" != 0 ]; do sleep 0.05; done
  local end; end=$(date +%s.%N)
  python3 -c "import sys; n=$MESSAGES; s=$end-$start; print(f'{sys.argv[1]:<8} forwarded {n} in {s:.2f} s: {n/s:.0f} msg/s')" "$2"
}

echo "template: $TEMPLATE messages: $MESSAGES"
run a live
run b backlog
