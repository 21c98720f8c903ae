#!/usr/bin/env bash
# edge-syscalls.sh: system calls per cached hit, for strata's edge and for
# nginx proxy_cache in front of the same strata, counted by the kernel's
# syscall tracepoints (`perf stat -e 'syscalls:sys_enter_*'`) during a wrk
# run. About 60% of a small hit's CPU is the kernel's (see
# edge-instructions.sh, which counts the user-space part): this shows where
# it goes, call by call. Counts per request barely drift with load, unlike
# seconds.
#
#   bench/edge-syscalls.sh        (about a minute)
#
# Environment (defaults in brackets):
#   STRATA_BIN   strata binary [target/release/strata]
#   DURATION     wrk duration per measurement [5s]
#   CONNECTIONS  wrk connections [64]
#   SIZES        object sizes [1KiB]

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
SIZES=${SIZES:-1KiB}
bench_name=syscalls
packages=(nginx wrk curl linux-perf python3)
# shellcheck source=bench/edge-lib.sh
source "$repo/bench/edge-lib.sh"
command -v perf >/dev/null || die "perf is missing (Debian package linux-perf)"

start_origin
start_nginx "worker_processes auto;"
declare -A base=([strata]=$strata [nginx]=http://127.0.0.1:$nginx_port)
warm "${base[@]}"

# Every process of a target: strata's one, nginx's master and workers.
processes_of() {
    case $1 in
        strata) echo "$strata_pid" ;;
        nginx) { echo "$nginx_pid"; pgrep -P "$nginx_pid"; } | paste -sd, ;;
    esac
}

# Prints "calls-per-request name" lines, most frequent first, and a total.
measure() {
    local target=$1 size=$2 requests
    perf stat -x, -e 'syscalls:sys_enter_*' -p "$(processes_of "$target")" \
        -o "$work/$target-$size.perf" &
    local perf_pid=$!
    sleep 0.5
    requests=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" "${base[$target]}/v1/AUTH_admin/pub/obj-$size" |
        sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null || true
    python3 - "$work/$target-$size.perf" "$requests" "$target" "$size" <<'PY'
import sys
path, requests, target, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
counts = {}
for line in open(path):
    fields = line.strip().split(",")
    if len(fields) < 3 or not fields[0].isdigit():
        continue
    name = fields[2].removeprefix("syscalls:sys_enter_")
    counts[name] = int(fields[0])
total = sum(counts.values())
top = sorted(counts.items(), key=lambda kv: -kv[1])
calls = ", ".join(f"{name} {n / requests:.2f}" for name, n in top if n / requests >= 0.01)
print(f"| {target} | {size} | {requests:,} | {total / requests:.2f} | {calls} |")
PY
}

printf '| target | size | requests | syscalls/request | per request, by call |\n|---|---|---:|---:|---|\n'
for size in $SIZES; do
    measure strata "$size"
    measure nginx "$size"
done
