# Starts and stops a throwaway Redis Cluster of 3 masters and 3 replicas on loopback ports (scripts/test; Redis 7).
# Source it after lib.sh; do not run it.

# Runs "$@" in the background with every file descriptor above 2 closed, so that it holds nothing its starter's
# parent waits on. Foundation's Process (a Swift test starting this script) learns that its child exited from the end
# of a socket the child inherits: a redis-server that outlives the script and kept that socket made the test wait
# forever for a script that had long exited. Sets $! like `&`.
detached() {
    (
        local fd
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
        done
        exec "$@"
    ) &
}

# Starts six redis-server processes with cluster mode on, joins them (`redis-cli --cluster create … --cluster-replicas 1`)
# and waits until every node reports cluster_state:ok. Sets JOBFARM_CLUSTER_PIDS, JOBFARM_CLUSTER_DIR and
# JOBFARM_CLUSTER_URL (redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…). $1: the node timeout in ms (default 1000: a
# failover test sees a replica promoted within a few seconds). $2: the address the nodes announce and clients use
# (default 127.0.0.1; scripts/cluster-demo gives a bridge's, reachable from network namespaces); they also listen on
# 127.0.0.1.
start_test_cluster() {
    local timeout=${1:-1000} address=${2:-127.0.0.1} ports=() taken=() port node
    local bind=(127.0.0.1) announce=()
    # Another address than loopback: reachable from other hosts (namespaces), so protected mode must be off.
    if [ "$address" != 127.0.0.1 ]; then bind+=("$address"); announce=(--cluster-announce-ip "$address" --protected-mode no); fi
    JOBFARM_CLUSTER_DIR=$(mktemp -d -t jobfarm-test-cluster.XXXXXX)
    JOBFARM_CLUSTER_PIDS=()
    # Ports below the kernel's ephemeral range (bus ports too): a port an outgoing connection holds as its source
    # port answers no connect, yet a server cannot bind it. A node that still fails to start (it exits at once when
    # its port is taken) is started again on another port.
    local low highest
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    highest=$((low - 10001))
    [ "$highest" -gt 11000 ] || highest=55534
    for _ in 1 2 3 4 5 6; do
        local attempt pid started
        for attempt in 1 2 3 4 5 6 7 8; do
            while :; do
                port=$((10000 + RANDOM % (highest - 10000)))
                # The cluster bus listens on port + 10000: both must be free, and distinct from the ports taken.
                (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
                (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null && continue
                [[ " ${taken[*]} " == *" $port "* || " ${taken[*]} " == *" $((port + 10000)) "* ]] && continue
                break
            done
            node="$JOBFARM_CLUSTER_DIR/$port"
            mkdir -p "$node"
            detached redis-server --port "$port" --bind "${bind[@]}" ${announce[@]+"${announce[@]}"} --cluster-enabled yes --cluster-config-file "$node/nodes.conf" \
                --cluster-node-timeout "$timeout" --save "" --appendonly no --dir "$node" --maxmemory 64mb \
                --hash-max-listpack-value 1024 --logfile "$node/redis.log" --daemonize no
            pid=$!
            started=""
            for _ in $(seq 1 200); do
                [ "$(redis-cli -p "$port" ping 2>/dev/null || true)" = PONG ] && { started=1; break; }
                kill -0 "$pid" 2>/dev/null || break  # exited: its port (or bus port) was taken after all
                sleep 0.05
            done
            [ -n "$started" ] && break
            kill "$pid" 2>/dev/null || true
            if [ "$attempt" = 8 ]; then
                tail -n 20 "$node/redis.log" >&2 2>/dev/null
                die "a test cluster node did not start in 8 attempts, the last on port $port (its log above)"
            fi
            rm -rf "$node"
        done
        ports+=("$port")
        taken+=("$port" "$((port + 10000))")
        JOBFARM_CLUSTER_PIDS+=("$pid")
    done
    local addresses=()
    for port in "${ports[@]}"; do addresses+=("$address:$port"); done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$JOBFARM_CLUSTER_DIR/create.log" 2>&1 \
        || { cat "$JOBFARM_CLUSTER_DIR/create.log" >&2; die "redis-cli --cluster create failed (log above)"; }
    for port in "${ports[@]}"; do
        for i in $(seq 1 200); do
            redis-cli -p "$port" cluster info 2>/dev/null | grep -q "cluster_state:ok" && break
            [ "$i" = 200 ] && die "the test cluster node on port $port did not reach cluster_state:ok (see $JOBFARM_CLUSTER_DIR/$port/redis.log)"
            sleep 0.05
        done
    done
    JOBFARM_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${addresses[*]}")"
}

# Stops the cluster that start_test_cluster started and removes its files.
stop_test_cluster() {
    local pid
    for pid in ${JOBFARM_CLUSTER_PIDS[@]+"${JOBFARM_CLUSTER_PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    for pid in ${JOBFARM_CLUSTER_PIDS[@]+"${JOBFARM_CLUSTER_PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
    [ -n "${JOBFARM_CLUSTER_DIR:-}" ] && rm -rf "$JOBFARM_CLUSTER_DIR"
}
