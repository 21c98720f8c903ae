# lib.sh: helpers every benchmark library shares. Sourced after setting
# bench_name; `die` shows the tail of the logs under $work/log once $work is
# made, then runs the script's `on_die` if it has one.

log() { printf '[%s] %s\n' "$bench_name" "$*" >&2; }
die() {
    log "error: $*"
    if [[ -n ${work:-} && -d $work/log ]]; then
        tail -n 20 "$work"/log/* >&2 || true
    fi
    # A script may add what it knows (mount-compare.sh: the FUSE mounts).
    if declare -F on_die >/dev/null; then on_die >&2 || true; fi
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_for WHAT COMMAND...: until COMMAND succeeds, at most two minutes
# (strata under valgrind starts slowly).
wait_for() {
    local what=$1
    shift
    for _ in $(seq 480); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "$what did not come up"
}
