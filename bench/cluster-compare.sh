#!/usr/bin/env bash
# cluster-compare.sh: what the cluster pool costs. The same strata-bench PUT
# and GET phases run against three set-ups in one run:
#
#   embedded   `strata serve`, extents in its own data directory (LocalPool)
#   1 node     a gateway over one `strata node`, ring of 1 replica
#   3 nodes    a gateway over three `strata node`s in three zones, 2 replicas
#
# and the CPU time of every strata process (gateway and nodes, from /proc) is
# divided by the requests answered. Then, on the 3-node cluster, one node is
# stopped, data is written while it is away, and the time from its restart to
# `strata status` reporting the cluster settled is measured with the bytes
# the replicators moved. Between the two, a second gateway joins the 3-node
# cluster, taking its metadata from the first (`--metadata`): the same phases
# run through it, and `purge_latency.py` times how long an overwrite (and a
# new key in a listing) made through the first takes to reach the second's
# edge cache. Report: bench/runs/<date>-<host>-cluster.md.
#
#   bench/cluster-compare.sh     (about 4 minutes with the defaults)
#
# Objects up to 16 KiB are stored inside their metadata record, not in the
# pool: a 4 KiB PUT costs the same with or without nodes. 64 KiB is the
# smallest size here whose bytes cross the internal protocol.
#
# Environment (defaults in brackets):
#   STRATA_BIN     strata binary [$CARGO_TARGET_DIR or target/release/strata]
#   BENCH_BIN      strata-bench binary [same directory]
#   DURATION       duration of each phase [10s]
#   CONCURRENCY    connections [16]
#   SIZES          object sizes [4KiB 64KiB 1MiB]
#   AWAY_DURATION  how long data is written while a node is away [20s]
#   PURGE_ROUNDS   overwrites timed from one gateway to the other [200]
#   OUT_DIR        where the report goes [bench/runs]

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-4KiB 64KiB 1MiB}
AWAY_DURATION=${AWAY_DURATION:-20s}
PURGE_ROUNDS=${PURGE_ROUNDS:-200}
access=CLUSTERBENCH00000000
secret=cluster-bench-secret-key
bench_name=cluster
# shellcheck source=bench/cluster-lib.sh
source "$repo/bench/cluster-lib.sh"

setup_pids=()
log "embedded: strata serve with its own extents"
start_gateway embedded
measure embedded
stop_setup

log "1 node, 1 replica"
port1=$(free_port)
make_ring one 1 "$port1"
start_node one-n1 "$port1" "$work/one.builder.ring"
start_gateway one --ring "$work/one.builder.ring" --cluster-secret-file "$work/cluster.secret"
measure "1 node"
stop_setup

log "3 nodes, 2 replicas"
ports=("$(free_port)" "$(free_port)" "$(free_port)")
make_ring three 2 "${ports[@]}"
for i in 0 1 2; do start_node "three-n$i" "${ports[$i]}" "$work/three.builder.ring"; done
start_gateway three --ring "$work/three.builder.ring" --cluster-secret-file "$work/cluster.secret"
measure "3 nodes"

log "3 nodes, a second gateway over the first one's metadata"
first_port=$gateway_port
start_gateway second --ring "$work/three.builder.ring" --cluster-secret-file "$work/cluster.secret" \
    --metadata "127.0.0.1:$first_port"
measure "2nd gateway"
STRATA_ROOT_SECRET_KEY=$secret python3 "$repo/bench/purge_latency.py" \
    "http://127.0.0.1:$first_port" "http://127.0.0.1:$gateway_port" "$PURGE_ROUNDS" \
    >"$work/purge.json" || die "purge_latency.py failed"
gateway_port=$first_port

log "re-replication: node three-n2 away while 1 MiB objects are written for $AWAY_DURATION"
status() {
    "$STRATA_BIN" status --json --ring "$work/three.builder.ring" \
        --cluster-secret-file "$work/cluster.secret"
}
kill "${node_pid[three-n2]}"
wait "${node_pid[three-n2]}" 2>/dev/null || true
"$BENCH_BIN" --endpoint "http://127.0.0.1:$gateway_port" --access-key "$access" \
    --secret-key "$secret" --bucket bench --concurrency 8 --duration "$AWAY_DURATION" \
    --op put --size 1MiB --prefix away/ --json >"$work/away.json" 2>>"$work/log/bench.log"
pushed_before=$(status | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(r.get("status",{}).get("replication",{}).get("bytes_pushed",0) for r in s["reports"]))')
since=$(date +%s)
start=$(date +%s.%N)
start_node three-n2 "${ports[2]}" "$work/three.builder.ring"
while :; do
    settled=$(status | python3 -c "
import json, sys
s = json.load(sys.stdin)
fresh = all(r.get('status', {}).get('replication', {}).get('last_pass_started', 0) > $since for r in s['reports'])
print('yes' if fresh and s['settled'] else 'no')")
    [[ $settled == yes ]] && break
    sleep 0.2
done
end=$(date +%s.%N)
pushed_after=$(status | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(r.get("status",{}).get("replication",{}).get("bytes_pushed",0) for r in s["reports"]))')
repair_s=$(python3 -c "print(round($end - $start, 2))")
moved=$((pushed_after - pushed_before))
stop_setup

# --- report -------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
report=$OUT_DIR/$(date +%F)-$(hostname -s)-cluster.md
python3 - "$results" "$work/away.json" "$moved" "$repair_s" "$CONCURRENCY" "$DURATION" "$work/purge.json" >"$report" <<'EOF'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
away = json.loads(open(sys.argv[2]).read().splitlines()[-1])
moved, repair_s, conc, duration = int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
purge = json.loads(open(sys.argv[7]).read().splitlines()[-1])
table = {(r[0], r[1], r[2]): r for r in rows}
print("# Cluster pool: embedded, 1 node, 3 nodes (2 replicas)\n")
print(f"strata-bench, {conc} connections, {duration} per phase; CPU = user + system time of every")
print("strata process (gateway and nodes) per request answered.\n")
print("## Ratios\n")
print("| size | op | 3 nodes / 1 node req/s | 3 nodes / 1 node CPU per request | 1 node / embedded CPU per request |")
print("|---|---|---|---|---|")
for (setup, op, size), r in table.items():
    if setup != "3 nodes":
        continue
    one, emb = table.get(("1 node", op, size)), table.get(("embedded", op, size))
    if not one or not emb:
        continue
    ratio = lambda a, b: f"{float(a) / float(b):.2f}×" if float(b) else "-"
    print(f"| {size} | {op} | {ratio(r[3], one[3])} | {ratio(r[6], one[6])} | {ratio(one[6], emb[6])} |")
print("\n## A second gateway over the first one's metadata\n")
print("Both gateways run (CPU counts both, and the nodes); requests go through the second,")
print("whose every metadata operation is a call to the first.\n")
print("| size | op | 2nd gateway / 3 nodes req/s | 2nd gateway / 3 nodes CPU per request |")
print("|---|---|---|---|")
for (setup, op, size), r in table.items():
    base = table.get(("3 nodes", op, size))
    if setup != "2nd gateway" or not base:
        continue
    ratio = lambda a, b: f"{float(a) / float(b):.2f}×" if float(b) else "-"
    print(f"| {size} | {op} | {ratio(r[3], base[3])} | {ratio(r[6], base[6])} |")
print(f"\nAn overwrite through the first gateway, until the second serves the new bytes")
print(f"({purge['rounds']} rounds, the object a cache HIT on the second before each):")
print(f"p50 **{purge['object_p50_ms']} ms**, p99 **{purge['object_p99_ms']} ms**, max {purge['object_max_ms']} ms.")
print(f"A new key, until the second gateway's cached listing of its folder shows it:")
print(f"p50 **{purge['listing_p50_ms']} ms**, p99 **{purge['listing_p99_ms']} ms**, max {purge['listing_max_ms']} ms.")
print("\n## Figures\n")
print("| set-up | op | size | req/s | MB/s | p99 ms | CPU µs/request | errors |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
rate = moved / repair_s / 1e6 if repair_s else 0
print("\n## Re-replication\n")
print(f"One of three nodes away while {away['ops']} objects of 1 MiB ({away['bytes'] / 2**30:.2f} GiB) were written;")
print(f"after its restart the replicators moved {moved / 2**30:.2f} GiB (copies home from handoffs and")
print(f"the missing second copies) and `strata status` reported the cluster settled in **{repair_s} s**")
print(f"({rate:.0f} MB/s; at that rate 1 GiB takes {2**30 / 1e6 / rate if rate else 0:.1f} s).")
EOF
log "report: $report"
cat "$report"
