#!/usr/bin/env bash
# End-to-end test: start the real berth-agent on a unix socket and drive it with the real
# berth client against a busybox bundle. Needs root and busybox-static (see ci/deps.sh).
#
# Usage: ci/e2e.sh [BIN_DIR]   (from the repository root; BIN_DIR defaults to target/debug)
set -euo pipefail

BIN_DIR=${1:-target/debug}

source "$(dirname "$0")/agent.sh"

if [[ $(id -u) -ne 0 ]]; then
    echo "ci/e2e.sh: must run as root, because the agent creates namespaces, mounts and cgroups" >&2
    exit 1
fi
for binary in berth berth-agent; do
    if [[ ! -x $BIN_DIR/$binary ]]; then
        echo "ci/e2e.sh: $BIN_DIR/$binary not found; build the workspace first" >&2
        exit 1
    fi
done

failures=0
checks=0

pass() {
    checks=$((checks + 1))
    echo "ok   $1"
}

fail() {
    checks=$((checks + 1))
    failures=$((failures + 1))
    echo "FAIL $1" >&2
    shift
    local line
    for line in "$@"; do
        echo "     $line" >&2
    done
}

# expect_equal NAME EXPECTED ACTUAL
expect_equal() {
    if [[ $2 == "$3" ]]; then
        pass "$1"
    else
        fail "$1" "expected: $(printf %q "$2")" "actual:   $(printf %q "$3")"
    fi
}

# expect_contains NAME TEXT NEEDLE
expect_contains() {
    if [[ $2 == *"$3"* ]]; then
        pass "$1"
    else
        fail "$1" "expected to contain: $3" "actual: $2"
    fi
}

cleanup() {
    local status=$?

    if [[ -n $AGENT_PID ]]; then
        berth destroy-sandbox >/dev/null 2>&1 || true
        stop_agent || true
    fi
    if ((status != 0 || failures != 0)) && [[ -n $AGENT_LOG && -f $AGENT_LOG ]]; then
        echo "ci/e2e.sh: last lines of the agent log:" >&2
        tail -n 40 "$AGENT_LOG" >&2
    fi
    remove_work_dir
}

WORK_DIR=$(mktemp -d)
trap cleanup EXIT

bundle=$WORK_DIR/bundle
"$(dirname "$0")/busybox-bundle.sh" "$bundle" >/dev/null
start_agent

# -- the whole lifecycle with `berth run` --------------------------------------------

output=$(berth run "$bundle" 2>"$WORK_DIR/stderr") || true
expect_equal "run prints the bundle's greeting" "Hello from Berth" "$output"

output=$(berth run "$bundle" -- sh -c 'echo Hello from a Berth container; hostname' 2>/dev/null) || true
expect_equal "run replaces the args and sets the hostname" \
    "Hello from a Berth container"$'\n'"berth-demo" "$output"

output=$(berth run "$bundle" -- sh -c 'echo to-stdout; echo to-stderr >&2' 2>"$WORK_DIR/stderr") || true
expect_equal "run keeps stdout apart" "to-stdout" "$output"
expect_equal "run keeps stderr apart" "to-stderr" "$(cat "$WORK_DIR/stderr")"

output=$(printf 'line one\nline two\n' | berth run "$bundle" -- cat 2>/dev/null) || true
expect_equal "run forwards stdin until EOF" "line one"$'\n'"line two" "$output"

# A writer that keeps stdin open must not keep berth from exiting once the container
# has exited. `sleep` here is the writer, and it is killed by its PID afterwards.
exec 4< <(exec sleep 60)
writer_pid=$!
started=$SECONDS
output=$(berth run "$bundle" -- echo done <&4 2>/dev/null) || true
elapsed=$((SECONDS - started))
exec 4<&-
kill "$writer_pid" 2>/dev/null || true
expect_equal "run ignores stdin still open" "done" "$output"
if ((elapsed < 30)); then
    pass "run exits while stdin stays open"
else
    fail "run exits while stdin stays open" "took ${elapsed}s"
fi

# 200000 bytes is more than one read of the output stream, so the loop must run several times.
output=$(berth run "$bundle" -- sh -c 'head -c 200000 /dev/zero | tr "\0" x' 2>/dev/null | wc -c) || true
expect_equal "run streams large output whole" "200000" "$output"

status=0
berth run "$bundle" -- sh -c 'exit 3' >/dev/null 2>&1 || status=$?
expect_equal "run exits with the container's status" "3" "$status"

timings=$(berth run --timings "$bundle" 2>&1 >/dev/null) || true
expect_contains "run --timings lists CreateContainer" "$timings" "CreateContainer"
expect_contains "run --timings lists WaitProcess" "$timings" "WaitProcess"
expect_contains "run --timings lists the spawn stage" "$timings" "spawn"

# SIGTERM to berth must reach the container, whose trap turns the signal into status 42.
# The container prints "ready" once the trap is set; a FIFO lets the test wait for that
# line instead of sleeping.
fifo=$WORK_DIR/ready.fifo
mkfifo "$fifo"
# The binary, not the `berth` shell function, so that $! is the PID of berth itself.
"$BIN_DIR/berth" --address "$AGENT_ADDRESS" run "$bundle" -- sh -c 'trap "exit 42" TERM; echo ready; sleep 60 & wait' \
    >"$fifo" 2>/dev/null &
run_pid=$!
exec 3<"$fifo"
line=
read -r -t 20 -u 3 line || true
kill -TERM "$run_pid"
status=0
wait "$run_pid" || status=$?
exec 3<&-
expect_equal "run sees the container start" "ready" "$line"
expect_equal "run forwards SIGTERM to the container" "42" "$status"

# -- one subcommand per RPC ------------------------------------------------------------

id=e2e-steps
berth create "$bundle" --id "$id" -- sh -c 'exit 5' >/dev/null 2>&1 || true
berth start "$id" >/dev/null 2>&1 || true
output=$(berth wait "$id" 2>&1) || true
expect_equal "create, start and wait return the status" "5" "$output"
status=0
berth rm "$id" >/dev/null 2>&1 || status=$?
expect_equal "rm removes the stopped container" "0" "$status"

id=e2e-kill
berth create "$bundle" --id "$id" -- sleep 60 >/dev/null 2>&1 || true
berth start "$id" >/dev/null 2>&1 || true
berth kill "$id" --signal KILL >/dev/null 2>&1 || true
output=$(berth wait "$id" 2>&1) || true
expect_equal "kill --signal KILL ends the container" "137" "$output"
berth rm "$id" >/dev/null 2>&1 || true

# -- a running container: exec, ps, stats, pause and resume ----------------------------

id=e2e-running
berth create "$bundle" --id "$id" -- sleep 600 >/dev/null 2>&1 || true
berth start "$id" >/dev/null 2>&1 || true

output=$(berth exec "$id" --exec-id e1 -u 1000:1000 -- sh -c 'id -u; echo from-exec' 2>&1) || true
expect_equal "exec runs as the given user" "1000"$'\n'"from-exec" "$output"
status=0
berth exec "$id" -- sh -c 'exit 6' >/dev/null 2>&1 || status=$?
expect_equal "exec exits with the process's status" "6" "$status"
output=$(printf 'piped\n' | berth exec "$id" -- cat 2>&1) || true
expect_equal "exec forwards stdin" "piped" "$output"

# `exec -t` attached to a pseudo-terminal that script(1) provides, as an operator's
# shell would be: the process gets a terminal of the local window's size, its status
# comes back, and berth restores the local terminal's settings when it exits.
tty_command="stty rows 33 cols 77; before=\$(stty -g);"
tty_command+=" $(realpath "$BIN_DIR/berth") --address $AGENT_ADDRESS exec -t $id --"
tty_command+=" sh -c 'tty; stty size; exit 7'; echo status=\$?;"
tty_command+=" [ \"\$before\" = \"\$(stty -g)\" ] && echo settings-restored"
output=$(script --quiet --command "$tty_command" /dev/null </dev/null 2>&1 | tr -d '\r') || true
expect_contains "exec -t gives the process a terminal" "$output" "/dev/pts/"
expect_contains "exec -t sends the local window size" "$output" "33 77"
expect_contains "exec -t returns the process's status" "$output" "status=7"
expect_contains "exec -t restores the local terminal" "$output" "settings-restored"

output=$(berth ps "$id" 2>&1) || true
expect_contains "ps lists the container's init" "$output" "sleep 600"
output=$(berth ps "$id" --format json 2>&1) || true
if [[ $output =~ ^\[[0-9]+\]$ ]]; then
    pass "ps --format json prints one pid"
else
    fail "ps --format json prints one pid" "actual: $output"
fi

output=$(berth stats "$id" 2>&1) || true
expect_contains "stats prints memory usage" "$output" "memory usage:"

status=0
berth pause "$id" >/dev/null 2>&1 || status=$?
berth resume "$id" >/dev/null 2>&1 || status=$?
expect_equal "pause and resume succeed" "0" "$status"
output=$(berth exec "$id" -- echo resumed 2>&1) || true
expect_equal "exec works after resume" "resumed" "$output"

status=0
berth update "$id" --memory 67108864 --pids 64 >/dev/null 2>&1 || status=$?
expect_equal "update succeeds" "0" "$status"

status=0
output=$(berth resize "$id" --rows 10 --cols 10 2>&1) || status=$?
expect_contains "resize without a terminal is FAILED_PRECONDITION" "$output" "FAILED_PRECONDITION"
berth rm "$id" >/dev/null 2>&1 || true

output=$(berth guest-details 2>&1) || true
expect_contains "guest-details prints the agent version" "$output" "version"

# -- bad input ---------------------------------------------------------------------------

status=0
output=$(berth run --id 'a/b' "$bundle" 2>&1) || status=$?
expect_equal "run with id a/b exits 1" "1" "$status"
expect_contains "run with id a/b names the RPC" "$output" "CreateContainer failed"
expect_contains "run with id a/b is INVALID_ARGUMENT" "$output" "INVALID_ARGUMENT"

output=$(berth check 2>&1) || true
expect_contains "agent serves after a rejected request" "$output" "SERVING"

status=0
output=$(berth run "$WORK_DIR/no-such-bundle" 2>&1) || status=$?
expect_equal "run without config.json exits 1" "1" "$status"
expect_contains "run without config.json names the path" "$output" "$WORK_DIR/no-such-bundle/config.json"

status=0
output=$("$BIN_DIR/berth" --address "unix://$WORK_DIR/no-agent.sock" --timeout 2 check 2>&1) || status=$?
expect_equal "check without an agent exits 1" "1" "$status"
expect_contains "check without an agent names the address" "$output" "unix://$WORK_DIR/no-agent.sock"

# -- teardown leaves nothing behind ---------------------------------------------------

status=0
berth destroy-sandbox >/dev/null 2>&1 || status=$?
expect_equal "destroy-sandbox succeeds" "0" "$status"

status=0
stop_agent || status=$?
expect_equal "agent exits 0 on SIGTERM" "0" "$status"

mounts=$(grep -F " $WORK_DIR" /proc/self/mountinfo || true)
expect_equal "no mount left under the work directory" "" "$mounts"

# Leftover container processes are not checked here, because other containers on the
# machine look the same from outside. CI runs the suite under a leak checker for them.
leftovers=$(find "$WORK_DIR/run" -mindepth 1 ! -type d 2>/dev/null || true)
expect_equal "no file left in the agent's run directory" "" "$leftovers"

echo
if ((failures != 0)); then
    echo "ci/e2e.sh: $failures of $checks checks failed" >&2
    exit 1
fi
echo "ci/e2e.sh: all $checks checks passed"
