# edge-lib.sh: what the edge benchmarks share. Sourced after setting repo,
# bench_name, SIZES and the Debian packages the script needs (packages);
# reads STRATA_BIN, installs what is missing, makes the work directory and
# defines, besides lib.sh's helpers: `start_origin [WRAPPER...]` (a strata
# with a public Swift container holding one object per size; sets strata,
# strata_port, strata_pid), `start_nginx MAIN_DIRECTIVES [WRAPPER...]`
# (nginx proxy_cache in front of that strata, its cache on the same disk;
# sets nginx_port, nginx_pid) and `warm BASE_URL...`.

STRATA_BIN=${STRATA_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/strata}
secret=edge-bench-secret

# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"

[[ -x $STRATA_BIN ]] || die "no strata binary at $STRATA_BIN (cargo build --release -p strata-gateway)"

missing=()
for package in "${packages[@]}"; do
    tool=$package
    [[ $package == varnish ]] && tool=varnishd
    [[ $package == linux-perf ]] && tool=perf
    command -v "$tool" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian packages"
    sudo_if_needed() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    # The packages start their own services; the benchmarks use private instances.
    sudo_if_needed systemctl stop nginx varnish 2>/dev/null || true
    pkill -x nginx 2>/dev/null || true
    pkill -x varnishd 2>/dev/null || true
fi

work=$(mktemp -d "/tmp/strata-$bench_name.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # KEEP_WORK=1 keeps the logs and profiles (callgrind's, for callgrind_annotate).
    if [[ -n ${KEEP_WORK:-} ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/log"

bytes_of() {
    python3 -c "import sys; s = sys.argv[1]; u = {'KiB': 1 << 10, 'MiB': 1 << 20}; print(int(s[:-3]) * u[s[-3:]])" "$1"
}

# start_origin [WRAPPER...]: strata (run by WRAPPER, if given) serving the
# public container `pub` with one object `obj-<size>` per size.
start_origin() {
    strata_port=$(free_port)
    STRATA_ROOT_ACCESS_KEY=EDGEBENCHACCESS00000 STRATA_ROOT_SECRET_KEY=$secret \
        "$@" "$STRATA_BIN" serve --listen "127.0.0.1:$strata_port" --data "$work/strata" \
        >"$work/log/strata.log" 2>&1 &
    strata_pid=$!
    pids+=("$strata_pid")
    strata=http://127.0.0.1:$strata_port
    wait_for "strata" curl -fsS "$strata/health"
    local token size
    token=$(curl -fsS -D - -o /dev/null -H 'X-Auth-User: admin:admin' -H "X-Auth-Key: $secret" \
        "$strata/auth/v1.0" | tr -d '\r' | sed -n 's/^[Xx]-[Aa]uth-[Tt]oken: //p')
    curl -fsS -X PUT -H "X-Auth-Token: $token" -H 'X-Container-Read: .r:*' \
        "$strata/v1/AUTH_admin/pub" >/dev/null
    for size in $SIZES; do
        head -c "$(bytes_of "$size")" /dev/urandom >"$work/obj-$size"
        curl -fsS -X PUT -H "X-Auth-Token: $token" --data-binary "@$work/obj-$size" \
            "$strata/v1/AUTH_admin/pub/obj-$size" >/dev/null
    done
}

# warm BASE_URL...: every object fetched a few times through each, so that
# every cache holds them all before anything is measured.
warm() {
    local base size
    for base in "$@"; do
        for size in $SIZES; do
            for _ in 1 2 3; do
                curl -fsS -o /dev/null "$base/v1/AUTH_admin/pub/obj-$size"
            done
        done
    done
}

# start_nginx MAIN_DIRECTIVES [WRAPPER...]: nginx (run by WRAPPER, if given)
# on a free port in front of the origin, in the foreground; returns once it
# answers.
start_nginx() {
    local main=$1
    shift
    nginx_port=$(free_port)
    write_nginx_conf "$work/nginx/nginx.conf" "$nginx_port" "$main daemon off;"
    "$@" nginx -c "$work/nginx/nginx.conf" >"$work/log/nginx.log" 2>&1 &
    nginx_pid=$!
    pids+=("$nginx_pid")
    wait_for "nginx" curl -fsS -o /dev/null "http://127.0.0.1:$nginx_port/v1/AUTH_admin/pub/obj-${SIZES%% *}"
}

# write_nginx_conf FILE PORT [MAIN DIRECTIVES]: nginx listening on PORT as a
# caching proxy of the origin (proxy_cache_lock, keepalive upstream).
write_nginx_conf() {
    local file=$1 port=$2 main=${3:-} user=""
    mkdir -p "$work/nginx/cache" "$work/nginx/tmp"
    # Workers run as this user, so that they can write the cache under $work.
    [[ $(id -u) == 0 ]] && user="user root;"
    cat >"$file" <<CONF
$user
$main
pid $work/nginx/nginx.pid;
error_log $work/log/nginx-error.log warn;
events { worker_connections 4096; }
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
        listen 127.0.0.1:$port;
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
}
