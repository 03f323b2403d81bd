#!/usr/bin/env bash
# Boot the Berth guest and run the busybox bundle that the image carries at /bundle
# with `berth run` over hybrid vsock. Print the container's output and exit code. Then
# power the guest off and check that no process or socket of the VM is left.
#
# Usage: vm/demo.sh [options] [-- COMMAND [ARG]...]
#   --image DIR     directory with kernel/vmlinux and initramfs.cpio (default build/vm)
#   --berth PATH    the berth client (default target/release/berth)
#   --bundle DIR    host copy of the bundle, whose config.json is sent (default
#                   build/bundle, made with ci/busybox-bundle.sh when missing)
#   --cpus N        vCPUs (default 2)
#   --memory MIB    guest memory in MiB (default 512)
#   COMMAND         what the container runs, in place of the bundle's process.args
#
# Exits with the container's exit status, or 125 when the VM could not be booted or
# left something behind. BERTH_VM_BOOT_TIMEOUT (default 120) is the seconds allowed for
# the boot.
set -euo pipefail

prog=vm/demo.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(dirname "$here")

image=$workspace/build/vm
berth=$workspace/target/release/berth
bundle=$workspace/build/bundle
cpus=2
memory=512
command=(sh -c 'echo "hello from a container in a VM: $(uname -sr), $(nproc) vCPUs, hostname $(hostname)"')

usage() {
    sed -n '/^# Usage:/,/^# Exits/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' | sed '$d' >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --image) image=${2:?--image needs a directory}; shift 2 ;;
        --berth) berth=${2:?--berth needs a path}; shift 2 ;;
        --bundle) bundle=${2:?--bundle needs a directory}; shift 2 ;;
        --cpus) cpus=${2:?--cpus needs a number}; shift 2 ;;
        --memory) memory=${2:?--memory needs a number}; shift 2 ;;
        --) shift; command=("$@"); break ;;
        -h | --help) usage ;;
        *) echo "$prog: unknown option $1" >&2; usage ;;
    esac
done

if [[ ${#command[@]} -eq 0 ]]; then
    echo "$prog: -- must be followed by a command" >&2
    exit 2
fi
if [[ ! -x $berth ]]; then
    echo "$prog: $berth not found; build it with cargo build --release -p berth-ctl" >&2
    exit 125
fi
if [[ ! -f $bundle/config.json ]]; then
    "$workspace/ci/busybox-bundle.sh" "$bundle" >/dev/null
fi

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-vm-demo.XXXXXX")
keep_logs=0
stopped=0
run_vm_pid=

# Stops the VM, then waits for run-vm.sh, which exits once QEMU and the daemon have
# exited, so that this script reaps every process of the VM.
stop_vm() {
    if [[ $stopped -eq 0 ]]; then
        stopped=1
        "$here/stop-vm.sh" --graceful 20 "$run_dir"
    fi
    if [[ -n $run_vm_pid ]]; then
        wait "$run_vm_pid" 2>/dev/null || true
        run_vm_pid=
    fi
}

cleanup() {
    stop_vm 2>/dev/null || true
    if [[ $keep_logs -eq 1 ]]; then
        echo "$prog: logs kept in $run_dir" >&2
    else
        rm -rf "$run_dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "$prog: booting the guest ($cpus vCPUs, $memory MiB)" >&2
# run-vm.sh prints the socket path once the agent accepts, then stays until the VM
# stops, as a child of this script.
exec {run_vm_output}< <(exec "$here/run-vm.sh" --foreground --image "$image" \
    --run-dir "$run_dir" --cpus "$cpus" --memory "$memory" \
    --boot-timeout "${BERTH_VM_BOOT_TIMEOUT:-120}" --lifetime 900)
run_vm_pid=$!
socket=
read -r socket <&"$run_vm_output" || true
exec {run_vm_output}<&-
if [[ -z $socket ]]; then
    keep_logs=1
    exit 125
fi
address=hvsock://$socket:1024

echo "$prog: berth --address $address run --guest-bundle /bundle $bundle -- ${command[*]}" >&2
echo "--- container output" >&2
status=0
timeout --kill-after=5 300 "$berth" --address "$address" run --guest-bundle /bundle \
    "$bundle" -- "${command[@]}" </dev/null || status=$?
echo "--- container exit code: $status" >&2
if [[ $status -eq 124 || $status -eq 137 ]]; then
    echo "$prog: berth run did not finish within 300s" >&2
    keep_logs=1
fi

# The pids are read before stop-vm.sh removes the pid files.
pids=$(cat "$run_dir/qemu.pid" "$run_dir/vhost.pid" 2>/dev/null || true)
stop_vm
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
if [[ ${#left[@]} -gt 0 ]]; then
    echo "$prog: left behind after the VM stopped: ${left[*]}" >&2
    keep_logs=1
    exit 125
fi
if ! grep -q 'reboot: Power down' "$run_dir/console.log"; then
    echo "$prog: the guest did not power off by itself; QEMU was stopped by a signal" >&2
fi
echo "$prog: VM stopped; no process or socket left" >&2
exit "$status"
