# Shell functions that start and stop a berth-agent for ci/demo.sh and ci/e2e.sh.
# Source this file; it sets no shell options of its own.
#
# The caller sets:
#   BIN_DIR   directory that contains berth-agent and berth
#   WORK_DIR  an empty temporary directory that the agent may use and the caller removes
# After start_agent: AGENT_PID, AGENT_ADDRESS and AGENT_LOG are set.

AGENT_PID=
AGENT_ADDRESS=
AGENT_LOG=

# How long to wait for the agent to serve after it starts, and to exit after SIGTERM.
AGENT_START_TIMEOUT_SECS=${AGENT_START_TIMEOUT_SECS:-20}
AGENT_STOP_TIMEOUT_SECS=${AGENT_STOP_TIMEOUT_SECS:-20}

# True while PID runs. `kill -0` also succeeds for a zombie, which is what an exited
# agent is until the shell reaps it, so this reads the state from /proc.
process_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

berth() {
    "$BIN_DIR/berth" --address "$AGENT_ADDRESS" "$@"
}

start_agent() {
    AGENT_ADDRESS=unix://$WORK_DIR/agent.sock
    AGENT_LOG=$WORK_DIR/agent.log
    mkdir -p "$WORK_DIR/run" "$WORK_DIR/sys"
    : >"$WORK_DIR/cmdline"

    # --isolate gives the agent its own UTS and network namespaces, so the hostname and
    # network it sets up for the sandbox never touch this machine. The empty sysfs
    # directory keeps the agent's PCI rescan away from this machine's devices, and the
    # empty kernel command line keeps agent.* parameters of this machine out.
    "$BIN_DIR/berth-agent" --isolate \
        --server-addr "$AGENT_ADDRESS" \
        --run-dir "$WORK_DIR/run" \
        --sysfs "$WORK_DIR/sys" \
        --kernel-cmdline "$WORK_DIR/cmdline" \
        --log-level debug \
        2>"$AGENT_LOG" </dev/null &
    AGENT_PID=$!

    wait_for_agent
}

# Poll Health.Check until it succeeds, the agent exits, or the timeout passes. The agent
# gives no readiness signal other than serving, so polling is the event to wait on.
wait_for_agent() {
    local deadline=$((SECONDS + AGENT_START_TIMEOUT_SECS))

    while ((SECONDS < deadline)); do
        if ! process_running "$AGENT_PID"; then
            echo "berth-agent exited before it served; its log:" >&2
            cat "$AGENT_LOG" >&2
            AGENT_PID=
            return 1
        fi
        if berth --timeout 1 check >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done

    echo "berth-agent did not serve on $AGENT_ADDRESS within ${AGENT_START_TIMEOUT_SECS}s; its log:" >&2
    cat "$AGENT_LOG" >&2
    return 1
}

# Send SIGTERM to the agent, wait for it to exit, and fall back to SIGKILL after the
# timeout. Returns the agent's exit status (or 1 when it had to be killed).
stop_agent() {
    if [[ -z $AGENT_PID ]]; then
        return 0
    fi

    local pid=$AGENT_PID
    local deadline=$((SECONDS + AGENT_STOP_TIMEOUT_SECS))
    AGENT_PID=

    kill -TERM "$pid" 2>/dev/null || true
    while process_running "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done

    if process_running "$pid"; then
        echo "berth-agent (pid $pid) still running ${AGENT_STOP_TIMEOUT_SECS}s after SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 1
    fi

    local status=0
    wait "$pid" 2>/dev/null || status=$?
    return "$status"
}

# Remove the work directory. --one-file-system leaves any mount the agent failed to
# remove in place (and reports it) instead of deleting through it.
remove_work_dir() {
    if [[ -n $WORK_DIR && -d $WORK_DIR ]]; then
        rm -rf --one-file-system "$WORK_DIR"
    fi
}
