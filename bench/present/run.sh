#!/usr/bin/env bash
# Authenticated present path vs a bare aiohttp handler, same machine, same run.
#   bench/present/run.sh [SECONDS] [CONNECTIONS] [ROUNDS]
# Needs wrk (apt-get install wrk) and the project venv (make install).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
ROUNDS=${3:-3}
PY=.venv/bin/python
BROKER=.venv/bin/dns01-broker
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
run_wrk() { wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/present/present.lua "http://127.0.0.1:$1/v1/present" | grep '^RESULT'; }

bare_port=$(free_port)
$PY bench/present/bare_aiohttp.py "$bare_port" & pids+=($!)

broker_port=$(free_port)
cat > "$work/broker.toml" <<TOML
[http]
listen = "127.0.0.1:$broker_port"
[dns]
listen = ["127.0.0.1:0"]
[store]
url = "sqlite:///$work/broker.db"
[auth]
bootstrap_token_file = "$work/admin.token"
[challenges]
max_lease = "7d"
[log]
level = "WARNING"
# wrk sends far more than a client would from one address with one token: buckets off.
[http.rate_limit]
address_rate = 0
token_rate = 0
TOML
export BENCH_TOKEN
BENCH_TOKEN=$($BROKER --config "$work/broker.toml" token create --name bench --allow '*.example.test' 2>/dev/null)
$BROKER --config "$work/broker.toml" serve & pids+=($!)
wait_port "$bare_port"; wait_port "$broker_port"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); wrk -t1 -c$CONNECTIONS -d${DURATION}s; $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  bare=$(run_wrk "$bare_port")
  broker=$(run_wrk "$broker_port")
  bare_rps=$(sed 's/.*rps=\([0-9]*\).*/\1/' <<<"$bare")
  broker_rps=$(sed 's/.*rps=\([0-9]*\).*/\1/' <<<"$broker")
  echo "round $round  bare aiohttp: ${bare#RESULT }"
  echo "round $round  broker present: ${broker#RESULT }"
  echo "round $round  ratio broker/bare: $(awk -v a="$broker_rps" -v b="$bare_rps" 'BEGIN {printf "%.2f", a/b}')"
done
