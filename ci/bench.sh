#!/usr/bin/env bash
# Benchmark berth-agent side by side with crun and rewrite docs/benchmarks.md.
# Builds the release binaries, writes a busybox bundle to build/bench-bundle, installs
# Debian's crun when it is missing, then runs berth-bench, which starts its own agent
# in a temporary directory (see bench/src/agent.rs) and removes it at the end.
#
# Usage: ci/bench.sh [--quick]   (from the repository root, as root)
set -euo pipefail

CARGO=${CARGO:-cargo}
BUNDLE_DIR=build/bench-bundle

if [[ $# -gt 1 || ($# -eq 1 && $1 != --quick) ]]; then
    echo "usage: ci/bench.sh [--quick]" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "ci/bench.sh: must run as root, because the agent and crun create namespaces, mounts and cgroups" >&2
    exit 1
fi

if ! command -v crun >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        echo "ci/bench.sh: crun is not installed and apt-get is not available; install crun by hand" >&2
        exit 1
    fi
    echo "ci/bench.sh: installing crun"
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends crun
fi

"$CARGO" build --release -p berth-agent -p berth-ctl -p berth-bench
"$(dirname "$0")/busybox-bundle.sh" "$BUNDLE_DIR" >/dev/null

command="make bench"
if [[ $# -eq 1 ]]; then
    command="make bench BENCH_ARGS=--quick"
fi

target/release/berth-bench "$@" \
    --bin-dir target/release \
    --bundle "$BUNDLE_DIR" \
    --crun "$(command -v crun)" \
    --output docs/benchmarks.md \
    --notes bench/notes.md \
    --command "$command"
