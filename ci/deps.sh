#!/usr/bin/env bash
# Install the Debian packages that building Berth and running its tests need.
# Packages that are already installed are left alone, so a second run changes nothing.
# Rust itself is not installed here, because CI machines come with a rustup toolchain.
set -euo pipefail

# gcc and libc6-dev: rustc links through the system C compiler.
# busybox-static: the tests and the demo build their container root filesystem from it.
# iproute2: `ip`, with which the netDevices tests make veth pairs in namespaces of their own.
# libseccomp-dev and pkg-config: rustjail links libseccomp to load seccomp profiles.
# e2fsprogs and util-linux: storage tests make ext4 images on loop devices they create.
# qemu-system-x86, xz-utils, binutils, cpio and python3: the VM tests boot the agent as
# a guest's init (vm/README.md). xz and readelf unpack the kernel, and cpio packs the image.
packages=(gcc libc6-dev pkg-config libseccomp-dev busybox-static iproute2 e2fsprogs util-linux
    qemu-system-x86 xz-utils binutils cpio python3)

if [[ $(id -u) -ne 0 ]]; then
    echo "ci/deps.sh: must run as root to install packages" >&2
    exit 1
fi

missing=()
for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
        missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "ci/deps.sh: all packages present: ${packages[*]}"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "ci/deps.sh: apt-get not found; install these packages by hand: ${missing[*]}" >&2
    exit 1
fi

echo "ci/deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
