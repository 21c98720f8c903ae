#!/usr/bin/env bash
# edge-compare.sh: strata's edge cache against nginx proxy_cache and Varnish,
# each in front of the same strata origin, driven by wrk in one run; the
# report goes to bench/runs/<date>-<host>-edge.md with ratios first.
#
#   bench/edge-compare.sh        (about 7 minutes with the defaults)
#
# strata serves a public Swift container (X-Container-Read: .r:*) with one
# object per size; nginx (proxy_cache on the same disk, proxy_cache_lock) and
# Varnish (malloc storage) proxy to that strata. Every URL is fetched a few
# times first, so all three serve from their caches. Each target's CPU time
# per request (every process of it: nginx's master and workers, Varnish's
# manager and child) is read from /proc during its runs; it includes what
# the kernel spends on its sockets.
#
# The machine is shared and drifts: the three are measured in ROUNDS rounds,
# each round running them back to back in a rotated order, and the report
# gives each figure's median over the rounds.
#
# Environment (defaults in brackets):
#   STRATA_BIN   strata binary [target/release/strata]
#   DURATION     wrk duration per run [10s]
#   ROUNDS       rounds of all three per size [3]
#   CONNECTIONS  wrk connections [64]
#   THREADS      wrk threads [2]
#   SIZES        object sizes [1KiB 4KiB 64KiB 1MiB]
#   OUT_DIR      where the report goes [bench/runs]

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
SIZES=${SIZES:-1KiB 4KiB 64KiB 1MiB}
OUT_DIR=${OUT_DIR:-$repo/bench/runs}
bench_name=edge
packages=(nginx varnish wrk curl python3)
# shellcheck source=bench/edge-lib.sh
source "$repo/bench/edge-lib.sh"

# --- strata, the origin and the edge under test ---------------------------------
start_origin

# --- nginx proxy_cache ---------------------------------------------------------------
start_nginx "worker_processes auto;"

# --- Varnish, malloc storage ------------------------------------------------------
varnish_port=$(free_port)
varnishd -F -n "$work/varnish" -a "127.0.0.1:$varnish_port" -b "127.0.0.1:$strata_port" \
    -s malloc,1g -t 600 >"$work/log/varnish.log" 2>&1 &
varnish_pid=$!
pids+=("$varnish_pid")

wait_for "varnish" curl -fsS -o /dev/null "http://127.0.0.1:$varnish_port/v1/AUTH_admin/pub/obj-${SIZES%% *}"

declare -A base=([strata]=$strata [nginx]=http://127.0.0.1:$nginx_port [varnish]=http://127.0.0.1:$varnish_port)
warm "${base[@]}"
hit=$(curl -fsS -D - -o /dev/null "$strata/v1/AUTH_admin/pub/obj-${SIZES%% *}" | tr -d '\r' | sed -n 's/^[Xx]-[Cc]ache: //p')
log "strata answers warmed objects with X-Cache: $hit"

# CPU ticks (user + system) of a process and its children: nginx's workers,
# Varnish's cache process.
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1"); do
        [[ -r /proc/$pid/stat ]] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$total"
}
declare -A root_pid=([strata]=$strata_pid [nginx]=$nginx_pid [varnish]=$varnish_pid)
ticks_per_sec=$(getconf CLK_TCK)
results=$work/results.tsv
: >"$results"
targets=(strata nginx varnish)
for size in $SIZES; do
    for round in $(seq "$ROUNDS"); do
        # Rotate who goes first, so that none always runs on the warmest
        # (or the most disturbed) stretch of the round.
        shift_by=$(((round - 1) % ${#targets[@]}))
        order=("${targets[@]:shift_by}" "${targets[@]:0:shift_by}")
        for target in "${order[@]}"; do
            url="${base[$target]}/v1/AUTH_admin/pub/obj-$size"
            before=$(cpu_ticks "${root_pid[$target]}")
            out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
            after=$(cpu_ticks "${root_pid[$target]}")
            printf '%s\t%s\t%s\t%s\n' "$target" "$size" "$((after - before))" "$(echo "$out" | tr '\n' '|')" >>"$results"
            log "round $round $target $size: $(echo "$out" | grep -E 'Requests/sec| 99%|Non-2xx' | tr -s ' ' | tr '\n' ' ')"
        done
    done
done

mkdir -p "$OUT_DIR"
host=$(hostname -s 2>/dev/null || hostname)
out=$OUT_DIR/$(date +%F)-$host-edge.md
[[ -e $out ]] && out=$OUT_DIR/$(date +%F)-$host-edge-$(date +%H%M%S).md
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///') VARNISH_VERSION=$(varnishd -V 2>&1 | head -1) \
    TICKS=$ticks_per_sec COMMIT=$commit DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS ROUNDS=$ROUNDS \
    python3 - "$results" >"$out" <<'EOF'
import os, re, sys

def seconds(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

def size_bytes(text):
    for unit, factor in (("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("B", 1)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)

runs = {}
order = []
for line in open(sys.argv[1]):
    target, size, ticks, out = line.rstrip("\n").split("\t")
    out = out.replace("|", "\n")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    transfer = size_bytes(re.search(r"Transfer/sec:\s+([\d.]+\w+)", out).group(1))
    p99 = seconds(re.search(r"\s99%\s+([\d.]+\w+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    cpu_us = int(ticks) / int(os.environ["TICKS"]) * 1e6 / max(requests, 1)
    runs.setdefault((target, size), []).append(
        dict(rps=rps, mbs=transfer / 1e6, p99=p99 * 1e3, cpu_us=cpu_us,
             errors=int(errors.group(1)) if errors else 0))
    if size not in order:
        order.append(size)

def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

# Each figure's median over the rounds; errors are summed.
rows = {
    key: dict({field: median([run[field] for run in taken]) for field in ("rps", "mbs", "p99", "cpu_us")},
              errors=sum(run["errors"] for run in taken), rounds=len(taken),
              rps_spread=(min(run["rps"] for run in taken), max(run["rps"] for run in taken)))
    for key, taken in runs.items()
}

print(f"# strata edge vs nginx proxy_cache and Varnish")
print()
print("## Ratios")
print()
print(f"Cached public objects, wrk on loopback. Each ratio is the median over {os.environ['ROUNDS']} rounds "
      "of strata's figure over the peer's in the same round. "
      "Above 1x is better for req/s, below 1x for p99 and CPU per request.")
print()
print("| size | req/s vs nginx | req/s vs Varnish | p99 vs nginx | p99 vs Varnish | CPU/request vs nginx | CPU/request vs Varnish | strata CPU per request |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
def paired(size, peer, field):
    """The median over the rounds of strata's figure over the peer's from
    the same round: runs minutes apart are compared, not the whole hour."""
    return median([ours[field] / theirs[field]
                   for ours, theirs in zip(runs[("strata", size)], runs[(peer, size)])])

for size in order:
    cells = [paired(size, peer, field) for field in ("rps", "p99", "cpu_us") for peer in ("nginx", "varnish")]
    print(f"| {size} | " + " | ".join(f"{cell:.2f}x" for cell in cells) +
          f" | {rows[('strata', size)]['cpu_us']:.1f} µs |")
print()
print("## Results")
print()
print("| target | size | req/s (median) | req/s (min–max) | MB/s | p99 ms | CPU µs/request | non-2xx |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for size in order:
    for target in ("strata", "nginx", "varnish"):
        r = rows[(target, size)]
        low, high = r["rps_spread"]
        print(f"| {target} | {size} | {r['rps']:,.0f} | {low:,.0f}–{high:,.0f} | {r['mbs']:,.1f} | "
              f"{r['p99']:.2f} | {r['cpu_us']:.1f} | {r['errors']} |")
print()
print("## Settings")
print()
print(f"- wrk -t{os.environ['THREADS']} -c{os.environ['CONNECTIONS']} -d{os.environ['DURATION']} --latency, keep-alive, one URL per run, everything on 127.0.0.1 and the same 2 cores")
print(f"- {os.environ['ROUNDS']} rounds per size, the three back to back in each round, in a rotated order")
print(f"- strata at {os.environ['COMMIT']}, RAM cache defaults")
print("- CPU per request: utime + stime of every process of the target (nginx master and workers, Varnish manager and child) over its run, divided by the requests it answered")
print(f"- nginx {os.environ['NGINX_VERSION']}: proxy_cache on the same disk, proxy_cache_lock, keepalive upstream")
print(f"- {os.environ['VARNISH_VERSION']}: malloc 1 GiB, default VCL, -t 600")
print("- all three in front of the same strata origin serving a public Swift container")
EOF
log "report: $out"
cat "$out"
