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

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
STRATA_BIN=${STRATA_BIN:-$repo/target/release/strata}
DURATION=${DURATION:-8s}
SIZES=${SIZES:-1KiB 4KiB}
secret=edge-bench-secret

log() { printf '[instructions] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    [[ -n ${work:-} && -d $work/log ]] && tail -n 20 "$work"/log/* >&2
    exit 1
}

[[ -x $STRATA_BIN ]] || die "no strata binary at $STRATA_BIN (cargo build --release -p strata-gateway)"
missing=()
for tool in nginx wrk curl valgrind callgrind_control python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    log "installing nginx, wrk and valgrind from Debian packages"
    sudo_if_needed() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nginx wrk curl valgrind >/dev/null
    sudo_if_needed systemctl stop nginx 2>/dev/null || true
    pkill -x nginx 2>/dev/null || true
fi

work=$(mktemp -d /tmp/strata-instructions.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/log"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {
    local what=$1
    shift
    for _ in $(seq 240); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up"
}
bytes_of() {
    python3 -c "import sys; s = sys.argv[1]; u = {'KiB': 1 << 10, 'MiB': 1 << 20}; print(int(s[:-3]) * u[s[-3:]])" "$1"
}

# strata under callgrind, instrumentation off until the measurement starts.
strata_port=$(free_port)
STRATA_ROOT_ACCESS_KEY=EDGEBENCHACCESS00000 STRATA_ROOT_SECRET_KEY=$secret \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/strata.%p.out" \
    "$STRATA_BIN" serve --listen "127.0.0.1:$strata_port" --data "$work/strata" \
    >"$work/log/strata.log" 2>&1 &
strata_pid=$!
pids+=("$strata_pid")
strata=http://127.0.0.1:$strata_port
wait_for "strata" curl -fsS "$strata/health"
token=$(curl -fsS -D - -o /dev/null -H 'X-Auth-User: admin:admin' -H "X-Auth-Key: $secret" \
    "$strata/auth/v1.0" | tr -d '\r' | sed -n 's/^[Xx]-[Aa]uth-[Tt]oken: //p')
curl -fsS -X PUT -H "X-Auth-Token: $token" -H 'X-Container-Read: .r:*' "$strata/v1/AUTH_admin/pub" >/dev/null
for size in $SIZES; do
    head -c "$(bytes_of "$size")" /dev/urandom >"$work/obj-$size"
    curl -fsS -X PUT -H "X-Auth-Token: $token" --data-binary "@$work/obj-$size" \
        "$strata/v1/AUTH_admin/pub/obj-$size" >/dev/null
done

# nginx, one process (no master), under callgrind, caching from that strata.
nginx_port=$(free_port)
mkdir -p "$work/nginx/cache" "$work/nginx/tmp"
nginx_user=""
[[ $(id -u) == 0 ]] && nginx_user="user root;"
cat >"$work/nginx/nginx.conf" <<CONF
$nginx_user
master_process off;
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/log/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/tmp;
    proxy_temp_path $work/nginx/tmp;
    fastcgi_temp_path $work/nginx/tmp;
    uwsgi_temp_path $work/nginx/tmp;
    scgi_temp_path $work/nginx/tmp;
    proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=edge:64m max_size=4g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$strata_port; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            proxy_ignore_headers Cache-Control Expires;
        }
    }
}
CONF
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/nginx.%p.out" \
    nginx -c "$work/nginx/nginx.conf" >"$work/log/nginx.log" 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")
wait_for "nginx" curl -fsS -o /dev/null "http://127.0.0.1:$nginx_port/v1/AUTH_admin/pub/obj-${SIZES%% *}"

declare -A base=([strata]=$strata [nginx]=http://127.0.0.1:$nginx_port)
declare -A pid_of=([strata]=$strata_pid [nginx]=$nginx_pid)
for target in strata nginx; do
    for size in $SIZES; do
        for _ in 1 2 3; do
            curl -fsS -o /dev/null "${base[$target]}/v1/AUTH_admin/pub/obj-$size"
        done
    done
done

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
