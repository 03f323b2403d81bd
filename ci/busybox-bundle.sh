#!/usr/bin/env bash
# Build an OCI bundle in DIR. DIR/rootfs contains a static busybox with one symlink per
# applet, and DIR/config.json is a runtime spec in the shape `runc spec` produces.
# Running it again replaces DIR/rootfs and DIR/config.json and nothing else in DIR.
#
# Usage: ci/busybox-bundle.sh DIR
set -euo pipefail

if [[ $# -ne 1 || -z $1 ]]; then
    echo "usage: ci/busybox-bundle.sh DIR" >&2
    exit 2
fi
bundle=$1
rootfs=$bundle/rootfs
busybox=/bin/busybox

# A dynamically linked busybox would need the host's libraries inside the rootfs, so
# only the binary of the busybox-static package will do.
busybox_static_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)
    [[ $status == "install ok installed" && -x $busybox ]]
}

if ! busybox_static_installed; then
    if ! command -v apt-get >/dev/null; then
        echo "ci/busybox-bundle.sh: busybox-static is not installed and apt-get is not available;" \
            "install a statically linked busybox at $busybox by hand" >&2
        exit 1
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "ci/busybox-bundle.sh: busybox-static is not installed; run ci/deps.sh as root" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox-static
fi

mkdir -p "$bundle"
# --one-file-system keeps a mount left over from a crashed run from being emptied.
rm -rf --one-file-system "$rootfs" "$bundle/config.json"

mkdir -p "$rootfs"/{bin,dev,etc,proc,root,sys,tmp}
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"

# Relative links resolve inside the container, where the rootfs is `/`.
for applet in $("$busybox" --list); do
    if [[ $applet != busybox ]]; then
        ln -s busybox "$rootfs/bin/$applet"
    fi
done

cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

cat >"$bundle/config.json" <<'SPEC'
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": ["sh", "-c", "echo Hello from Berth"],
    "env": [
      "PATH=/bin",
      "HOME=/root"
    ],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [
      { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }
    ],
    "noNewPrivileges": true
  },
  "root": { "path": "rootfs", "readonly": true },
  "hostname": "berth-demo",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    {
      "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
    },
    {
      "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    },
    {
      "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
    },
    {
      "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
      "options": ["nosuid", "noexec", "nodev"]
    },
    {
      "destination": "/sys", "type": "sysfs", "source": "sysfs",
      "options": ["nosuid", "noexec", "nodev", "ro"]
    }
  ],
  "linux": {
    "resources": {
      "devices": [ { "allow": false, "access": "rwm" } ]
    },
    "namespaces": [
      { "type": "pid" },
      { "type": "network" },
      { "type": "ipc" },
      { "type": "uts" },
      { "type": "mount" }
    ],
    "maskedPaths": [
      "/proc/acpi",
      "/proc/asound",
      "/proc/kcore",
      "/proc/keys",
      "/proc/latency_stats",
      "/proc/timer_list",
      "/proc/timer_stats",
      "/proc/sched_debug",
      "/proc/scsi",
      "/sys/firmware"
    ],
    "readonlyPaths": [
      "/proc/bus",
      "/proc/fs",
      "/proc/irq",
      "/proc/sys",
      "/proc/sysrq-trigger"
    ]
  }
}
SPEC

echo "ci/busybox-bundle.sh: bundle ready in $bundle"
