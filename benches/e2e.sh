#!/usr/bin/env bash
# Measures shadowflow end to end over MQTT against the raw-relay limit of the same broker.
#
# In one run it measures, each against a fresh server on a free 127.0.0.1 port:
#   relay      the embedded broker (started by the `relay` bin) relaying the same updates to
#              one subscriber that only counts them: the limit
#   sf-none    shadowflow serve --durability none, embedded broker
#   sf-sync    shadowflow serve --durability sync, embedded broker
#   mq-relay   mosquitto relaying to the `relay` subscriber
#   sf-mq      shadowflow serve --durability none with --mqtt-broker on mosquitto
#   monolith   target/release/monolith (a lock-plus-SQLite baseline) when that binary exists,
#              with its embedded broker and SQLite's synchronous=full (the counterpart of
#              --durability sync)
#   monolith-off  the same with synchronous=off (the counterpart of --durability none)
# Each gets closed-loop runs at QoS 1 and QoS 0 (maximum accepted updates/s) and an open-loop
# run at --rate (latency to /update/accepted and /update/delta). relay and sf-none also get a
# rate sweep (`sweep`): open-loop points from --sweep-start up by --sweep-step until the p99
# latency passes --p99-limit-ms or an update goes missing. The sweep times its updates with
# tokio's timer (`--pacer tokio`, up to 1 ms late), because the precise pacing thread of the
# 10,000/s latency runs costs the generator CPU that high rates need. At the end it prints a
# markdown table with the ratio of each closed-loop figure to the relay limit of the same
# broker.
#
# Usage: benches/e2e.sh [--devices N] [--connections N] [--in-flight N] [--warmup-secs S]
#          [--duration-secs S] [--rate N] [--sweep-start N] [--sweep-step N]
#          [--sweep-max-secs S] [--p99-limit-ms MS] [--skip "mq-relay sf-mq ..."]
#          [--data-root DIR] [--results FILE] [--no-build]
#
# About 13 minutes at the defaults. Generator, broker and service share the machine's cores.
# Every server binds 127.0.0.1, every load run is bounded by its duration, its request budget
# and `timeout`, and every process the script starts is stopped at exit.
set -euo pipefail

workspace=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$workspace/target}

devices=1000
connections=8
in_flight=32
warmup_secs=3
duration_secs=10
rate=10000
sweep_start=10000
sweep_step=10000
sweep_max_secs=150
p99_limit_ms=10
skip=""
data_root=$target_dir/bench-data
results=""
build=1

# Upper bound on updates per load run, far above what 2 cores reach in 13 s.
max_requests=20000000
# Seconds that `load` waits for outstanding replies after sending stops.
drain_secs=10
# Seconds a server has to print its ready line, and to stop after SIGTERM.
start_timeout_secs=60
stop_timeout_secs=60

while (($# > 0)); do
    case $1 in
        --devices) devices=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --in-flight) in_flight=$2; shift 2 ;;
        --warmup-secs) warmup_secs=$2; shift 2 ;;
        --duration-secs) duration_secs=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --sweep-start) sweep_start=$2; shift 2 ;;
        --sweep-step) sweep_step=$2; shift 2 ;;
        --sweep-max-secs) sweep_max_secs=$2; shift 2 ;;
        --p99-limit-ms) p99_limit_ms=$2; shift 2 ;;
        --skip) skip=$2; shift 2 ;;
        --data-root) data_root=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h | --help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1; see --help" >&2; exit 2 ;;
    esac
done

shadowflow=$target_dir/release/shadowflow
load=$target_dir/release/load
sweep=$target_dir/release/sweep
relay=$target_dir/release/relay
monolith=$target_dir/release/monolith
mkdir -p "$data_root"
results=${results:-$data_root/e2e-$(date -u +%Y%m%dT%H%M%SZ).jsonl}

if ((build)); then
    (cd "$workspace" && cargo build --release --bin shadowflow &&
        cargo build --release -p shadowflow-benches --bin load --bin sweep --bin relay)
fi
for binary in "$shadowflow" "$load" "$sweep" "$relay"; do
    [[ -x $binary ]] || { echo "missing $binary: build it or drop --no-build" >&2; exit 1; }
done
mosquitto=$(command -v mosquitto || true)
[[ -z $mosquitto && -x /usr/sbin/mosquitto ]] && mosquitto=/usr/sbin/mosquitto
if [[ -z $mosquitto ]]; then
    echo "mosquitto not found: skipping mq-relay and sf-mq" >&2
    skip+=" mq-relay sf-mq"
fi
if [[ ! -x $monolith ]]; then
    echo "no $monolith: skipping the monolith baseline" >&2
    skip+=" monolith"
fi

work_dir=$(mktemp -d "$data_root/e2e-XXXXXX")
server_pid=""
broker_pid=""
load_pid=""

# Stops what this script started, by PID, and removes its work folder.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((stop_timeout_secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$load_pid"
    stop_pid "$server_pid"
    stop_pid "$broker_pid"
    rm -rf "$work_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prints a free TCP port on 127.0.0.1 (bound once with port 0, then released).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until file $2 has a line matching $3, while process $1 runs. The caller removes the
# file before it starts the process, because the shell truncates it only once the background
# process has started.
wait_ready() {
    local pid=$1 file=$2 pattern=$3 waited=0
    until grep -q "$pattern" "$file" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "a server exited before it was ready; its output ends with:" >&2
            tail -20 "$file" "$file.err" 2>/dev/null >&2
            exit 1
        fi
        if ((waited >= start_timeout_secs * 10)); then
            echo "a server was not ready after ${start_timeout_secs} s: $file" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# Starts mosquitto on a free port with a config file in the work folder; sets broker_pid and
# mosquitto_address.
start_mosquitto() {
    local port
    port=$(free_port)
    cat >"$work_dir/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
log_dest file $work_dir/mosquitto.log
EOF
    "$mosquitto" -c "$work_dir/mosquitto.conf" >"$work_dir/mosquitto.out" 2>&1 &
    broker_pid=$!
    local waited=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        ((waited++ < 100)) || { echo "mosquitto did not listen on $port" >&2; exit 1; }
        sleep 0.1
    done
    mosquitto_address=127.0.0.1:$port
}

# Starts the relay subscriber, on its own embedded broker or on "$1" when given; sets
# server_pid and mqtt_address.
start_relay() {
    local out=$work_dir/relay.out
    rm -f "$out" "$out.err"
    if [[ -n ${1:-} ]]; then
        "$relay" --broker "$1" >"$out" 2>"$out.err" &
    else
        "$relay" --listen 127.0.0.1:0 >"$out" 2>"$out.err" &
    fi
    server_pid=$!
    wait_ready "$server_pid" "$out" '^relay ready '
    mqtt_address=$(sed -n 's/^relay ready mqtt=\(.*\)/\1/p' "$out")
}

# Starts shadowflow serve with durability $1 and extra flags "${@:2}"; sets server_pid and
# mqtt_address.
start_shadowflow() {
    local mode=$1 out=$work_dir/shadowflow.out
    shift
    rm -rf "$work_dir/data" "$out" "$out.err"
    "$shadowflow" serve --workers 2 --durability "$mode" --data-dir "$work_dir/data" \
        --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 "$@" >"$out" 2>"$out.err" &
    server_pid=$!
    wait_ready "$server_pid" "$out" '^shadowflow ready '
    mqtt_address=$(sed -n 's/^shadowflow ready .*mqtt=mqtt:\/\/\([^ ]*\).*/\1/p' "$out")
}

# Starts the monolith baseline with "$@"; sets server_pid and mqtt_address from its output
# line `... mqtt=HOST:PORT` (with or without mqtt://).
start_monolith() {
    local out=$work_dir/monolith.out
    rm -rf "$work_dir/monolith-data" "$out" "$out.err"
    mkdir -p "$work_dir/monolith-data"
    (cd "$work_dir/monolith-data" && exec "$monolith" "$@") >"$out" 2>"$out.err" &
    server_pid=$!
    wait_ready "$server_pid" "$out" 'mqtt='
    mqtt_address=$(sed -n 's/.*mqtt=\(mqtt:\/\/\)\{0,1\}\([^ ]*\).*/\2/p' "$out" | head -1)
}

# Prints the CPU seconds process $1 has used so far.
cpu_seconds() {
    awk -v ticks="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / ticks }' \
        "/proc/$1/stat"
}

# Prints the top-level field $2 of JSON line $1.
field() {
    sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"
}

# Runs `load` for configuration $1 (a label) with "${@:2}", appends its report plus the
# server's CPU seconds during the run (`server_cpu_secs`) to the results, and sets `report`.
run_load() {
    local name=$1 bound=$((warmup_secs + duration_secs + drain_secs + 60)) status=0 before
    shift
    before=$(cpu_seconds "$server_pid")
    timeout --kill-after=10 "$bound" "$load" --broker "$mqtt_address" \
        --devices "$devices" --connections "$connections" --in-flight "$in_flight" \
        --warmup-secs "$warmup_secs" --duration-secs "$duration_secs" \
        --max-requests "$max_requests" --drain-secs "$drain_secs" --label "$name" "$@" \
        >"$work_dir/load.json" 2>"$work_dir/load.err" &
    load_pid=$!
    wait "$load_pid" || status=$?
    load_pid=""
    if ((status != 0)); then
        echo "load $name $* failed with exit status $status (124: timed out after $bound s):" >&2
        cat "$work_dir/load.err" >&2
        exit 1
    fi
    report=$(<"$work_dir/load.json")
    local server_cpu
    server_cpu=$(awk -v a="$before" -v b="$(cpu_seconds "$server_pid")" 'BEGIN { print b - a }')
    report=${report%\}},\"server_cpu_secs\":$server_cpu\}
    echo "$report" >>"$results"
    echo "  $name $*: $(cut -d';' -f1-3 "$work_dir/load.err" | sed 's/.*warm-up: //')" >&2
}

# Runs `sweep` for configuration $1 with "${@:2}", appends its lines to the results, and sets
# `sweep_max` to the highest passing rate (or "none").
run_sweep() {
    local name=$1 bound=$((sweep_max_secs + 60)) status=0
    shift
    timeout --kill-after=10 "$bound" "$sweep" --broker "$mqtt_address" \
        --devices "$devices" --connections "$connections" \
        --warmup-secs "$warmup_secs" --duration-secs "$duration_secs" \
        --drain-secs "$drain_secs" --max-requests "$max_requests" --label "$name" \
        --start-rate "$sweep_start" --step "$sweep_step" --p99-limit-ms "$p99_limit_ms" \
        --max-total-secs "$sweep_max_secs" --pacer tokio "$@" \
        >"$work_dir/sweep.json" 2>"$work_dir/sweep.err" &
    load_pid=$!
    wait "$load_pid" || status=$?
    load_pid=""
    if ((status != 0)); then
        echo "sweep $name failed with exit status $status:" >&2
        cat "$work_dir/sweep.err" >&2
        exit 1
    fi
    cat "$work_dir/sweep.json" >>"$results"
    sweep_max=$(tail -1 "$work_dir/sweep.json" | sed -n 's/.*"max_passing_rate":\([^,}]*\).*/\1/p')
    [[ $sweep_max == null || -z $sweep_max ]] && sweep_max=none
    echo "  $name sweep: highest passing rate $sweep_max/s" >&2
}

declare -A closed1 closed0 open_p50 open_p99 delta_p50 delta_p99 cpu_us sweep_rate missing
ms() {
    awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'
}

# Measures configuration $1 on the server started already: closed loop at QoS 1 and 0, then
# open loop at --rate. The arguments after $1 go to every load run (such as --target relay).
measure() {
    local name=$1 accepted
    shift
    echo "$name (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    run_load "$name" --mode closed --qos 1 "$@"
    closed1[$name]=$(field "$report" throughput_per_s)
    accepted=$(field "$report" accepted)
    cpu_us[$name]=$(awk -v cpu="$(field "$report" server_cpu_secs)" -v n="$accepted" \
        'BEGIN { printf "%.1f", (n > 0 ? cpu * 1e6 / n : 0) }')
    missing[$name]=$(($(field "$report" missing) + $(field "$report" missing_delta)))
    run_load "$name" --mode closed --qos 0 "$@"
    closed0[$name]=$(field "$report" throughput_per_s)
    missing[$name]=$((missing[$name] + $(field "$report" missing) + $(field "$report" missing_delta)))
    run_load "$name" --mode open --rate "$rate" --qos 1 "$@"
    open_p50[$name]=$(field "$report" p50_us)
    open_p99[$name]=$(field "$report" p99_us)
    delta_p50[$name]=$(field "$report" delta_p50_us)
    delta_p99[$name]=$(field "$report" delta_p99_us)
    missing[$name]=$((missing[$name] + $(field "$report" missing) + $(field "$report" missing_delta)))
}

skipped() {
    [[ " $skip " == *" $1 "* ]]
}

echo "results: $results" >&2
if ! skipped relay; then
    start_relay
    measure relay --target relay
    run_sweep relay --target relay
    sweep_rate[relay]=$sweep_max
    stop_pid "$server_pid"; server_pid=""
fi
if ! skipped sf-none; then
    start_shadowflow none
    measure sf-none
    run_sweep sf-none
    sweep_rate[sf-none]=$sweep_max
    stop_pid "$server_pid"; server_pid=""
fi
if ! skipped sf-sync; then
    start_shadowflow sync
    measure sf-sync
    stop_pid "$server_pid"; server_pid=""
fi
if ! skipped mq-relay || ! skipped sf-mq; then
    start_mosquitto
    if ! skipped mq-relay; then
        start_relay "$mosquitto_address"
        measure mq-relay --target relay
        stop_pid "$server_pid"; server_pid=""
    fi
    if ! skipped sf-mq; then
        start_shadowflow none --mqtt-broker "mqtt://$mosquitto_address"
        # The service's CPU column leaves out mosquitto's share.
        measure sf-mq
        stop_pid "$server_pid"; server_pid=""
    fi
    stop_pid "$broker_pid"; broker_pid=""
fi
if ! skipped monolith; then
    start_monolith --embedded 127.0.0.1:0 --synchronous full
    measure monolith
    stop_pid "$server_pid"; server_pid=""
    start_monolith --embedded 127.0.0.1:0 --synchronous off
    measure monolith-off
    stop_pid "$server_pid"; server_pid=""
fi

# Prints $1 / $2 with two decimals, or "-" when either is missing.
ratio() {
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "-";
        else printf "%.2f", a / b }'
}

echo
echo "$devices devices over $connections connections; closed loop with $in_flight updates in" \
    "flight per connection; ${warmup_secs} s warm-up, ${duration_secs} s measured; open loop at" \
    "$rate/s; sweep p99 limit $p99_limit_ms ms (delta for shadowflow, relayed copy for relay)."
echo
echo "| configuration | closed QoS 1: updates/s | ÷ relay | closed QoS 0: updates/s | ÷ relay" \
    "| open $rate/s: ack p50 ms | ack p99 ms | delta p50 ms | delta p99 ms" \
    "| sweep: max rate/s | server CPU µs/update | missing |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for name in relay sf-none sf-sync mq-relay sf-mq monolith monolith-off; do
    [[ -n ${closed1[$name]:-} ]] || continue
    limit=relay
    [[ $name == mq-relay || $name == sf-mq ]] && limit=mq-relay
    printf '| %s | %.0f | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
        "${closed1[$name]}" "$(ratio "${closed1[$name]}" "${closed1[$limit]:-}")" \
        "${closed0[$name]}" "$(ratio "${closed0[$name]}" "${closed0[$limit]:-}")" \
        "$(ms "${open_p50[$name]}")" "$(ms "${open_p99[$name]}")" \
        "$(ms "${delta_p50[$name]}")" "$(ms "${delta_p99[$name]}")" \
        "${sweep_rate[$name]:--}" "${cpu_us[$name]}" "${missing[$name]}"
done
