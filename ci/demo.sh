#!/usr/bin/env bash
# Start a berth-agent on a unix socket in a temporary directory, run two containers from
# a busybox bundle with `berth run --timings`, then tear everything down again.
# Needs root, release binaries in target/release, and busybox-static (see ci/deps.sh).
#
# Usage: ci/demo.sh   (from the repository root; `make demo` builds first)
set -euo pipefail

BIN_DIR=${BIN_DIR:-target/release}
BUNDLE_DIR=${BUNDLE_DIR:-build/bundle}

source "$(dirname "$0")/agent.sh"

if [[ $(id -u) -ne 0 ]]; then
    echo "ci/demo.sh: must run as root, because the agent creates namespaces, mounts and cgroups" >&2
    exit 1
fi
for binary in berth berth-agent; do
    if [[ ! -x $BIN_DIR/$binary ]]; then
        echo "ci/demo.sh: $BIN_DIR/$binary not found; run 'make build' first" >&2
        exit 1
    fi
done

cleanup() {
    local status=$?

    if [[ -n $AGENT_PID ]]; then
        berth destroy-sandbox >/dev/null 2>&1 || true
        stop_agent || true
    fi
    if ((status != 0)) && [[ -n $AGENT_LOG && -f $AGENT_LOG ]]; then
        echo "ci/demo.sh: failed; last lines of the agent log:" >&2
        tail -n 30 "$AGENT_LOG" >&2
    fi
    remove_work_dir
}

ci/busybox-bundle.sh "$BUNDLE_DIR"

WORK_DIR=$(mktemp -d)
trap cleanup EXIT

start_agent
echo "berth-agent (pid $AGENT_PID) serves on $AGENT_ADDRESS"
berth check
berth version

echo
echo "== berth run --timings $BUNDLE_DIR -- sh -c '...greeting, hostname, id, mounts...'"
berth run --timings "$BUNDLE_DIR" -- \
    sh -c 'echo Hello from a Berth container; hostname; id; cat /proc/self/mounts'

echo
echo "== berth run --timings $BUNDLE_DIR -- sh -c 'exit 3'"
status=0
berth run --timings "$BUNDLE_DIR" -- sh -c 'exit 3' || status=$?
echo "exit status $status"
if ((status != 3)); then
    echo "ci/demo.sh: expected exit status 3 from the second container, got $status" >&2
    exit 1
fi

echo
echo "== berth destroy-sandbox"
berth destroy-sandbox

echo
echo "== stopping berth-agent (pid $AGENT_PID) with SIGTERM"
stop_agent
echo "berth-agent exited cleanly"
