#!/bin/busybox sh
# shellcheck shell=dash
# /init of the Berth guest initramfs: mount the kernel filesystems, load the kernel
# modules that virtio, vsock and block storage need, then replace itself with
# berth-agent, which reads agent.server_addr and agent.log from /proc/cmdline.
#
# Each mount is skipped when its target is already a mount point, so this script keeps
# working once the agent mounts these filesystems itself.
#
# Kernel parameters read here:
#   berth.shell   run an interactive shell on the console in place of the agent

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

log() {
    echo "berth-init: $*"
}

is_mounted() {
    grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null
}

# mount_once TYPE SOURCE TARGET [OPTIONS]
mount_once() {
    if is_mounted "$3"; then
        return 0
    fi
    mkdir -p "$3"
    if ! mount -t "$1" ${4:+-o "$4"} "$2" "$3"; then
        log "mount -t $1 $2 $3 failed"
        return 1
    fi
}

# Seconds since the kernel started, from /proc/uptime, to time each boot step.
uptime() {
    read -r seconds _ </proc/uptime
    echo "${seconds}s"
}

# /proc/mounts does not exist before proc is mounted, so check /proc/self instead.
if [ ! -e /proc/self ]; then
    mkdir -p /proc
    mount -t proc proc /proc || log "mount -t proc proc /proc failed"
fi
log "started at $(uptime) after kernel start"
mount_once sysfs sysfs /sys nosuid,noexec,nodev
mount_once devtmpfs devtmpfs /dev mode=0755,nosuid

# The kernel opens the initial console before devtmpfs is mounted, through the
# /dev/console node packed into the initramfs. Reopen it from devtmpfs in case that
# node was missing.
if [ -c /dev/console ]; then
    exec </dev/console >/dev/console 2>&1
fi

mount_once devpts devpts /dev/pts nosuid,noexec,newinstance,ptmxmode=0666,mode=0620
mount_once tmpfs shm /dev/shm nosuid,nodev,mode=1777
mount_once tmpfs tmpfs /run nosuid,nodev,mode=0755
mount_once cgroup2 cgroup2 /sys/fs/cgroup nosuid,noexec,nodev

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
        name=${module##*/}
        name=${name%.ko}
        # A module that is already loaded or built in leaves a directory here.
        # shellcheck disable=SC3060 # busybox ash supports ${var//pattern/replacement}
        if [ -d "/sys/module/${name//-/_}" ]; then
            continue
        fi
        insmod "$modules_dir/$module" || log "insmod $module failed"
    done </etc/berth/modules
fi

log "modules loaded at $(uptime)"

ip link set lo up 2>/dev/null || log "ip link set lo up failed"

if grep -qw berth.shell /proc/cmdline; then
    log "berth.shell is set: starting a shell in place of berth-agent"
    exec setsid cttyhack sh
fi

log "starting berth-agent at $(uptime)"
exec /usr/bin/berth-agent
