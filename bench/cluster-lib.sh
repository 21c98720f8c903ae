# cluster-lib.sh: what the cluster benchmarks share. Sourced after setting
# repo, bench_name, SIZES, access and secret; reads the common environment
# (STRATA_BIN, BENCH_BIN, DURATION, CONCURRENCY, OUT_DIR), makes the work
# directory, and defines the set-up helpers (nodes, rings, gateways, with
# every process's pid in setup_pids for the CPU count) and `measure SETUP`,
# which appends PUT and GET figures per size to $results.

target=${CARGO_TARGET_DIR:-$repo/target}
STRATA_BIN=${STRATA_BIN:-$target/release/strata}
BENCH_BIN=${BENCH_BIN:-$target/release/strata-bench}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-16}
OUT_DIR=${OUT_DIR:-$repo/bench/runs}

# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
[[ -x $STRATA_BIN ]] || die "no strata at $STRATA_BIN (cargo build --release -p strata-gateway)"
[[ -x $BENCH_BIN ]] || die "no strata-bench at $BENCH_BIN (cargo build --release -p strata-bench)"
for tool in curl python3; do command -v "$tool" >/dev/null || die "$tool is missing"; done

work=$(mktemp -d "/tmp/strata-$bench_name-bench.XXXXXX")

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/log"
echo "cluster-bench-shared-secret-0001" >"$work/cluster.secret"

# CPU ticks (user + system) of every process in the current set-up.
cpu_ticks() {
    local total=0 pid fields
    for pid in "${setup_pids[@]}"; do
        read -r -a fields <"/proc/$pid/stat"
        total=$((total + fields[13] + fields[14]))
    done
    echo "$total"
}
ticks_per_sec=$(getconf CLK_TCK)

# start_node NAME PORT RING [ARGS...]: a storage node; its pid joins the set-up.
start_node() {
    "$STRATA_BIN" node --data "$work/$1" --listen "127.0.0.1:$2" \
        --cluster-secret-file "$work/cluster.secret" --ring "$3" \
        --replication-interval 1 --audit-pause 3600 "${@:4}" >"$work/log/$1.log" 2>&1 &
    pids+=("$!")
    setup_pids+=("$!")
    node_pid[$1]=$!
    wait_for "node $1" bash -c "exec 3<>/dev/tcp/127.0.0.1/$2"
}
declare -A node_pid

# make_ring NAME REPLICAS PORT...: a ring over nodes on these ports.
make_ring() {
    local builder=$work/$1.builder zone=0 port
    "$STRATA_BIN" ring create "$builder" --part-power 8 --replicas "$2" --cluster-id bench --min-part-hours 0 >/dev/null
    shift 2
    for port in "$@"; do
        zone=$((zone + 1))
        "$STRATA_BIN" ring add "$builder" --node "127.0.0.1:$port" --zone "$zone" --weight 100 >/dev/null
    done
    "$STRATA_BIN" ring rebalance "$builder" >/dev/null
}

# start_three_nodes [NAME [INDEX_GROUPS]]: three fresh storage nodes
# (NAME-n0..2, default n0..2) on a ring of 2 replicas, holding INDEX_GROUPS
# index groups if given; `ring` holds the flags a gateway of theirs needs,
# `index_nodes` their addresses as a TOML list. Nodes belong to the first
# metadata service that claims them: each set-up with a metadata service
# of its own needs its own.
start_three_nodes() {
    local name=${1:-three} prefix=${1:+$1-} ports=("$(free_port)" "$(free_port)" "$(free_port)") i
    local list index_args=()
    make_ring "$name" 2 "${ports[@]}"
    ring=(--ring "$work/$name.builder.ring" --cluster-secret-file "$work/cluster.secret")
    list=$(printf '127.0.0.1:%s,' "${ports[@]}")
    list=${list%,}
    index_nodes="\"${list//,/\", \"}\""
    if [[ -n ${2:-} ]]; then
        index_args=(--index-groups "$2" --index-nodes "$list")
    fi
    for i in 0 1 2; do
        start_node "${prefix}n$i" "${ports[$i]}" "$work/$name.builder.ring" "${index_args[@]}"
    done
}

# start_metadata_members [PREFIX]: three gateways over those nodes, the members of a
# replicated metadata service (gateway_pid[PREFIX1..3], PREFIX "member" by
# default), once they answer;
# `members` is their --metadata list, `member_ports` their ports, `leader`
# the member that leads.
start_metadata_members() {
    local i port prefix=${1:-member}
    member_ports=("$(free_port)" "$(free_port)" "$(free_port)")
    members=$(printf '127.0.0.1:%s,' "${member_ports[@]}")
    members=${members%,}
    for i in 0 1 2; do
        launch_gateway "$prefix$((i + 1))" "${member_ports[$i]}" "${ring[@]}" \
            --metadata "$members" --metadata-member $((i + 1))
    done
    for port in "${member_ports[@]}"; do
        wait_for "member on $port" curl -fsS "http://127.0.0.1:$port/health"
    done
    wait_for "a leader" leader_known
}
leader_known() {
    leader=$(curl -fsS "http://127.0.0.1:${member_ports[0]}/metrics" |
        awk '$1 == "strata_metadata_leader" { print $2 }')
    [[ $leader =~ ^[123]$ ]]
}

# launch_gateway NAME PORT [ARGS...]: strata serve on PORT, not waited for;
# its pid joins the set-up and is kept in gateway_pid[NAME].
launch_gateway() {
    local name=$1 port=$2
    shift 2
    STRATA_ROOT_ACCESS_KEY=$access STRATA_ROOT_SECRET_KEY=$secret \
        "$STRATA_BIN" serve --listen "127.0.0.1:$port" --data "$work/$name-gateway" "$@" \
        >"$work/log/$name-gateway.log" 2>&1 &
    pids+=("$!")
    setup_pids+=("$!")
    gateway_pid[$name]=$!
}
declare -A gateway_pid

# start_gateway NAME [ARGS...]: strata serve on a free port (gateway_port),
# once it answers.
start_gateway() {
    local name=$1
    shift
    gateway_port=$(free_port)
    launch_gateway "$name" "$gateway_port" "$@"
    wait_for "gateway $name" curl -fsS "http://127.0.0.1:$gateway_port/health"
}

stop_setup() {
    local pid
    for pid in "${setup_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${setup_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    setup_pids=()
}

bench() {
    "$BENCH_BIN" --endpoint "http://127.0.0.1:$gateway_port" --access-key "$access" \
        --secret-key "$secret" --bucket bench --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --json "$@"
}

results=$work/results.tsv
# measure SETUP: put then get for every size, with CPU per request.
measure() {
    local setup=$1 size op before after json
    for size in $SIZES; do
        before=$(cpu_ticks)
        json=$(bench --op put --size "$size" --prefix "$setup-$size/" 2>>"$work/log/bench.log")
        after=$(cpu_ticks)
        record "$setup" "$json" $((after - before))
        # The get phase fills its keys first (untimed): CPU counts from the
        # moment the fill is reported.
        rm -f "$work/fill-ticks"
        json=$(bench --op get --size "$size" --objects 500 --prefix "$setup-$size-get/" \
            2> >(while IFS= read -r line; do
                printf '%s\n' "$line" >>"$work/log/bench.log"
                [[ $line == *fill:* ]] && cpu_ticks >"$work/fill-ticks"
            done))
        after=$(cpu_ticks)
        sleep 0.2
        before=$(cat "$work/fill-ticks" 2>/dev/null || echo "$after")
        record "$setup" "$json" $((after - before))
    done
}
record() {
    python3 - "$1" "$2" "$3" "$ticks_per_sec" >>"$results" <<'EOF'
import json, sys
setup, line, ticks, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ops = max(line["ops"], 1)
cpu_us = ticks / hz * 1e6 / ops
print("\t".join(str(v) for v in (setup, line["op"], line["size"], round(line["ops_per_s"], 1),
      round(line["mb_per_s"], 1), round(line["p99_ms"], 2), round(cpu_us, 1), line["errors"])))
EOF
}

