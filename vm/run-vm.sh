#!/usr/bin/env bash
# Boot the Berth guest in QEMU with a vhost-user vsock device served by
# vhost-device-vsock, wait until berth-agent accepts connections on its vsock port, and
# print the host's hybrid vsock socket path. The VM keeps running after this script
# exits; vm/stop-vm.sh RUNDIR stops it.
#
# Usage: vm/run-vm.sh [options]
#   --image DIR          directory with kernel/vmlinux and initramfs.cpio[.gz]
#                        (default: build/vm of the workspace)
#   --run-dir DIR        where sockets, logs and pid files go (default: a new mktemp -d)
#   --disk FILE          attach FILE as a raw virtio-blk disk; repeat for more disks.
#                        Disk N (from 0) has device id diskN and PCI slot 0x5 + N.
#   --port N             guest vsock port the agent serves (default 1024)
#   --append TEXT        more kernel parameters
#   --accel auto|kvm|tcg auto (the default) uses KVM only when a probe boot succeeds
#   --cpus N             vCPUs (default 2)
#   --memory MIB         guest memory in MiB (default 512)
#   --boot-timeout S     seconds to wait for the agent (default 60)
#   --lifetime S         seconds after which timeout(1) stops QEMU even when it is
#                        healthy: SIGTERM, then SIGKILL 5 s later (default 1800)
#   --no-wait            return as soon as QEMU has started
#   --foreground         after printing the socket path, close stdout and stay until
#                        QEMU and the daemon exit (after vm/stop-vm.sh RUNDIR). The
#                        caller then reaps the whole VM by waiting for this script.
#                        Without it the two timeout(1) wrappers outlive this script and
#                        are reparented, to init or to the caller's subreaper.
#
# RUNDIR contents: vhost.sock (QEMU <-> vhost-device-vsock), vsock.sock (hybrid vsock,
# printed on stdout), qmp.sock (QMP, for device_add), console.log, qemu.log, vhost.log,
# qemu.pid, vhost.pid, and boot-seconds (QEMU start to agent ready).
set -euo pipefail

prog=vm/run-vm.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(dirname "$here")

image=$workspace/build/vm
run_dir=
disks=()
port=1024
append=
accel=auto
cpus=2
memory=512
boot_timeout=60
lifetime=1800
wait_ready=1
foreground=0

usage() {
    sed -n '/^# Usage:/,/^# RUNDIR/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' | sed '$d' >&2
    exit 2
}

require_value() {
    if [[ $# -lt 2 ]]; then
        echo "$prog: $1 needs a value" >&2
        usage
    fi
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --image) require_value "$@"; image=$2; shift 2 ;;
        --run-dir) require_value "$@"; run_dir=$2; shift 2 ;;
        --disk) require_value "$@"; disks+=("$2"); shift 2 ;;
        --port) require_value "$@"; port=$2; shift 2 ;;
        --append) require_value "$@"; append=$2; shift 2 ;;
        --accel) require_value "$@"; accel=$2; shift 2 ;;
        --cpus) require_value "$@"; cpus=$2; shift 2 ;;
        --memory) require_value "$@"; memory=$2; shift 2 ;;
        --boot-timeout) require_value "$@"; boot_timeout=$2; shift 2 ;;
        --lifetime) require_value "$@"; lifetime=$2; shift 2 ;;
        --no-wait) wait_ready=0; shift ;;
        --foreground) foreground=1; shift ;;
        -h | --help) usage ;;
        *) echo "$prog: unknown option $1" >&2; usage ;;
    esac
done

for number in port cpus memory boot_timeout lifetime; do
    if [[ ! ${!number} =~ ^[0-9]+$ || ${!number} -eq 0 ]]; then
        echo "$prog: --${number//_/-} must be a positive integer, not '${!number}'" >&2
        exit 2
    fi
done
if [[ ! $accel =~ ^(auto|kvm|tcg)$ ]]; then
    echo "$prog: --accel must be auto, kvm or tcg, not $accel" >&2
    exit 2
fi
if [[ ${#disks[@]} -gt 20 ]]; then
    echo "$prog: at most 20 disks fit in PCI slots 0x5 to 0x18" >&2
    exit 2
fi

kernel=$image/kernel/vmlinux
initrd=$image/initramfs.cpio
if [[ ! -f $initrd && -f $initrd.gz ]]; then
    initrd=$initrd.gz
fi
for file in "$kernel" "$initrd"; do
    if [[ ! -f $file ]]; then
        echo "$prog: $file not found; run vm/build-image.sh $image AGENT_BINARY first" >&2
        exit 1
    fi
done
for disk in "${disks[@]}"; do
    if [[ ! -f $disk && ! -b $disk ]]; then
        echo "$prog: disk $disk not found" >&2
        exit 1
    fi
done

qemu=${QEMU:-qemu-system-x86_64}
vhost_daemon=${VHOST_DEVICE_VSOCK:-}
if [[ -z $vhost_daemon ]]; then
    vhost_daemon=$(command -v vhost-device-vsock || echo "$workspace/build/vm/cargo/bin/vhost-device-vsock")
fi
for tool in "$qemu" "$vhost_daemon" python3 timeout; do
    if ! command -v "$tool" >/dev/null; then
        echo "$prog: $tool not found; see vm/README.md for how to install it" >&2
        exit 1
    fi
done

if [[ -z $run_dir ]]; then
    run_dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-vm.XXXXXX")
else
    mkdir -p "$run_dir"
fi
run_dir=$(cd "$run_dir" && pwd)
# A unix socket path must fit in sun_path (108 bytes with the terminating NUL).
if [[ ${#run_dir} -gt 90 ]]; then
    echo "$prog: run directory path $run_dir is too long for unix socket paths" >&2
    exit 2
fi
if [[ -e $run_dir/qemu.pid || -e $run_dir/vhost.pid ]]; then
    echo "$prog: $run_dir contains the pid files of a VM that may still run;" \
        "run vm/stop-vm.sh $run_dir first" >&2
    exit 1
fi
rm -f "$run_dir"/{vhost.sock,vsock.sock,qmp.sock,console.log,qemu.log,vhost.log,boot-seconds}

# Any failure from here on stops what was started and shows the guest console.
started=0
fail() {
    echo "$prog: $*" >&2
    if grep -q 'Kernel panic' "$run_dir/console.log" 2>/dev/null; then
        # The panic's first line names the cause, and the stack trace after it rarely helps.
        echo "--- $run_dir/console.log (up to the kernel panic)" >&2
        sed -n '1,/Kernel panic/p' "$run_dir/console.log" | tail -n 60 >&2
    elif [[ -s $run_dir/console.log ]]; then
        echo "--- $run_dir/console.log (last 60 lines)" >&2
        tail -n 60 "$run_dir/console.log" >&2
    fi
    for log in qemu.log vhost.log; do
        if [[ -s $run_dir/$log ]]; then
            echo "--- $run_dir/$log" >&2
            tail -n 20 "$run_dir/$log" >&2
        fi
    done
    if [[ $started -eq 1 ]]; then
        "$here/stop-vm.sh" "$run_dir" >&2 || true
        # Reap the stopped wrappers here, so none is left for init or a subreaper.
        wait 2>/dev/null || true
    fi
    exit 1
}

# Wait up to $2 seconds for the path $1 to exist; the daemon creates it when it is ready.
wait_for_path() {
    local path=$1 deadline=$((SECONDS + $2))
    while [[ ! -e $path ]]; do
        if [[ $SECONDS -ge $deadline ]]; then
            return 1
        fi
        sleep 0.05
    done
}

# Succeed when KVM boots this kernel to the point where it looks for a root filesystem.
# Some hosts expose a /dev/kvm that cannot run a stock kernel: there QEMU aborts or the
# guest hangs without output, and the probe fails within its timeout.
probe_kvm() {
    local probe_dir
    probe_dir=$(mktemp -d "${TMPDIR:-/tmp}/berth-kvm-probe.XXXXXX")
    # Redirecting the group also silences bash's own "Aborted" report when QEMU aborts.
    {
        timeout --kill-after=2 10 "$qemu" -accel kvm -cpu host -nodefaults -no-user-config \
            -display none -no-reboot -m 256M -serial "file:$probe_dir/console.log" \
            -kernel "$kernel" -append "console=ttyS0 panic=-1"
    } >/dev/null 2>&1 || true
    local result=1
    if grep -q 'Kernel panic - not syncing: VFS' "$probe_dir/console.log" 2>/dev/null; then
        result=0
    fi
    rm -rf "$probe_dir"
    return "$result"
}

case $accel in
    auto)
        accel=tcg
        if [[ -r /dev/kvm && -w /dev/kvm ]] && probe_kvm; then
            accel=kvm
        fi
        ;;
esac

accel_args=(-accel tcg)
# NOTE: no guest has booted with these KVM arguments yet, because the development
# machine's KVM fails the probe.
if [[ $accel == kvm ]]; then
    accel_args=(-accel kvm -cpu host)
fi

# Disk N gets drive id driveN, device id diskN (QOM path /machine/peripheral/diskN) and
# PCI slot 0x5 + N, so the guest finds it at a fixed PCI path.
disk_args=()
for index in "${!disks[@]}"; do
    disk_args+=(-drive "file=${disks[$index]},if=none,id=drive$index,format=raw,cache=none,aio=threads"
        -device "$(printf 'virtio-blk-pci,drive=drive%d,id=disk%d,addr=0x%x' "$index" "$index" $((5 + index)))")
done

# -- vhost-device-vsock ---------------------------------------------------------------

# The daemon's time limit is 10 s longer than QEMU's, so that limit never ends the
# daemon under a running QEMU.
timeout --kill-after=5 "$((lifetime + 10))" "$vhost_daemon" \
    --vm "guest-cid=3,socket=$run_dir/vhost.sock,uds-path=$run_dir/vsock.sock" \
    </dev/null >"$run_dir/vhost.log" 2>&1 &
echo $! >"$run_dir/vhost.pid"
started=1
trap 'fail "interrupted"' INT TERM

if ! wait_for_path "$run_dir/vhost.sock" 10; then
    fail "vhost-device-vsock did not create $run_dir/vhost.sock within 10s"
fi

# -- QEMU -----------------------------------------------------------------------------

cmdline="console=ttyS0 quiet panic=-1 agent.server_addr=vsock://-1:$port agent.log=debug"
cmdline+="${append:+ $append}"

start_ns=$(date +%s%N)
# QEMU writes its own pid to qemu.pid. vm/stop-vm.sh signals that pid and the timeout
# wrapper, whose pid goes to qemu-timeout.pid.
timeout --kill-after=5 "$lifetime" "$qemu" \
    "${accel_args[@]}" \
    -machine "pc,memory-backend=mem" \
    -smp "$cpus" -m "${memory}M" \
    -object "memory-backend-memfd,id=mem,size=${memory}M,share=on" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$run_dir/console.log" \
    -qmp "unix:$run_dir/qmp.sock,server=on,wait=off" \
    -pidfile "$run_dir/qemu.pid" \
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
    -chardev "socket,id=vsock0,path=$run_dir/vhost.sock" \
    -device vhost-user-vsock-pci,chardev=vsock0 \
    "${disk_args[@]}" \
    </dev/null >"$run_dir/qemu.log" 2>&1 &
echo $! >"$run_dir/qemu-timeout.pid"

if ! wait_for_path "$run_dir/qemu.pid" 10; then
    fail "QEMU did not start within 10s"
fi
qemu_pid=$(cat "$run_dir/qemu.pid")

if [[ $wait_ready -eq 1 ]]; then
    if ! wait_for_path "$run_dir/vsock.sock" 10; then
        fail "vhost-device-vsock did not create $run_dir/vsock.sock within 10s of QEMU's start"
    fi
    if ! python3 "$here/hvsock.py" wait "$run_dir/vsock.sock" "$port" \
        --timeout "$boot_timeout" --pid "$qemu_pid" >&2; then
        fail "berth-agent did not accept on vsock port $port within ${boot_timeout}s ($accel)"
    fi
    end_ns=$(date +%s%N)
    boot=$(printf '%d.%03d' $(((end_ns - start_ns) / 1000000000)) $((((end_ns - start_ns) / 1000000) % 1000)))
    echo "$boot" >"$run_dir/boot-seconds"
    echo "$prog: agent ready on vsock port $port after ${boot}s ($accel, $cpus vCPUs," \
        "${memory} MiB); stop with vm/stop-vm.sh $run_dir" >&2
fi

trap - INT TERM
echo "$run_dir/vsock.sock"

if [[ $foreground -eq 1 ]]; then
    # Closing stdout lets a caller that reads the path see the end of the output.
    exec >&-
    wait
fi
