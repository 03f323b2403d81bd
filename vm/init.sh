#!/bin/busybox sh
# shellcheck shell=dash
# /init of the Berth guest initramfs: load the kernel modules that virtio, vsock and
# block storage need, then replace itself with berth-agent. The agent, as PID 1, mounts
# /proc, /sys, /dev, /dev/pts, /dev/shm, /run, /tmp and the cgroup hierarchy itself and
# reads its agent.* options from /proc/cmdline.
#
# The initramfs is the kernel's rootfs mount, which pivot_root(2) cannot leave, so a
# container's init could not enter its root filesystem with pivot_root. This script
# therefore copies the image onto a tmpfs and starts the agent there with switch_root,
# which also frees the initramfs copy. It mounts /proc only to read the kernel command
# line and the uptime, and unmounts it before the agent starts.
#
# Kernel parameters read here:
#   berth.shell   run an interactive shell on the console in place of the agent

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

log() {
    echo "berth-init: $*"
}

# Seconds since the kernel started, from /proc/uptime, to time each boot step.
uptime() {
    read -r seconds _ </proc/uptime
    echo "${seconds}s"
}

mkdir -p /proc
mount -t proc proc /proc || log "mount -t proc proc /proc failed"
log "started at $(uptime) after kernel start"

# /etc/berth/modules lists module files relative to /lib/modules/VERSION, in an order
# where each module follows the modules it depends on.
modules_dir=/lib/modules/$(uname -r)
if [ ! -d "$modules_dir" ]; then
    log "$modules_dir not found: this initramfs was built for another kernel" \
        "($(ls /lib/modules 2>/dev/null))"
else
    while read -r module; do
        case $module in
            '' | '#'*) continue ;;
        esac
        insmod "$modules_dir/$module" || log "insmod $module failed"
    done </etc/berth/modules
fi

log "modules loaded at $(uptime)"

ip link set lo up 2>/dev/null || log "ip link set lo up failed"

if grep -qw berth.shell /proc/cmdline; then
    log "berth.shell is set: starting a shell in place of berth-agent"
    mkdir -p /sys /dev
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts
    mount -t devpts devpts /dev/pts
    exec setsid cttyhack sh
fi

new_root=/newroot
mkdir -p "$new_root"
if ! mount -t tmpfs -o mode=0755 rootfs "$new_root"; then
    log "mount -t tmpfs rootfs $new_root failed: starting berth-agent on the initramfs," \
        "where containers cannot use pivot_root"
    umount /proc
    exec /usr/bin/berth-agent
fi
for entry in /* /.[!.]*; do
    case $entry in
        /proc | "$new_root" | '/.[!.]*') continue ;;
    esac
    cp -a "$entry" "$new_root/" || log "copy $entry to $new_root failed"
done
mkdir -p "$new_root/proc"

log "starting berth-agent at $(uptime)"
umount /proc || log "umount /proc failed; the agent keeps this mount"
exec switch_root "$new_root" /usr/bin/berth-agent
