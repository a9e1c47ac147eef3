#!/usr/bin/env bash
# What the audit log costs the present path: one broker with it, one without (audit.enabled
# = false), same machine, same run, alternating round by round, each on its own SQLite file.
#   bench/present/audit.sh [SECONDS] [CONNECTIONS] [ROUNDS]
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
run_wrk() { BENCH_TOKEN=$2 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s bench/present/present.lua "http://127.0.0.1:$1/v1/present" | grep '^RESULT'; }

start_broker() {  # NAME AUDIT_ENABLED -> prints "PORT TOKEN"
  local dir="$work/$1" port
  port=$(free_port)
  mkdir -p "$dir"
  cat > "$dir/broker.toml" <<TOML
[http]
listen = "127.0.0.1:$port"
[dns]
listen = ["127.0.0.1:0"]
[store]
url = "sqlite:///$dir/broker.db"
[auth]
bootstrap_token_file = "$dir/admin.token"
[challenges]
max_lease = "7d"
[audit]
enabled = $2
[log]
level = "WARNING"
TOML
  local token
  token=$($BROKER --config "$dir/broker.toml" token create --name bench --allow '*.example.test' 2>/dev/null)
  $BROKER --config "$dir/broker.toml" serve >/dev/null 2>&1 &
  echo "$! $port $token"
}

read -r off_pid off_port off_token < <(start_broker off false); pids+=("$off_pid")
read -r on_pid on_port on_token < <(start_broker on true); pids+=("$on_pid")
wait_port "$off_port"; wait_port "$on_port"

ratios=()
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); wrk -t1 -c$CONNECTIONS -d${DURATION}s; $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  if (( round % 2 )); then  # alternate which goes first, so neither always meets a warmer machine
    off=$(run_wrk "$off_port" "$off_token"); on=$(run_wrk "$on_port" "$on_token")
  else
    on=$(run_wrk "$on_port" "$on_token"); off=$(run_wrk "$off_port" "$off_token")
  fi
  off_rps=$(sed 's/.*rps=\([0-9]*\).*/\1/' <<<"$off")
  on_rps=$(sed 's/.*rps=\([0-9]*\).*/\1/' <<<"$on")
  echo "round $round  audit off: ${off#RESULT }"
  echo "round $round  audit on:  ${on#RESULT }"
  ratio=$(awk -v a="$on_rps" -v b="$off_rps" 'BEGIN {printf "%.2f", a/b}')
  ratios+=("$ratio")
  echo "round $round  ratio on/off: $ratio"
done
events=$($PY - "$work/on/broker.db" <<'PY'
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM audit_events").fetchone()[0])
PY
)
echo "audit events stored by the audited broker: $events"
echo "median ratio on/off: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
