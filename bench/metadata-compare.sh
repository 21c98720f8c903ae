#!/usr/bin/env bash
# metadata-compare.sh: what replicating the metadata service costs. Over
# three storage nodes (2 replicas; fresh ones for each set-up, as nodes
# belong to the metadata service that first claims them), the same
# strata-bench PUT and GET phases run through a gateway in three set-ups, in
# one run:
#
#   single    a gateway holds the metadata alone; the requests go through a
#             second gateway over it (--metadata A): one hop per call
#   raft      three gateways are the members of a replicated metadata
#             service (--metadata A,B,C --metadata-member N); the requests go
#             through a fourth gateway over them: one hop to the leader, which
#             has a majority fsync each change in its log before applying it
#   index nodes
#             a gateway holds the root (buckets, accounts) alone, and the
#             objects' records are in 4 index groups on the three storage
#             nodes (`--index-groups`, `index_nodes`); the requests go
#             through a second gateway: one hop to the root for the
#             bucket (cached), one to the group's leader on a node, which
#             has a majority fsync each change
#
# and the CPU time of every strata process is divided by the requests
# answered. Then the leader is SIGKILLed while small PUTs go through the
# fourth gateway (`failover_gap.py`), timing how long changes are refused;
# and again over a fresh service whose group hibernates after 2 s idle, its
# leader SIGKILLed while the group sleeps, the PUTs starting with the kill.
# Report: bench/runs/<date>-<host>-metadata.md.
#
#   bench/metadata-compare.sh     (about 4 minutes with the defaults)
#
# Objects up to 16 KiB live inside their metadata record: a 4 KiB PUT is a
# metadata change and nothing else, the case replication costs most.
#
# Environment (defaults in brackets):
#   STRATA_BIN     strata binary [$CARGO_TARGET_DIR or target/release/strata]
#   BENCH_BIN      strata-bench binary [same directory]
#   DURATION       duration of each phase [10s]
#   CONCURRENCY    connections [16]
#   SIZES          object sizes [4KiB 64KiB]
#   OUT_DIR        where the report goes [bench/runs]

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-4KiB 64KiB}
access=METADATABENCH0000000
secret=metadata-bench-secret-key
bench_name=metadata
# shellcheck source=bench/cluster-lib.sh
source "$repo/bench/cluster-lib.sh"

setup_pids=()
start_three_nodes

log "single: a gateway over one gateway's metadata"
start_gateway service "${ring[@]}"
service_port=$gateway_port
start_gateway single "${ring[@]}" --metadata "127.0.0.1:$service_port"
measure single
stop_setup

log "index nodes: a gateway over one gateway's root, the index groups on the three nodes"
start_three_nodes index 4
printf 'index_groups = 4\n[cluster]\nindex_nodes = [%s]\n' "$index_nodes" >"$work/index.toml"
STRATA_CONFIG=$work/index.toml start_gateway index-root "${ring[@]}"
root_port=$gateway_port
STRATA_CONFIG=$work/index.toml start_gateway index-outsider "${ring[@]}" \
    --metadata "127.0.0.1:$root_port"
measure "index nodes"
stop_setup

log "raft: a gateway over a replicated metadata service of three members"
start_three_nodes raft
start_metadata_members
start_gateway outsider "${ring[@]}" --metadata "$members"
measure raft

leader_known || die "no leader in member 1's /metrics"
log "failover: member $leader (the leader) SIGKILLed while PUTs run"
STRATA_ROOT_SECRET_KEY=$secret python3 "$repo/bench/failover_gap.py" \
    "http://127.0.0.1:$gateway_port" 20 5 "${gateway_pid[member$leader]}" \
    >"$work/failover.json" || die "failover_gap.py failed"
stop_setup

log "failover of a hibernating group: its leader SIGKILLed while it sleeps"
start_three_nodes asleep
printf '[cluster]\nmetadata_hibernate_after_secs = 2\n' >"$work/asleep.toml"
STRATA_CONFIG=$work/asleep.toml start_metadata_members asleep-member
start_gateway outsider-asleep "${ring[@]}" --metadata "$members"
leader_known || die "no leader in member 1's /metrics"
# Seconds before the kill: the group sleeps after 2 idle ones.
kill_at=8
STRATA_ROOT_SECRET_KEY=$secret python3 "$repo/bench/failover_gap.py" \
    "http://127.0.0.1:$gateway_port" 15 "$kill_at" "${gateway_pid[asleep-member$leader]}" --idle \
    >"$work/failover-asleep.json" &
gap=$!
pids+=("$gap")
sleep $((kill_at - 1))
# A follower's own view, a second before the kill: 1 if it sleeps.
asleep_before_kill=$(curl -fsS "http://127.0.0.1:${member_ports[$((leader % 3))]}/metrics" |
    awk '$1 == "strata_metadata_hibernating" { print $2 }') || asleep_before_kill=unknown
wait "$gap" || die "failover_gap.py --idle failed"
stop_setup

# --- report -------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
report=$OUT_DIR/$(date +%F)-$(hostname -s)-metadata.md
python3 - "$results" "$CONCURRENCY" "$DURATION" "$work/failover.json" \
    "$work/failover-asleep.json" "$asleep_before_kill" >"$report" <<'PY'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
conc, duration = sys.argv[2], sys.argv[3]
failover = json.loads(open(sys.argv[4]).read().splitlines()[-1])
asleep = json.loads(open(sys.argv[5]).read().splitlines()[-1])
slept = {"1": "asleep", "0": "NOT asleep"}.get(sys.argv[6], "of unknown state")
table = {(r[0], r[1], r[2]): r for r in rows}
ratio = lambda a, b: f"{float(a) / float(b):.2f}×" if float(b) else "-"
print("# Metadata service: one gateway's store, and a Raft group of three\n")
print(f"strata-bench, {conc} connections, {duration} per phase, through a gateway that is not")
print("a member; three storage nodes, 2 replicas. CPU = user + system time of every")
print("strata process (gateways and nodes) per request answered.\n")
print("## Ratios\n")
print("| size | op | raft / single req/s | raft / single CPU per request | index nodes / raft req/s | index nodes / raft CPU per request |")
print("|---|---|---|---|---|---|")
for (setup, op, size), r in table.items():
    base, nodes = table.get(("single", op, size)), table.get(("index nodes", op, size))
    if setup != "raft" or not base or not nodes:
        continue
    print(f"| {size} | {op} | {ratio(r[3], base[3])} | {ratio(r[6], base[6])} "
          f"| {ratio(nodes[3], r[3])} | {ratio(nodes[6], r[6])} |")
print("\nindex nodes: the objects' records replicated by Raft groups on the storage")
print("nodes instead of a service of three gateways; both fsync each change on a majority.")
print("\n## Figures\n")
print("| set-up | op | size | req/s | MB/s | p99 ms | CPU µs/request | errors |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print("\n## Failover\n")
print("The leader SIGKILLed 5 s into 20 s of sequential 1 KiB Swift PUTs through the")
print(f"gateway that is not a member: {failover['answered']} PUTs acknowledged, {failover['failed']} refused;")
print(f"the first PUT acknowledged after the kill came **{failover['recovery_ms']} ms** after it.")
print("\n### A hibernating group\n")
print("A fresh service whose group hibernates after 2 s idle: nothing sent for 8 s, then")
print(f"the leader SIGKILLed (a follower was {slept} a second before) and the same PUTs")
print("for the remaining 7 s. Nobody notices the loss until a call reaches a sleeping follower, which")
print("probes the leader, finds it gone and stands for election at once, where an awake")
print("follower waits out its election timeout:")
print(f"{asleep['answered']} PUTs acknowledged, {asleep['failed']} refused; the first acknowledged")
print(f"after the kill came **{asleep['recovery_ms']} ms** after it.")
PY
log "report: $report"
cat "$report"
