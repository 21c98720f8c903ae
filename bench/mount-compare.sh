#!/usr/bin/env bash
# mount-compare.sh: `cp -r` of a folder of small files into a FUSE mount and
# back out again, through `strata mount` (Swift API), s3fs and `rclone mount`
# (S3 API), all against one strata in one run; the report goes to
# bench/runs/<date>-<host>-mount.md with ratios to strata mount first.
#
#   bench/mount-compare.sh        (about a minute with the defaults)
#
# Each client gets its own container. "in" is `cp -r` into the mount until
# every object is stored (rclone's write-back cache returns from cp early,
# so its "in" is timed until the listing shows every file); "out" is `cp -r`
# back out after a remount, so nothing is served from a client's cache. The
# copies are compared byte for byte with `diff -r`.
#
# Environment (defaults in brackets):
#   STRATA_BIN   strata binary [target/release/strata]
#   FILES        number of files [1000]
#   MAX_SIZE     largest file, bytes; sizes are spread from 1 [8192]
#   CLIENTS      which clients [strata s3fs rclone]
#   OUT_DIR      where the report goes [bench/runs]

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
STRATA_BIN=${STRATA_BIN:-$repo/target/release/strata}
FILES=${FILES:-1000}
MAX_SIZE=${MAX_SIZE:-8192}
CLIENTS=${CLIENTS:-strata s3fs rclone}
OUT_DIR=${OUT_DIR:-$repo/bench/runs}

bench_name=mount
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
on_die() { grep fuse /proc/self/mountinfo; }

[[ -x $STRATA_BIN ]] || die "no strata binary at $STRATA_BIN (cargo build --release -p strata-gateway)"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing: FUSE is unavailable on this machine"

missing=()
for tool in s3fs rclone fusermount3 curl python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    log "installing s3fs, rclone and fuse3 from Debian packages"
    sudo_if_needed() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        s3fs rclone fuse3 curl python3 >/dev/null
fi

# Client settings of this machine (a CA bundle, profiles, proxies) are not
# this run's: each client gets only what is set below.
while read -r name; do unset "$name"; done < <(compgen -e | grep -E '^(AWS_|RCLONE_|ST_|OS_)|_PROXY$|_proxy$')

work=$(mktemp -d /tmp/strata-mount.XXXXXX)
pids=()
mounts=()
cleanup() {
    for mnt in "${mounts[@]}"; do umount -l "$mnt" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/log" "$work/mnt"

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }

log "starting strata"
"$STRATA_BIN" serve --listen 127.0.0.1:0 --data "$work/data" >"$work/log/strata.out" 2>"$work/log/strata.log" &
pids+=($!)
wait_for "strata" grep -q '^listening on http://' "$work/log/strata.out"
endpoint=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$work/log/strata.out" | head -n1)
access_key=$(sed -n 's/^access_key = "\(.*\)"/\1/p' "$work/data/root-credentials.toml")
secret_key=$(sed -n 's/^secret_key = "\(.*\)"/\1/p' "$work/data/root-credentials.toml")
token=$(curl -fsS -D - -o /dev/null -H 'X-Auth-User: admin:admin' -H "X-Auth-Key: $secret_key" \
    "$endpoint/auth/v1.0" | tr -d '\r' | sed -n 's/^[Xx]-[Aa]uth-[Tt]oken: //p')
storage="$endpoint/v1/AUTH_admin"
object_count() {
    curl -fsS -H "X-Auth-Token: $token" -o /dev/null -D - "$storage/$1" |
        tr -d '\r' | sed -n 's/^[Xx]-[Cc]ontainer-[Oo]bject-[Cc]ount: //p'
}

log "writing $FILES files of 1..$MAX_SIZE bytes"
python3 - "$work/src" "$FILES" "$MAX_SIZE" <<'EOF'
import os, random, sys
root, files, max_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
for i in range(files):
    folder = os.path.join(root, f"folder-{i % 10}", f"sub-{i % 3}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"file-{i:05}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1, max_size)))
EOF
bytes=$(du -sb "$work/src" | cut -f1)

rclone_env() {
    env RCLONE_CONFIG=/dev/null RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other \
        RCLONE_CONFIG_B_ACCESS_KEY_ID="$access_key" RCLONE_CONFIG_B_SECRET_ACCESS_KEY="$secret_key" \
        RCLONE_CONFIG_B_ENDPOINT="$endpoint" RCLONE_CONFIG_B_REGION=us-east-1 \
        RCLONE_CONFIG_B_FORCE_PATH_STYLE=true "$@"
}
printf '%s:%s\n' "$access_key" "$secret_key" >"$work/s3fs-passwd"
chmod 600 "$work/s3fs-passwd"

# mount CLIENT CONTAINER MOUNTPOINT: starts the client in the background.
mount_client() {
    local client=$1 container=$2 mnt=$3
    mkdir -p "$mnt"
    case $client in
    strata)
        ST_USER=admin:admin ST_KEY=$secret_key "$STRATA_BIN" mount --spool "$work/spool" \
            "$endpoint/$container" "$mnt" >>"$work/log/strata-mount.log" 2>&1 &
        ;;
    s3fs)
        s3fs "$container" "$mnt" -f -o "url=$endpoint,use_path_request_style,passwd_file=$work/s3fs-passwd,endpoint=us-east-1" \
            >>"$work/log/s3fs.log" 2>&1 &
        ;;
    rclone)
        rclone_env rclone mount "B:$container" "$mnt" --vfs-cache-mode writes --vfs-write-back 0s \
            --cache-dir "$work/rclone-cache" >>"$work/log/rclone.log" 2>&1 &
        ;;
    esac
    client_pid=$!
    pids+=("$client_pid")
    mounts+=("$mnt")
    wait_for "$client mount" mountpoint -q "$mnt"
}
# unmount MOUNTPOINT: unmounts and waits for the client to exit, so that the
# next mount at the same place is not the old client's to clean up.
unmount() {
    umount "$1" || die "could not unmount $1"
    for _ in $(seq 100); do
        kill -0 "$client_pid" 2>/dev/null || return 0
        sleep 0.1
    done
    die "the client of $1 did not exit after umount"
}

declare -A time_in time_out
for client in $CLIENTS; do
    container="cp-$client"
    curl -fsS -X PUT -H "X-Auth-Token: $token" "$storage/$container" -o /dev/null
    mnt="$work/mnt/$client"
    mount_client "$client" "$container" "$mnt"
    log "$client: cp -r in"
    start=$(now)
    cp -r "$work/src" "$mnt/tree"
    # Stored means listed by the store (rclone uploads after cp returns).
    for _ in $(seq 600); do
        [[ $(object_count "$container") -ge $FILES ]] && break
        sleep 0.1
    done
    end=$(now)
    [[ $(object_count "$container") -ge $FILES ]] || die "$client: not every file was stored"
    time_in[$client]=$(elapsed "$start" "$end")
    unmount "$mnt"
    rm -rf "$work/rclone-cache"

    mount_client "$client" "$container" "$mnt"
    log "$client: cp -r out"
    start=$(now)
    cp -r "$mnt/tree" "$work/out-$client"
    end=$(now)
    time_out[$client]=$(elapsed "$start" "$end")
    unmount "$mnt"
    diff -r "$work/src" "$work/out-$client" >/dev/null || die "$client: the copy out differs from the source"
    log "$client: in ${time_in[$client]} s, out ${time_out[$client]} s"
done

mkdir -p "$OUT_DIR"
report="$OUT_DIR/$(date +%F)-$(hostname -s)-mount.md"
ratio() { python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{a / b:.2f}' if b > 0 else '-')" "$1" "$2"; }
{
    echo "# cp -r through FUSE mounts, $(date '+%F %H:%M')"
    echo
    echo "$FILES files, $bytes bytes in 30 folders, into a mount and back out; one strata"
    echo "($("$STRATA_BIN" --version)), $(nproc) cores. strata mount uses the Swift API,"
    echo "s3fs $(s3fs --version 2>&1 | sed -n 's/.*V\([0-9.]*\).*/\1/p' | head -n1) and rclone mount ($(rclone version | sed -n 1p))"
    echo "the S3 API. Seconds; ratio = client time / strata mount time (lower is better)."
    echo "strata binary: $STRATA_BIN."
    echo
    echo "| client | in (s) | out (s) | total (s) | total vs strata mount |"
    echo "|---|---:|---:|---:|---:|"
    base_total=""
    for client in $CLIENTS; do
        total=$(python3 -c "import sys; print(f'{float(sys.argv[1]) + float(sys.argv[2]):.2f}')" "${time_in[$client]}" "${time_out[$client]}")
        [[ -z $base_total && $client == strata ]] && base_total=$total
        echo "| $client | ${time_in[$client]} | ${time_out[$client]} | $total | $(ratio "$total" "${base_total:-$total}") |"
    done
    echo
    echo "Every copy out matched the source (\`diff -r\`). The issue's bound: in + out"
    echo "under 30 s for 1,000 small files."
} >"$report"
cat "$report"
log "report: $report"
