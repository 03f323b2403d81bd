#!/usr/bin/env bash
# Stop the QEMU and vhost-device-vsock processes that vm/run-vm.sh started for RUNDIR,
# then remove their sockets and pid files. Logs stay in RUNDIR. Safe to run twice.
#
# Usage: vm/stop-vm.sh [--graceful SECONDS] RUNDIR
#   --graceful S   first press Ctrl-Alt-Del through QMP, which berth-agent as PID 1
#                  takes as a request to remove its containers and power the VM off,
#                  and wait up to S seconds for QEMU to exit before signalling it
set -euo pipefail

prog=vm/stop-vm.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

graceful=0
if [[ ${1:-} == --graceful ]]; then
    if [[ ! ${2:-} =~ ^[0-9]+$ ]]; then
        echo "$prog: --graceful needs a number of seconds, not '${2:-}'" >&2
        exit 2
    fi
    graceful=$2
    shift 2
fi
if [[ $# -ne 1 || -z $1 ]]; then
    echo "usage: $prog [--graceful SECONDS] RUNDIR" >&2
    exit 2
fi
if [[ ! -d $1 ]]; then
    echo "$prog: run directory $1 not found" >&2
    exit 1
fi
run_dir=$(cd "$1" && pwd)

# Print the pid stored in pid file $1 when that process still runs and its command line
# names this run directory. The check keeps a reused pid from being signalled.
owned_pid() {
    local file=$run_dir/$1 pid
    [[ -s $file ]] || return 1
    pid=$(cat "$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$run_dir/" || return 1
    echo "$pid"
}

# Succeed when QEMU exits within $graceful seconds of a Ctrl-Alt-Del.
power_off_guest() {
    local pid deadline
    pid=$(owned_pid qemu.pid) || return 1
    python3 "$here/qmp.py" "$run_dir/qmp.sock" send-key \
        '{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}' \
        >/dev/null || return 1
    deadline=$((SECONDS + graceful))
    while kill -0 "$pid" 2>/dev/null; do
        if [[ $SECONDS -ge $deadline ]]; then
            return 1
        fi
        sleep 0.1
    done
}

if [[ $graceful -gt 0 ]] && owned_pid qemu.pid >/dev/null; then
    if power_off_guest; then
        echo "$prog: the guest powered off after Ctrl-Alt-Del" >&2
    else
        echo "$prog: the guest did not power off within ${graceful}s of Ctrl-Alt-Del;" \
            "stopping QEMU" >&2
    fi
fi

pids=()
# QEMU first, so the vsock daemon does not vanish under a running guest.
for file in qemu.pid qemu-timeout.pid vhost.pid; do
    if pid=$(owned_pid "$file"); then
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid")
    fi
done

# Give the processes 5 seconds to exit on SIGTERM, then kill what is left.
deadline=$((SECONDS + 5))
for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$prog: process $pid did not exit on SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
done

rm -f "$run_dir"/{vhost.sock,vsock.sock,qmp.sock,qemu.pid,qemu-timeout.pid,vhost.pid}
echo "$prog: processes stopped: ${#pids[@]}; logs remain in $run_dir" >&2
