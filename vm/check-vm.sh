#!/usr/bin/env bash
# Check the VM path end to end. Build the guest image and boot it, so /init hands over
# to berth-agent. Reach the agent over hybrid vsock and call grpc.Health. Hot-plug and
# unplug a virtio-blk disk. Stop the VM and check that nothing is left running.
#
# Usage: vm/check-vm.sh [--agent PATH] [--berth PATH] [--keep]
#   --agent PATH   agent binary to pack (default: cargo build --release -p berth-agent)
#   --berth PATH   berth client to call too (default: target/release/berth when present)
#   --keep         keep the run directory with its logs after a successful run
#
# Environment: BERTH_VM_DIR (default build/vm) holds the kernel, image and tools;
# BERTH_VM_BOOT_TIMEOUT (default 120) is the seconds allowed for the boot.
# Prints one line per check and ends with "vm checks: N passed, N failed".
set -euo pipefail

prog=vm/check-vm.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(dirname "$here")
vm_dir=${BERTH_VM_DIR:-$workspace/build/vm}
boot_timeout=${BERTH_VM_BOOT_TIMEOUT:-120}
port=1024

agent=
berth=
keep=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --agent) agent=${2:?--agent needs a path}; shift 2 ;;
        --berth) berth=${2:?--berth needs a path}; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $prog [--agent PATH] [--berth PATH] [--keep]" >&2; exit 2 ;;
    esac
done

passed=0
failed=0
pass() {
    passed=$((passed + 1))
    echo "ok   $*"
}
fail() {
    failed=$((failed + 1))
    echo "FAIL $*"
}

# --- build -------------------------------------------------------------------------

if [[ -z $agent ]]; then
    echo "$prog: building berth-agent (release)"
    if ! (cd "$workspace" && cargo build --release -p berth-agent); then
        echo "$prog: cargo build --release -p berth-agent failed; pass --agent PATH to" \
            "check with another build" >&2
        exit 1
    fi
    agent=$workspace/target/release/berth-agent
fi
if [[ -z $berth && -x $workspace/target/release/berth ]]; then
    berth=$workspace/target/release/berth
fi

"$here/fetch-kernel.sh" "$vm_dir/kernel"
"$here/build-image.sh" "$vm_dir" "$agent"

# --- boot ----------------------------------------------------------------------------

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-vm-check.XXXXXX")
stopped=0
cleanup() {
    if [[ $stopped -eq 0 ]]; then
        "$here/stop-vm.sh" "$run_dir" 2>/dev/null || true
    fi
    if [[ $keep -eq 1 || $failed -gt 0 ]]; then
        echo "$prog: logs kept in $run_dir"
    else
        rm -rf "$run_dir"
    fi
}
trap cleanup EXIT

# Raw disks of zeros are enough: the checks look at the virtio device, not a filesystem.
truncate -s 16M "$run_dir/disk0.img" "$run_dir/disk1.img"

if ! socket=$("$here/run-vm.sh" --run-dir "$run_dir" --disk "$run_dir/disk0.img" \
    --boot-timeout "$boot_timeout" --port "$port"); then
    fail "boot: berth-agent did not accept on vsock port $port"
    echo "vm checks: $passed passed, $failed failed"
    exit 1
fi
pass "boot: berth-agent accepts on vsock port $port after $(cat "$run_dir/boot-seconds")s"
qmp=$run_dir/qmp.sock

# --- calls over hybrid vsock ---------------------------------------------------------

if output=$(python3 "$here/hvsock.py" health "$socket" "$port" 2>&1) &&
    [[ $output == "grpc.Health/Check: SERVING" ]]; then
    pass "ttRPC grpc.Health/Check over hybrid vsock: SERVING"
else
    fail "ttRPC grpc.Health/Check over hybrid vsock: $output"
fi

if output=$(python3 "$here/hvsock.py" health "$socket" "$port" --method Version 2>&1); then
    pass "ttRPC grpc.Health/Version: ${output#grpc.Health/Version: }"
else
    fail "ttRPC grpc.Health/Version: $output"
fi

# Nothing listens on the next port, so the guest resets the connection and the CONNECT
# handshake must fail rather than hang.
status=0
output=$(python3 "$here/hvsock.py" health "$socket" $((port + 1)) --timeout 10 2>&1) || status=$?
if [[ $status -eq 3 ]]; then
    pass "CONNECT to unserved port $((port + 1)) is rejected"
else
    fail "CONNECT to unserved port $((port + 1)): exit status $status, expected 3: $output"
fi

if [[ -n $berth ]]; then
    if output=$(timeout 60 "$berth" --address "hvsock://$socket:$port" check 2>&1) &&
        [[ $output == SERVING ]]; then
        pass "berth --address hvsock://...:$port check: SERVING"
    else
        fail "berth --address hvsock://...:$port check: $output"
    fi
else
    echo "skip berth check: no target/release/berth and no --berth given"
fi

# --- virtio-blk at a fixed slot and hot-plug -----------------------------------------

# Succeed when the guest driver has set DRIVER_OK on the virtio device with id $1.
driver_ok() {
    python3 "$here/qmp.py" "$qmp" x-query-virtio-status \
        "{\"path\":\"/machine/peripheral/$1/virtio-backend\"}" 2>/dev/null |
        grep -q VIRTIO_CONFIG_S_DRIVER_OK
}

# Succeed when QEMU still lists a virtio device with id $1.
device_present() {
    python3 "$here/qmp.py" "$qmp" x-query-virtio 2>/dev/null | grep -q "/peripheral/$1/"
}

# Run the command "$@" every 0.2s until it succeeds or $timeout seconds pass.
timeout=30
poll() {
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if [[ $SECONDS -ge $deadline ]]; then
            return 1
        fi
        sleep 0.2
    done
}

if poll driver_ok disk0; then
    pass "disk0 at PCI slot 0x5: guest driver set DRIVER_OK"
else
    fail "disk0 at PCI slot 0x5: no DRIVER_OK within ${timeout}s"
fi

if output=$(python3 "$here/qmp.py" "$qmp" \
    blockdev-add "{\"driver\":\"raw\",\"node-name\":\"drive1\",\"file\":{\"driver\":\"file\",\"filename\":\"$run_dir/disk1.img\"}}" \
    device_add '{"driver":"virtio-blk-pci","drive":"drive1","id":"disk1","addr":"0x7"}' 2>&1) &&
    poll driver_ok disk1; then
    pass "disk1 hot-plugged at PCI slot 0x7: guest driver set DRIVER_OK"
else
    fail "disk1 hot-plug at PCI slot 0x7: ${output:-no DRIVER_OK within ${timeout}s}"
fi

# device_del only requests an eject from the guest. QEMU removes the device once the
# guest has ejected it.
if output=$(python3 "$here/qmp.py" "$qmp" device_del '{"id":"disk1"}' 2>&1) &&
    poll eval '! device_present disk1'; then
    pass "disk1 unplugged: the guest ejected it"
else
    fail "disk1 unplug: ${output:-still present after ${timeout}s}"
fi

# --- stop ----------------------------------------------------------------------------

pids=$(cat "$run_dir"/qemu.pid "$run_dir"/vhost.pid 2>/dev/null)
"$here/stop-vm.sh" "$run_dir" 2>/dev/null
stopped=1
left=()
for pid in $pids; do
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$run_dir/"; then
        left+=("process $pid")
    fi
done
for file in "$run_dir"/*.sock "$run_dir"/*.pid; do
    if [[ -e $file ]]; then
        left+=("$file")
    fi
done
if [[ ${#left[@]} -eq 0 ]]; then
    pass "stop: no process, socket or pid file left"
else
    fail "stop: left behind: ${left[*]}"
fi

echo "vm checks: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
