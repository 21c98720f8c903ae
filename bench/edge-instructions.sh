#!/usr/bin/env bash
# edge-instructions.sh: user-space instructions per cached hit, for strata's
# edge and for nginx proxy_cache in front of the same strata, counted by
# valgrind's callgrind. Counts do not drift with the machine's load, so this
# shows what a change to the hit path costs where wall-clock runs on a
# shared machine cannot (they move by tens of percent within the hour). The
# kernel's share (loopback TCP, about 60% of a hit's CPU here) is not counted.
#
#   bench/edge-instructions.sh        (about 2 minutes)
#
# Environment (defaults in brackets):
#   STRATA_BIN   strata binary [target/release/strata]
#   DURATION     wrk duration per measurement [8s]
#   SIZES        object sizes [1KiB 4KiB]
#   KEEP_WORK    set: keep the profiles (callgrind_annotate strata.*.out*)

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-8s}
SIZES=${SIZES:-1KiB 4KiB}
bench_name=instructions
packages=(nginx wrk curl valgrind python3)
# shellcheck source=bench/edge-lib.sh
source "$repo/bench/edge-lib.sh"

# strata under callgrind, instrumentation off until the measurement starts.
start_origin valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/strata.%p.out"

# nginx, one process (no master), under callgrind, caching from that strata.
start_nginx "master_process off; worker_processes 1;" \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/nginx.%p.out"

declare -A base=([strata]=$strata [nginx]=http://127.0.0.1:$nginx_port)
declare -A pid_of=([strata]=$strata_pid [nginx]=$nginx_pid)
warm "${base[@]}"

# Instructions of the whole process (every thread) over one wrk run.
measure() {
    local target=$1 size=$2 pid=${pid_of[$1]} requests before after
    callgrind_control -d "$pid" >/dev/null 2>&1
    before=$(total_instructions "$target")
    callgrind_control -i on "$pid" >/dev/null 2>&1
    requests=$(wrk -t1 -c4 -d"$DURATION" "${base[$target]}/v1/AUTH_admin/pub/obj-$size" |
        sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    after=$(total_instructions "$target")
    echo "$(((after - before) / requests)) $requests"
}
# Callgrind writes a new numbered file per dump; their totals add up.
total_instructions() {
    cat "$work/$1".*.out* 2>/dev/null | awk '/^totals:/ { sum += $2 } END { print sum + 0 }'
}

printf '| size | strata instructions/hit | nginx instructions/hit | strata/nginx |\n|---|---:|---:|---:|\n'
for size in $SIZES; do
    read -r ours ours_requests < <(measure strata "$size")
    read -r theirs theirs_requests < <(measure nginx "$size")
    log "$size: strata $ours per hit ($ours_requests hits), nginx $theirs ($theirs_requests hits)"
    python3 -c "import sys; o, t = int(sys.argv[2]), int(sys.argv[3]); print(f'| {sys.argv[1]} | {o:,} | {t:,} | {o / t:.2f}x |')" \
        "$size" "$ours" "$theirs"
done
