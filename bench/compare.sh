#!/usr/bin/env bash
# compare.sh: strata against OpenStack Swift on this machine, same generator,
# same run, results kept as bench/runs/<date>-<host>.md with ratios first.
#
#   bench/compare.sh            run the comparison (about 5 minutes)
#   bench/compare.sh swift      only start Swift, print how to reach it, wait
#
# Swift runs as a one-replica SAIO-like cluster on loopback (tempauth user
# test:tester / testing, one account, container and object server, memcached
# for tokens), everything under a temporary directory that is removed on
# exit. strata runs from $STRATA_BIN against its own data directory there.
#
# Environment (defaults in brackets):
#   STRATA_BIN       strata binary [target/release/strata]; missing = Swift only
#   BENCH_BIN        strata-bench binary [$CARGO_TARGET_DIR/release/strata-bench,
#                    built with cargo if missing]
#   WORK_PARENT      where the temporary directory goes; must support user
#                    xattrs (Swift needs them) [/tmp, else /var/tmp]
#   PHASE_DURATION   duration of each phase [10s]
#   CONCURRENCY      connections for the small-object phases [64]
#   SIZES            small-object sizes [4KiB 1MiB]
#   BIG_SIZE         single-stream object size, empty to skip [1GiB]
#   SWIFT_WORKERS    worker processes per Swift server [auto = one per core]
#   SWIFT_S3API      1 = also enable Swift's s3api middleware (off by default:
#                    it adds a hop to every Swift request)
#   OUT_DIR          where the report goes [bench/runs]
#   KEEP_WORK        1 = keep the temporary directory (logs, data)

set -euo pipefail

mode=${1:-run}
case "$mode" in
    run | swift) ;;
    -h | --help | help)
        sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [run|swift]" >&2
        exit 2
        ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
STRATA_BIN=${STRATA_BIN:-$repo/target/release/strata}
PHASE_DURATION=${PHASE_DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-64}
SIZES=${SIZES:-4KiB 1MiB}
BIG_SIZE=${BIG_SIZE-1GiB}
SWIFT_WORKERS=${SWIFT_WORKERS:-auto}
SWIFT_S3API=${SWIFT_S3API:-0}
OUT_DIR=${OUT_DIR:-$repo/bench/runs}
KEEP_WORK=${KEEP_WORK:-0}

swift_user=test:tester
swift_key=testing
strata_access_key=strata-bench
strata_secret_key=strata-bench-secret-key

bench_name=compare
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

# --- Processes we start, and their cleanup -------------------------------

started_pids=()
work=

cleanup() {
    local pid
    for pid in "${started_pids[@]}"; do
        # Each server was started with setsid: its pid is its process group,
        # which also holds the worker processes it forked.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${started_pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [[ -n $work && -d $work ]]; then
        if [[ $KEEP_WORK == 1 ]]; then
            log "kept $work"
        else
            rm -rf "$work"
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: runs COMMAND in its own session, output to $work/log/NAME.log
start() {
    local name=$1
    shift
    setsid "$@" >"$work/log/$name.log" 2>&1 </dev/null &
    started_pids+=("$!")
}

# --- Swift installation ----------------------------------------------------

install_swift() {
    local binaries=(swift-ring-builder swift-proxy-server swift-account-server
        swift-container-server swift-object-server memcached python3 curl)
    local missing=()
    local binary
    for binary in "${binaries[@]}"; do
        command -v "$binary" >/dev/null || missing+=("$binary")
    done
    ((${#missing[@]} == 0)) && return 0
    log "missing ${missing[*]}: installing Swift from Debian packages"
    local sudo=
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "need root (or sudo) to install Swift"
        sudo=sudo
    fi
    # swift: common files and swift-ring-builder; memcached: tempauth keeps
    # its tokens there; the proxy, account, container and object servers are
    # one package each.
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
        swift swift-proxy swift-account swift-container swift-object \
        memcached python3 curl
}

# --- Work directory --------------------------------------------------------

supports_user_xattr() {
    python3 - "$1" <<'EOF'
import os, sys, tempfile
with tempfile.NamedTemporaryFile(dir=sys.argv[1]) as probe:
    os.setxattr(probe.name, "user.swift.probe", b"1")
EOF
}

make_work_dir() {
    local candidates=("${WORK_PARENT:-/tmp}")
    [[ -z ${WORK_PARENT:-} ]] && candidates+=(/var/tmp)
    local parent
    for parent in "${candidates[@]}"; do
        if [[ -d $parent ]] && supports_user_xattr "$parent" 2>/dev/null; then
            work=$(mktemp -d "$parent/strata-compare.XXXXXX")
            mkdir -p "$work/log" "$work/etc" "$work/srv/d1" "$work/cache" "$work/strata"
            return 0
        fi
        log "$parent does not support user xattrs, which Swift needs"
    done
    die "no directory with user xattrs; set WORK_PARENT to one (ext4, xfs, btrfs, tmpfs with user_xattr)"
}

# --- Swift configuration ---------------------------------------------------

configure_swift() {
    local etc=$work/etc user
    user=$(id -un)
    swift_port=$(free_port)
    account_port=$(free_port)
    container_port=$(free_port)
    object_port=$(free_port)
    memcached_port=$(free_port)

    cat >"$etc/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = strata-bench-suffix
swift_hash_path_prefix = strata-bench-prefix

[storage-policy:0]
name = Policy-0
default = yes

[swift-constraints]
EOF

    # Settings every server shares. mount_check = false: the device is a
    # plain directory, not a mount point. Requests are not logged (log_level
    # WARNING hides access lines) so that logging costs neither side.
    local common="bind_ip = 127.0.0.1
workers = $SWIFT_WORKERS
user = $user
swift_dir = $etc
devices = $work/srv
mount_check = false
log_level = WARNING
recon_cache_path = $work/cache"

    local server port
    for server in account container object; do
        case $server in
            account) port=$account_port ;;
            container) port=$container_port ;;
            object) port=$object_port ;;
        esac
        cat >"$etc/$server-server.conf" <<EOF
[DEFAULT]
bind_port = $port
$common

[pipeline:main]
pipeline = $server-server

[app:$server-server]
use = egg:swift#$server
log_requests = false
EOF
    done

    local s3api=
    [[ $SWIFT_S3API == 1 ]] && s3api=s3api
    cat >"$etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_port = $swift_port
bind_ip = 127.0.0.1
workers = $SWIFT_WORKERS
user = $user
swift_dir = $etc
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck cache listing_formats $s3api tempauth copy dlo versioned_writes proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $swift_key .admin

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcached_port

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
EOF

    # One device, one replica, 2^10 partitions.
    local ring
    for ring in account container object; do
        case $ring in
            account) port=$account_port ;;
            container) port=$container_port ;;
            object) port=$object_port ;;
        esac
        swift-ring-builder "$etc/$ring.builder" create 10 1 1 >/dev/null
        swift-ring-builder "$etc/$ring.builder" add \
            --region 1 --zone 1 --ip 127.0.0.1 --port "$port" --device d1 --weight 100 >/dev/null
        # Exit status 1 is a warning (e.g. "balance could be better"), 2 an error.
        local status=0
        swift-ring-builder "$etc/$ring.builder" rebalance >/dev/null || status=$?
        ((status < 2)) || die "swift-ring-builder $ring rebalance failed"
    done
}

start_swift() {
    local etc=$work/etc
    start memcached memcached -l 127.0.0.1 -p "$memcached_port" -U 0 -m 64 -u "$(id -un)"
    start account swift-account-server "$etc/account-server.conf" -v
    start container swift-container-server "$etc/container-server.conf" -v
    start object swift-object-server "$etc/object-server.conf" -v
    start proxy swift-proxy-server "$etc/proxy-server.conf" -v
    swift_auth=http://127.0.0.1:$swift_port/auth/v1.0
    wait_for "Swift proxy" curl -fsS "http://127.0.0.1:$swift_port/healthcheck"
    wait_for "Swift auth" curl -fsS -o /dev/null \
        -H "X-Auth-User: $swift_user" -H "X-Auth-Key: $swift_key" "$swift_auth"
    log "Swift ready: --swift-auth $swift_auth --swift-user $swift_user --swift-key $swift_key"
}

# --- strata ------------------------------------------------------------------

strata_endpoint=
strata_skipped=

start_strata() {
    if [[ ! -x $STRATA_BIN ]]; then
        strata_skipped="strata binary $STRATA_BIN not found"
        log "warning: $strata_skipped; running Swift only (set STRATA_BIN)"
        return 0
    fi
    local port
    port=$(free_port)
    STRATA_ROOT_ACCESS_KEY=$strata_access_key STRATA_ROOT_SECRET_KEY=$strata_secret_key \
        start strata "$STRATA_BIN" serve --listen "127.0.0.1:$port" --data "$work/strata"
    wait_for "strata (listening line)" grep -q 'listening on http://' "$work/log/strata.log"
    strata_endpoint=$(grep -o -m1 'listening on http://[^ ]*' "$work/log/strata.log" | sed 's/^listening on //')
    wait_for "strata /health" curl -fsS -o /dev/null "$strata_endpoint/health"
    log "strata ready at $strata_endpoint"
}

# --- The generator -----------------------------------------------------------

find_bench() {
    if [[ -n ${BENCH_BIN:-} ]]; then
        [[ -x $BENCH_BIN ]] || die "BENCH_BIN=$BENCH_BIN is not executable"
        return 0
    fi
    BENCH_BIN=${CARGO_TARGET_DIR:-$repo/target}/release/strata-bench
    if [[ ! -x $BENCH_BIN ]]; then
        log "building strata-bench"
        (cd "$repo" && cargo build --release -p strata-bench) || die "cannot build strata-bench"
    fi
}

results=

# bench LABEL BUCKET ARGS...: runs the generator against LABEL, appending JSON lines
bench() {
    local label=$1 bucket=$2
    shift 2
    local target_args=()
    case $label in
        swift) target_args=(--swift-auth "$swift_auth" --swift-user "$swift_user" --swift-key "$swift_key") ;;
        strata) target_args=(--endpoint "$strata_endpoint" --access-key "$strata_access_key"
            --secret-key "$strata_secret_key" --region us-east-1) ;;
        # The same strata through its Swift API: the root user admin:admin,
        # whose Swift key is the root secret.
        strata-swift) target_args=(--swift-auth "$strata_endpoint/auth/v1.0" --swift-user admin:admin
            --swift-key "$strata_secret_key") ;;
    esac
    log "$label: $*"
    "$BENCH_BIN" "${target_args[@]}" --label "$label" --bucket "$bucket" --json "$@" >>"$results" ||
        log "warning: $label run failed (bucket $bucket): see above"
}

targets() {
    echo swift
    if [[ -n $strata_endpoint ]]; then
        echo strata
        echo strata-swift
    fi
    return 0
}

run_phases() {
    local size label bucket
    for size in $SIZES; do
        bucket=bench-$(echo "$size" | tr '[:upper:]' '[:lower:]')
        for label in $(targets); do
            bench "$label" "$bucket" --op put,get,head,list,delete --size "$size" \
                --concurrency "$CONCURRENCY" --duration "$PHASE_DURATION"
        done
    done
    if [[ -n $BIG_SIZE ]]; then
        bucket=bench-$(echo "$BIG_SIZE" | tr '[:upper:]' '[:lower:]')
        for label in $(targets); do
            # Delete is last so the big objects do not linger on disk.
            bench "$label" "$bucket" --op put,get,delete --size "$BIG_SIZE" \
                --concurrency 1 --duration "$PHASE_DURATION" --request-timeout 600s
        done
    fi
}

# --- The report ----------------------------------------------------------------

describe_machine() {
    local source fstype options device=
    read -r source fstype options < <(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$work")
    local NAME= MODEL= SIZE= ROTA=
    if eval "$(lsblk -ndP -o NAME,MODEL,SIZE,ROTA "$source" 2>/dev/null)" && [[ -n $NAME ]]; then
        device="$NAME, ${MODEL:-no model}, $SIZE, $([[ $ROTA == 1 ]] && echo rotational || echo non-rotational) as the kernel reports it"
    fi
    cat <<EOF
- CPU: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
- RAM: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
- Kernel: $(uname -sr)
- OS: $(. /etc/os-release && echo "$PRETTY_NAME")
- Data directory: $work on $source ($fstype, $options)${device:+; device $device}
- Client and servers share the machine: the generator's CPU is taken from the servers.
EOF
}

write_report() {
    mkdir -p "$OUT_DIR"
    local host day out
    host=$(hostname -s 2>/dev/null || hostname)
    day=$(date +%F)
    out=$OUT_DIR/$day-$host.md
    [[ -e $out ]] && out=$OUT_DIR/$day-$host-$(date +%H%M%S).md

    local swift_version strata_version commit
    swift_version=$(dpkg-query -W -f '${Version}' swift-proxy 2>/dev/null || python3 -c 'import swift; print(swift.__version__)' 2>/dev/null || echo unknown)
    commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $strata_endpoint ]]; then
        strata_version="$STRATA_BIN (repository at $commit)"
    else
        strata_version="not run: $strata_skipped"
    fi

    MACHINE=$(describe_machine) \
        SWIFT_VERSION=$swift_version STRATA_VERSION=$strata_version \
        SETTINGS="phases of $PHASE_DURATION; sizes $SIZES at $CONCURRENCY connections; ${BIG_SIZE:-no} single-stream; Swift workers per server: $SWIFT_WORKERS; Swift s3api: $SWIFT_S3API" \
        TITLE_DATE="$day" TITLE_HOST="$host" \
        python3 - "$results" >"$out" <<'EOF'
import json, os, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]

def size_name(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"

def workload(row):
    return f"{size_name(row['size'])} c{row['concurrency']}"

def fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}×"

by_key = {(r["label"], workload(r), r["op"]): r for r in rows}
order = []
for r in rows:
    key = (workload(r), r["op"])
    if key not in order:
        order.append(key)

print(f"# strata vs OpenStack Swift, {os.environ['TITLE_DATE']} on {os.environ['TITLE_HOST']}")
print()
print("## Ratios: strata / Swift")
print()
labels = {r["label"] for r in rows}
if "strata" in labels and "swift" in labels:
    print("Above 1× is better for ops/s and MB/s, below 1× is better for latency.")
    print("`strata` is strata's S3 API (SigV4), `strata-swift` its Swift API (token auth),")
    print("both against the same Swift run.")
    print()
    print("| target | workload | op | ops/s | MB/s | p50 | p99 |")
    print("|---|---|---|---:|---:|---:|---:|")
    for label in ("strata", "strata-swift"):
        for wl, op in order:
            s, w = by_key.get((label, wl, op)), by_key.get(("swift", wl, op))
            if not s or not w:
                continue
            print(f"| {label} | {wl} | {op} | {ratio(s['ops_per_s'], w['ops_per_s'])} | "
                  f"{ratio(s['mb_per_s'], w['mb_per_s'])} | {ratio(s['p50_ms'], w['p50_ms'])} | "
                  f"{ratio(s['p99_ms'], w['p99_ms'])} |")
else:
    print(f"No ratios: strata {os.environ['STRATA_VERSION']}.")
print()
print("## Machine")
print()
print(os.environ["MACHINE"])
print()
print("## Software and settings")
print()
print(f"- Swift: {os.environ['SWIFT_VERSION']} (Debian packages), one replica, one account/container/object server, tempauth, memcached")
print(f"- strata: {os.environ['STRATA_VERSION']}")
print(f"- Workload: {os.environ['SETTINGS']}")
print("- Each size runs put, get, head, list, delete in that order on a fresh prefix; get/head read the keys put wrote, round-robin;")
print("  list reads pages of 1000 keys; delete removes the keys put wrote, oldest first, until they run out or the phase ends.")
print()
print("## Results")
print()
print("| target | workload | op | ops | elapsed s | ops/s | MB/s | p50 ms | p99 ms | errors |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for wl, op in order:
    for label in ("swift", "strata", "strata-swift"):
        r = by_key.get((label, wl, op))
        if not r:
            continue
        print(f"| {label} | {wl} | {op} | {r['ops']:,} | {r['elapsed_s']:.2f} | {fmt(r['ops_per_s'])} | "
              f"{fmt(r['mb_per_s'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {r['errors']} |")
errors = [r for r in rows if r.get("first_error")]
if errors:
    print()
    print("First error per phase:")
    print()
    for r in errors:
        print(f"- {r['label']} {workload(r)} {r['op']}: {r['first_error']}")
print()
print("<details><summary>Raw results (strata-bench --json)</summary>")
print()
print("```")
for line in open(sys.argv[1]):
    if line.strip():
        print(line.rstrip())
print("```")
print()
print("</details>")
EOF
    log "report: $out"
    cat "$out"
}

# --- Main --------------------------------------------------------------------

install_swift
make_work_dir
log "work directory $work"
configure_swift
start_swift

if [[ $mode == swift ]]; then
    log "Swift is up; Ctrl-C stops it and removes $work"
    # In the background, so that a signal runs the cleanup trap at once.
    sleep infinity &
    started_pids+=("$!")
    wait "$!"
fi

find_bench
start_strata
results=$work/results.jsonl
: >"$results"
run_phases
write_report
