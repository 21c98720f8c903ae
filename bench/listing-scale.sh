#!/usr/bin/env bash
# listing-scale.sh: listing a bucket of a million keys, page by page, in two
# set-ups in one run:
#
#   embedded  strata serve alone (the metadata in its own RocksDB)
#   raft      three storage nodes (2 replicas) and a replicated metadata
#             service of three gateways; the requests go through a fourth
#             gateway over them (every page is a call to the leader)
#
# For each: KEYS one-byte objects are uploaded (untimed but for the rate),
# then one client walks the bucket's listing from the first key to the
# last, LIST_LIMIT keys a page (ListObjectsV2 with start-after), checking
# every key comes once and in order, and a
# first page and a page at the end are each asked 20 times, to show that
# a page's cost does not depend on where it starts. The resident memory of
# the process that answers the listing (the embedded gateway, the metadata
# leader) is read before and after the walk: a walk that loaded the bucket
# would show it there, as would the metadata's size on disk per key. Report: bench/runs/<date>-<host>-listing.md.
#
#   bench/listing-scale.sh        (about 15 minutes with the defaults)
#
# Environment (defaults in brackets):
#   STRATA_BIN     strata binary [$CARGO_TARGET_DIR or target/release/strata]
#   BENCH_BIN      strata-bench binary [same directory]
#   KEYS           objects in the bucket [1000000]
#   LIST_LIMIT     keys per page [1000]
#   CONCURRENCY    connections of the upload [32]
#   SETUPS         which set-ups [embedded raft]
#   OUT_DIR        where the report goes [bench/runs]

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
KEYS=${KEYS:-1000000}
LIST_LIMIT=${LIST_LIMIT:-1000}
CONCURRENCY=${CONCURRENCY:-32}
SETUPS=${SETUPS:-embedded raft}
SIZES=1
# The upload's list phase; the walk is timed on its own.
DURATION=1s
access=LISTINGBENCH00000000
secret=listing-bench-secret-key
bench_name=listing
# shellcheck source=bench/cluster-lib.sh
source "$repo/bench/cluster-lib.sh"

# rss_kib PID FIELD: VmRSS or VmHWM of a process, in KiB.
rss_kib() { awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status"; }

# walk PREFIX: one client lists the whole bucket from its first key to its
# last, LIST_LIMIT keys a page, checking that every key comes once and in
# order; then a first page and a page at the end are timed 20 times each.
# Prints a JSON object.
walk() {
    python3 - "http://127.0.0.1:$gateway_port/bench" "$1" "$LIST_LIMIT" "$KEYS" <<'EOF'
import json, re, statistics, sys, time, urllib.parse, urllib.request
url, prefix, limit, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
key_re = re.compile(rb"<Key>([^<]*)</Key>")

def page(start_after):
    query = {"list-type": "2", "max-keys": str(limit), "prefix": prefix}
    if start_after is not None:
        query["start-after"] = start_after
    started = time.perf_counter()
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(query)}") as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, body

times, seen, last = [], 0, None
started = time.perf_counter()
while True:
    took, body = page(last)
    times.append(took)
    names = [name.decode() for name in key_re.findall(body)]
    if not names:
        break
    assert last is None or names[0] > last, "a page went backwards"
    assert names == sorted(names), "a page out of order"
    seen += len(names)
    last = names[-1]
    if b"<IsTruncated>false</IsTruncated>" in body:
        break
walk_s = time.perf_counter() - started
assert seen == keys, f"listed {seen} keys of {keys}"
times.sort()

def median_of(start_after):
    return statistics.median(page(start_after)[0] for _ in range(20))

print(json.dumps({
    "pages": len(times), "walk_s": round(walk_s, 1),
    "p50_ms": round(times[len(times) // 2], 2), "p99_ms": round(times[int(len(times) * 0.99)], 2),
    "first_ms": round(median_of(None), 2),
    "last_ms": round(median_of(f"{prefix}{keys - limit - 1:010d}"), 2),
}))
EOF
}

results=$work/listing.tsv
# run SETUP PID DIR: fill, walk, time pages; PID answers the listings and
# keeps its metadata under DIR.
run() {
    local setup=$1 pid=$2 dir=$3 prefix=$1/ started fill_s rss_before hwm_before json disk
    log "$setup: uploading $KEYS keys"
    started=$(date +%s.%N)
    bench --op list --size 1 --objects "$KEYS" --prefix "$prefix" \
        --list-limit "$LIST_LIMIT" >/dev/null 2>>"$work/log/bench.log"
    fill_s=$(python3 -c "import time; print(time.time() - $started)")
    # Anonymous pages from here: timing a listing, not a signature.
    # (`acl=`: curl 7.88 signs a bare `acl` as no canonical query.)
    curl -fsS -X PUT -H "x-amz-acl: public-read" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        "http://127.0.0.1:$gateway_port/bench?acl=" \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access:$secret" >/dev/null ||
        die "could not make the bucket public"
    disk=$(du -sk "$dir" | cut -f1)
    rss_before=$(rss_kib "$pid" VmRSS)
    hwm_before=$(rss_kib "$pid" VmHWM)
    log "$setup: walking the listing"
    json=$(walk "$prefix") || die "the walk failed"
    python3 - "$setup" "$json" "$fill_s" "$rss_before" "$hwm_before" \
        "$(rss_kib "$pid" VmRSS)" "$(rss_kib "$pid" VmHWM)" "$KEYS" "$disk" >>"$results" <<'EOF'
import json, sys
setup, walk, fill_s, rss0, hwm0, rss1, hwm1, keys, disk = sys.argv[1:]
walk = json.loads(walk)
print("\t".join(str(v) for v in (
    setup, keys, round(int(keys) / float(fill_s)), walk["pages"], walk["walk_s"],
    walk["p50_ms"], walk["p99_ms"], walk["first_ms"], walk["last_ms"],
    round(int(rss0) / 1024), round(int(rss1) / 1024), round(int(hwm0) / 1024), round(int(hwm1) / 1024),
    round(int(disk) / 1024), round(int(disk) * 1024 / int(keys)))))
EOF
}

# The gateway the client asks keeps no cache: pages are read from the
# metadata each time, not replayed by the edge.
printf '[cache]\nram_bytes = 0\n' >"$work/no-cache.toml"
no_cache=(--config "$work/no-cache.toml")

for setup in $SETUPS; do
    case $setup in
    embedded)
        start_gateway embedded "${no_cache[@]}"
        run embedded "${gateway_pid[embedded]}" "$work/embedded-gateway"
        ;;
    raft)
        start_three_nodes
        start_metadata_members
        start_gateway outsider "${ring[@]}" --metadata "$members" "${no_cache[@]}"
        run raft "${gateway_pid[member$leader]}" "$work/member$leader-gateway"
        ;;
    *) die "unknown set-up $setup" ;;
    esac
    stop_setup
done

# --- report -------------------------------------------------------------------------

mkdir -p "$OUT_DIR"
report=$OUT_DIR/$(date +%Y-%m-%d)-$(hostname -s)-listing.md
{
    echo "# Listing a bucket of $KEYS keys"
    echo
    echo "One client walks the whole listing, $LIST_LIMIT keys a page (ListObjectsV2,"
    echo "\`start-after\`); a first page and a page at the end are each timed 20 times"
    echo "(median). Memory is that of the process answering the listings (the embedded"
    echo "gateway; the metadata leader), before and after the walk."
    echo
    echo "| set-up | keys | upload keys/s | pages walked | walk s | page p50 ms | page p99 ms | first page ms | last page ms | RSS before MiB | RSS after MiB | peak before MiB | peak after MiB | metadata on disk MiB | bytes per key |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    while IFS=$'\t' read -r -a row; do
        printf '| %s ' "${row[@]}"
        echo "|"
    done <"$results"
    echo
    echo "## Settings"
    echo
    echo "- strata at $(git -C "$repo" rev-parse --short HEAD), one-byte objects (kept inside their records)"
    echo "- upload: strata-bench, $CONCURRENCY connections; walk: one Python client (urllib), anonymous pages of a public-read bucket, every key checked once and in order"
    echo "- the gateway asked keeps no edge cache (\`ram_bytes = 0\`): every page is read from the metadata"
    echo "- raft: 3 storage nodes, 2 replicas, 3 metadata members, requests through a fourth gateway"
    echo "- everything on 127.0.0.1 and the same 2 cores"
} >"$report"
log "report: $report"
cat "$report"
