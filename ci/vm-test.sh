#!/usr/bin/env bash
# VM tests: pack BIN_DIR/berth-agent into a guest image, boot it in QEMU as the guest's
# PID 1, and check that
#   - `berth run --guest-bundle /bundle` runs a container in the guest over hybrid vsock
#     and returns its output and exit code, and the guest powers off cleanly after;
#   - agent/tests/vm.rs passes: a `blk` storage from a disk at a fixed PCI slot, and a
#     disk hot-plugged through QMP that the pci-rescan and devices stages find;
#   - agent/tests/vm_cgroups.rs passes: cgroup v2 cpu, memory, pids and io limits, the
#     OOM event from memory.events and the eBPF device filter, seen from containers;
#   - agent/tests/vm_apparmor.rs passes: an AppArmor profile compiled on the host, loaded
#     into the guest kernel from a container, confines a container and an exec'd process;
#   - agent/tests/vm_selinux.rs passes: in a guest booted with SELinux, a CIL policy
#     compiled on the host and loaded from a container gives a container, an exec'd
#     process and a container's tmpfs mount the SELinux labels their spec names.
#
# Usage: ci/vm-test.sh [BIN_DIR]   (from the repository root; default target/debug)
#
# The tests need QEMU (qemu-system-x86_64), python3, mkfs.ext4, the kernel that
# vm/fetch-kernel.sh unpacks into build/vm/kernel, vhost-device-vsock, the
# apparmor_parser that vm/fetch-apparmor.sh unpacks into build/vm/apparmor and the secilc
# that vm/fetch-selinux.sh unpacks into build/vm/selinux (all three by `make vm-tools`).
# When one is missing this script prints SKIP with the reason and exits 0, unless
# BERTH_VM_TESTS=1, which turns a missing prerequisite into a failure, so that
# CI cannot pass without running them. BERTH_VM_TESTS=0 skips them on purpose.
set -euo pipefail

prog=ci/vm-test.sh
workspace=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${1:-target/debug}
vm_dir=$(realpath -m "${BERTH_VM_DIR:-$workspace/build/vm}")
cargo=${CARGO:-cargo}

skip() {
    if [[ ${BERTH_VM_TESTS:-} == 1 ]]; then
        echo "$prog: FAIL: BERTH_VM_TESTS=1 but $*" >&2
        exit 1
    fi
    echo "$prog: SKIP the VM tests: $*"
    exit 0
}

if [[ ${BERTH_VM_TESTS:-} == 0 ]]; then
    echo "$prog: SKIP the VM tests: BERTH_VM_TESTS=0"
    exit 0
fi

# --- prerequisites -------------------------------------------------------------------

if [[ $(uname -m) != x86_64 ]]; then
    skip "the guest image is built for x86_64 only, this machine is $(uname -m)"
fi
qemu=${QEMU:-qemu-system-x86_64}
for tool in "$qemu" python3 mkfs.ext4 timeout cpio readelf strip; do
    if ! command -v "$tool" >/dev/null; then
        skip "$tool not found (ci/deps.sh installs it)"
    fi
done
if [[ ! -s $vm_dir/kernel/vmlinux || ! -s $vm_dir/kernel/kernel-version ]]; then
    skip "no kernel in $vm_dir/kernel (vm/fetch-kernel.sh $vm_dir/kernel downloads it)"
fi
vhost=${VHOST_DEVICE_VSOCK:-}
if [[ -z $vhost ]]; then
    vhost=$(command -v vhost-device-vsock || echo "$vm_dir/cargo/bin/vhost-device-vsock")
fi
if [[ ! -x $vhost ]]; then
    skip "vhost-device-vsock not found on PATH or at $vhost (make vm-tools builds it)"
fi
export VHOST_DEVICE_VSOCK=$vhost
apparmor_dir=$vm_dir/apparmor
if [[ ! -x $apparmor_dir/apparmor_parser || ! -s $apparmor_dir/features ]]; then
    skip "no apparmor_parser in $apparmor_dir (vm/fetch-apparmor.sh $apparmor_dir unpacks it)"
fi
if ! "$apparmor_dir/apparmor_parser" --config-file /dev/null --version >/dev/null 2>&1; then
    skip "$apparmor_dir/apparmor_parser does not run on this host (vm/fetch-apparmor.sh checks why)"
fi
export BERTH_APPARMOR_DIR=$apparmor_dir
selinux_dir=$vm_dir/selinux
if [[ ! -x $selinux_dir/secilc ]]; then
    skip "no secilc in $selinux_dir (vm/fetch-selinux.sh $selinux_dir unpacks it)"
fi
# secilc --help exits with status 1 even when it runs, so its usage text is the check.
secilc_usage=$("$selinux_dir/secilc" --help 2>&1 || true)
if [[ $secilc_usage != Usage:* ]]; then
    skip "$selinux_dir/secilc does not run on this host (vm/fetch-selinux.sh checks why)"
fi
export BERTH_SELINUX_DIR=$selinux_dir
for binary in berth berth-agent; do
    if [[ ! -x $bin_dir/$binary ]]; then
        echo "$prog: $bin_dir/$binary not found; build the workspace first" >&2
        exit 1
    fi
done

# --- image ---------------------------------------------------------------------------

# A private image directory, so that the tests never replace the image `make image`
# built. It reuses the unpacked kernel through a symlink.
image=$(mktemp -d "${TMPDIR:-/tmp}/berth-vm-image.XXXXXX")
trap 'rm -rf "$image"' EXIT
ln -s "$vm_dir/kernel" "$image/kernel"
"$workspace/vm/build-image.sh" "$image" "$bin_dir/berth-agent"

failures=0

# --- berth run in the guest ----------------------------------------------------------

echo "$prog: berth run --guest-bundle /bundle in the guest"
output=$(mktemp "${TMPDIR:-/tmp}/berth-vm-demo-output.XXXXXX")
status=0
"$workspace/vm/demo.sh" --image "$image" --berth "$bin_dir/berth" -- \
    sh -c 'echo "pid $$ in $(uname -r)"; exit 3' >"$output" 2>&1 || status=$?
if [[ $status -eq 3 ]] && grep -q "^pid 1 in $(cat "$vm_dir/kernel/kernel-version")\$" "$output" &&
    grep -q 'no process or socket left' "$output"; then
    echo "ok   berth run in the guest: output and exit code 3 returned, nothing left behind"
else
    echo "FAIL berth run in the guest: exit status $status, expected 3; its output:"
    cat "$output"
    failures=$((failures + 1))
fi
rm -f "$output"

# --- Rust tests with devices ---------------------------------------------------------

for test in vm vm_cgroups vm_apparmor vm_selinux; do
    echo "$prog: cargo test -p berth-agent --test $test -- --ignored"
    if BERTH_VM_IMAGE=$image "$cargo" test -p berth-agent --test "$test" -- --ignored --test-threads 1; then
        echo "ok   agent/tests/$test.rs"
    else
        echo "FAIL agent/tests/$test.rs"
        failures=$((failures + 1))
    fi
done

if [[ $failures -gt 0 ]]; then
    echo "$prog: $failures VM test groups failed"
    exit 1
fi
echo "$prog: all VM tests passed"
