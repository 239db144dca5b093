#!/usr/bin/env bash
# Measures shadowflow's update throughput and ack latency in each durability mode.
#
# For each run and each mode it starts the release `shadowflow serve` with a fresh data folder,
# 2 dataflow workers and the embedded broker on free loopback ports. It runs `load` against it
# twice, first in closed loop (maximum throughput), then in open loop at a fixed rate. Then it
# stops the service with SIGTERM and deletes the folder. At the end it prints a markdown table
# of the medians over the runs. The reports set no desired state, so they produce no delta
# (`load --deltas false`); `e2e.sh` measures reports that do. First it times append +
# fdatasync on the data root's disk with `sync-latency`. Every JSON report of `sync-latency`
# and `load` goes to the results file.
#
# Usage: benches/durability.sh [--runs N] [--modes "sync batch none"] [--devices N]
#          [--connections N] [--in-flight N] [--warmup-secs S] [--duration-secs S]
#          [--rate N] [--data-root DIR] [--results FILE] [--no-build]
#
# The data folders go under --data-root (default: target/bench-data in the workspace), which
# must be on the disk under test: on a tmpfs every sync is free. Traffic stays on 127.0.0.1,
# and each `load` run is bounded by its duration, its request budget and `timeout`.
set -euo pipefail

workspace=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$workspace/target}

runs=3
modes="sync batch none"
devices=1000
connections=8
in_flight=32
warmup_secs=5
duration_secs=30
rate=10000
data_root=$target_dir/bench-data
results=""
build=1

# Upper bound on updates per load run, far above what 2 cores reach in the default 35 s.
max_requests=20000000
# Seconds that `load` waits for outstanding replies after sending stops.
drain_secs=10
# Maximum wait, in seconds, for other processes to go idle before each service start.
idle_wait_secs=120
ticks_per_second=$(getconf CLK_TCK)
# Seconds the service has to print its ready line, and to stop after SIGTERM.
start_timeout_secs=60
stop_timeout_secs=60

while (($# > 0)); do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --devices) devices=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --in-flight) in_flight=$2; shift 2 ;;
        --warmup-secs) warmup_secs=$2; shift 2 ;;
        --duration-secs) duration_secs=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --data-root) data_root=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h | --help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1; see --help" >&2; exit 2 ;;
    esac
done

shadowflow=$target_dir/release/shadowflow
load=$target_dir/release/load
sync_latency=$target_dir/release/sync-latency
mkdir -p "$data_root"
results=${results:-$data_root/durability-$(date -u +%Y%m%dT%H%M%SZ).jsonl}

if ((build)); then
    (cd "$workspace" && cargo build --release -p shadowflow -p shadowflow-benches)
fi
for binary in "$shadowflow" "$load" "$sync_latency"; do
    [[ -x $binary ]] || { echo "missing $binary: build it or drop --no-build" >&2; exit 1; }
done
if [[ $(stat -f -c %T "$data_root") == tmpfs ]]; then
    echo "warning: $data_root is on a tmpfs, so fdatasync costs nothing there" >&2
fi

# The floor under every acknowledgement in sync mode, for the record.
"$sync_latency" --dir "$data_root" --writes 1000 >>"$results"

service_pid=""
load_pid=""
data_dir=""

# Stops what this script started, by PID, and removes the current data folder.
cleanup() {
    if [[ -n $load_pid ]] && kill -0 "$load_pid" 2>/dev/null; then
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    if [[ -n $service_pid ]] && kill -0 "$service_pid" 2>/dev/null; then
        kill -TERM "$service_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$service_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
    if [[ -n $data_dir ]]; then
        rm -rf "$data_dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts the service in durability mode $1 and sets service_pid and mqtt_address.
start_service() {
    data_dir=$(mktemp -d "$data_root/durability-$1-XXXXXX")
    "$shadowflow" serve --workers 2 --durability "$1" --data-dir "$data_dir/data" \
        --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        >"$data_dir/stdout" 2>"$data_dir/service.log" &
    service_pid=$!
    local waited=0
    until grep -q '^shadowflow ready ' "$data_dir/stdout"; do
        if ! kill -0 "$service_pid" 2>/dev/null; then
            echo "shadowflow serve exited before it was ready; its log ends with:" >&2
            tail -20 "$data_dir/service.log" >&2
            exit 1
        fi
        if ((waited >= start_timeout_secs * 10)); then
            echo "shadowflow serve was not ready after ${start_timeout_secs} s" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    mqtt_address=$(sed -n 's/^shadowflow ready .*mqtt=\([^ ]*\).*/\1/p' "$data_dir/stdout")
}

# Prints the CPU time the service has used so far, user plus system, in seconds.
service_cpu_seconds() {
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
    awk -v ticks="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / ticks }' \
        "/proc/$service_pid/stat"
}

# Stops the service with SIGTERM, checks its exit status, and removes its data folder. Sets
# service_cpu to the CPU seconds the service used before the signal.
stop_service() {
    local started=$SECONDS status=0
    service_cpu=$(service_cpu_seconds)
    kill -TERM "$service_pid"
    for _ in $(seq 1 $((stop_timeout_secs * 10))); do
        kill -0 "$service_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$service_pid" 2>/dev/null; then
        echo "shadowflow serve did not stop within ${stop_timeout_secs} s of SIGTERM" >&2
        kill -KILL "$service_pid" || true
    fi
    wait "$service_pid" || status=$?
    service_pid=""
    if ((status != 0)); then
        echo "shadowflow serve exited with status $status; its log ends with:" >&2
        tail -20 "$data_dir/service.log" >&2
    fi
    echo "  stopped in $((SECONDS - started)) s (exit status $status)" >&2
    rm -rf "$data_dir"
    data_dir=""
}

# Runs `load` with the common flags plus "$@" and sets `report` to its JSON line.
run_load() {
    local bound=$((warmup_secs + duration_secs + drain_secs + 60)) status=0
    timeout --kill-after=10 "$bound" "$load" --broker "$mqtt_address" \
        --devices "$devices" --connections "$connections" \
        --warmup-secs "$warmup_secs" --duration-secs "$duration_secs" \
        --max-requests "$max_requests" --drain-secs "$drain_secs" --deltas false "$@" \
        >"$data_dir/load.json" &
    load_pid=$!
    wait "$load_pid" || status=$?
    load_pid=""
    if ((status != 0)); then
        echo "load $* failed with exit status $status (124: timed out after $bound s)" >&2
        exit 1
    fi
    report=$(<"$data_dir/load.json")
}

# Prints the top-level field $2 of JSON line $1.
field() {
    sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"
}

# Prints the busy CPU time of the whole machine so far, in clock ticks (from /proc/stat).
cpu_busy_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# Waits until other processes use less than a fifth of a core (sampled over 2 s), for at most
# idle_wait_secs, because other work on the machine takes CPU time from the service.
wait_for_idle_cpu() {
    local waited=0 before busy
    while ((waited < idle_wait_secs)); do
        before=$(cpu_busy_ticks)
        sleep 2
        waited=$((waited + 2))
        busy=$(($(cpu_busy_ticks) - before))
        if ((busy * 5 < 2 * ticks_per_second)); then
            ((waited > 2)) && echo "  waited $waited s for other processes to go idle" >&2
            return 0
        fi
    done
    echo "  warning: other processes still busy after $idle_wait_secs s; measuring anyway" >&2
}

# Prints the median of the numbers given as arguments (the lower middle one for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ value[NR] = $1 } END { print value[int((NR + 1) / 2)] }'
}

ms() {
    awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'
}

declare -A closed_rate closed_p50 closed_p99 open_rate open_p50 open_p99 cpu_per_update
declare -A rejected missing other_cores
echo "results: $results" >&2
for run in $(seq 1 "$runs"); do
    for mode in $modes; do
        echo "run $run/$runs, durability $mode (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        wait_for_idle_cpu
        busy_before=$(cpu_busy_ticks)
        started_at=$(date +%s.%N)
        start_service "$mode"

        run_load --mode closed --in-flight "$in_flight" --label "$mode closed run $run"
        closed=$report
        run_load --mode open --rate "$rate" --label "$mode open run $run"
        open=$report
        stop_service
        # Machine CPU time charged to neither the service nor the generator: other processes
        # and the kernel's interrupt work, averaged over the run's wall time.
        other_cores[$mode]+=" $(awk -v busy="$(($(cpu_busy_ticks) - busy_before))" \
            -v ticks="$ticks_per_second" -v service="$service_cpu" \
            -v closed="$(field "$closed" generator_cpu_secs)" \
            -v open="$(field "$open" generator_cpu_secs)" \
            -v wall="$(awk -v start="$started_at" -v now="$(date +%s.%N)" \
                'BEGIN { print now - start }')" \
            'BEGIN { other = busy / ticks - service - closed - open
                     printf "%.2f", (other > 0 ? other / wall : 0) }')"
        printf '%s\n%s\n' "$closed" "$open" >>"$results"

        closed_rate[$mode]+=" $(field "$closed" throughput_per_s)"
        closed_p50[$mode]+=" $(field "$closed" p50_us)"
        closed_p99[$mode]+=" $(field "$closed" p99_us)"
        open_rate[$mode]+=" $(field "$open" throughput_per_s)"
        open_p50[$mode]+=" $(field "$open" p50_us)"
        open_p99[$mode]+=" $(field "$open" p99_us)"
        accepted=0
        for report in "$closed" "$open"; do
            rejected[$mode]=$((${rejected[$mode]:-0} + $(field "$report" rejected)))
            missing[$mode]=$((${missing[$mode]:-0} + $(field "$report" missing)))
            accepted=$((accepted + $(field "$report" accepted)))
        done
        cpu_per_update[$mode]+=" $(awk -v cpu="$service_cpu" -v n="$accepted" \
            'BEGIN { printf "%.1f", (n > 0 ? cpu * 1e6 / n : 0) }')"
        echo "  service CPU ${service_cpu} s for $accepted accepted updates;" \
            "generator CPU $(field "$closed" generator_cpu_secs) s and" \
            "$(field "$open" generator_cpu_secs) s; other CPU use" \
            "${other_cores[$mode]##* } cores on average" >&2
    done
done

echo
echo "Medians of $runs runs; $devices devices over $connections connections," \
    "${warmup_secs} s warm-up, ${duration_secs} s measured; service with 2 workers."
echo
echo "| mode | closed loop ($in_flight in flight/connection): updates/s | p50 ms | p99 ms" \
    "| open loop at $rate/s: updates/s | p50 ms | p99 ms | service CPU µs/update" \
    "| other CPU use, cores | rejected | missing |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for mode in $modes; do
    # Word splitting of the space-separated per-run values is intended.
    # shellcheck disable=SC2086
    printf '| %s | %.0f | %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n' "$mode" \
        "$(median ${closed_rate[$mode]})" \
        "$(ms "$(median ${closed_p50[$mode]})")" "$(ms "$(median ${closed_p99[$mode]})")" \
        "$(median ${open_rate[$mode]})" \
        "$(ms "$(median ${open_p50[$mode]})")" "$(ms "$(median ${open_p99[$mode]})")" \
        "$(median ${cpu_per_update[$mode]})" "$(median ${other_cores[$mode]})" \
        "${rejected[$mode]}" "${missing[$mode]}"
done
