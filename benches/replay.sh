#!/usr/bin/env bash
# Measures `shadowflow replay` of the full Beijing data set into `shadowflow serve`.
#
# Each run starts the release `shadowflow serve` with 2 dataflow workers, a fresh data folder
# and the embedded broker on free loopback ports. It replays every row of the Beijing data set
# over MQTT at QoS 1 with `shadowflow replay` and reads the rows per second from the replay's
# summary. Then it stops the service with SIGTERM and deletes the folder. At the end the script
# prints the rows per second of each run and their median.
#
# Usage: benches/replay.sh [--runs N] [--durability sync|batch|none] [--datasets DIR]
#          [--data-root DIR] [--no-build]
#
# --datasets is the folder of the raw data sets (default: $SHADOWFLOW_DATASETS, else
# ../shared/datasets/raw beside the workspace); datasets/README.md says where to download them.
set -euo pipefail

workspace=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$workspace/target}

runs=3
durability=sync
datasets=${SHADOWFLOW_DATASETS:-$workspace/../shared/datasets/raw}
data_root=$target_dir/bench-data
build=1
# Seconds the service has to print its ready line, and the replay has to finish.
start_timeout_secs=60
replay_timeout_secs=600

while (($# > 0)); do
    case $1 in
        --runs) runs=$2; shift 2 ;;
        --durability) durability=$2; shift 2 ;;
        --datasets) datasets=$2; shift 2 ;;
        --data-root) data_root=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1; see --help" >&2; exit 2 ;;
    esac
done

beijing=$datasets/beijing-multisite-air-quality
if [[ ! -d $beijing ]]; then
    echo "Beijing data set not found at $beijing: pass --datasets DIR or set SHADOWFLOW_DATASETS" >&2
    exit 1
fi
if ((build)); then
    (cd "$workspace" && cargo build --release -p shadowflow)
fi
shadowflow=$target_dir/release/shadowflow
[[ -x $shadowflow ]] || { echo "missing $shadowflow: build it or drop --no-build" >&2; exit 1; }
mkdir -p "$data_root"

service_pid=""
data_dir=""

# Stops the service this script started, by PID, and removes its data folder.
cleanup() {
    if [[ -n $service_pid ]] && kill -0 "$service_pid" 2>/dev/null; then
        kill -TERM "$service_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$service_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
    service_pid=""
    if [[ -n $data_dir ]]; then
        rm -rf "$data_dir"
    fi
    data_dir=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rates=()
for run in $(seq 1 "$runs"); do
    data_dir=$(mktemp -d "$data_root/replay-XXXXXX")
    "$shadowflow" serve --workers 2 --durability "$durability" --data-dir "$data_dir/data" \
        --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        >"$data_dir/stdout" 2>"$data_dir/service.log" &
    service_pid=$!
    waited=0
    until grep -q '^shadowflow ready ' "$data_dir/stdout" 2>/dev/null; do
        if ! kill -0 "$service_pid" 2>/dev/null || ((waited >= start_timeout_secs * 10)); then
            echo "shadowflow serve did not get ready; its log ends with:" >&2
            tail -20 "$data_dir/service.log" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    mqtt=$(sed -n 's/^shadowflow ready .*mqtt=\([^ ]*\).*/\1/p' "$data_dir/stdout")
    timeout "$replay_timeout_secs" "$shadowflow" replay "$beijing" --dataset beijing --mqtt "$mqtt" \
        >"$data_dir/replay.out" 2>&1
    rate=$(sed -n 's/^ *rate *\([0-9.]*\) rows\/s.*/\1/p' "$data_dir/replay.out" | tail -1)
    if [[ -z $rate ]]; then
        echo "run $run: no rate in the replay's summary; its output ends with:" >&2
        tail -20 "$data_dir/replay.out" >&2
        exit 1
    fi
    echo "run $run: $rate rows/s (durability $durability)"
    rates+=("$rate")
    cleanup
done

median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
echo "median of $runs runs: $median rows/s"
