#!/usr/bin/env bash
# Build the guest initramfs: berth-agent as the program /init hands over to, a static
# busybox, the kernel modules for virtio, vsock, virtio-blk, ext4 and overlayfs, and a
# busybox OCI bundle under /bundle.
#
# Usage: vm/build-image.sh OUTDIR AGENT_BINARY
#
# OUTDIR must hold the kernel that vm/fetch-kernel.sh OUTDIR/kernel unpacked; this script
# runs it when OUTDIR/kernel/vmlinux is missing. Results:
#   OUTDIR/initramfs.cpio      uncompressed newc archive (or .cpio.gz, see below)
#   OUTDIR/staging/            the tree the archive was made from
#
# Environment:
#   BERTH_VM_COMPRESS=gzip          write OUTDIR/initramfs.cpio.gz instead
#   BERTH_VM_EXTRA_MODULES="a b"    more modules to load, after the default ones
#   SOURCE_DATE_EPOCH               the mtime of every archived file (default 0)
#
# Uses only the host's busybox-static package, the unpacked Debian kernel package and
# the workspace, and downloads nothing itself except through vm/fetch-kernel.sh.
set -euo pipefail

prog=vm/build-image.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workspace=$(dirname "$here")

# Loaded in this order. Dependencies found in each module's .modinfo are loaded before
# it. ext4 and jbd2 ask for crc32c only through a softdep on the crypto-crc32c alias,
# which this script does not resolve, so crc32c_generic is named here.
default_modules=(
    virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport
    virtio_blk crc32c_generic ext4 overlay
)

if [[ $# -ne 2 || -z $1 || -z $2 ]]; then
    echo "usage: $prog OUTDIR AGENT_BINARY" >&2
    exit 2
fi
outdir=$1
agent=$2

if [[ ! -f $agent || ! -x $agent ]]; then
    echo "$prog: agent binary $agent not found or not executable;" \
        "build it with cargo build --release -p berth-agent" >&2
    exit 1
fi

case ${BERTH_VM_COMPRESS:-none} in
    none) archive_name=initramfs.cpio ;;
    gzip) archive_name=initramfs.cpio.gz ;;
    *)
        echo "$prog: BERTH_VM_COMPRESS must be none or gzip, not ${BERTH_VM_COMPRESS}" >&2
        exit 2
        ;;
esac

for tool in cpio readelf ldd strip; do
    if ! command -v "$tool" >/dev/null; then
        echo "$prog: $tool not found; run ci/deps.sh or install it by hand" >&2
        exit 1
    fi
done

busybox=/bin/busybox
if ! headers=$(readelf -l "$busybox" 2>/dev/null) || grep -q INTERP <<<"$headers"; then
    echo "$prog: $busybox is missing or dynamically linked; install busybox-static" >&2
    exit 1
fi

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
kernel_dir=$outdir/kernel
if [[ ! -s $kernel_dir/kernel-version ]]; then
    "$here/fetch-kernel.sh" "$kernel_dir"
fi
version=$(cat "$kernel_dir/kernel-version")
modules_src=$kernel_dir/root/lib/modules/$version

staging=$outdir/staging
rm -rf --one-file-system "$staging"
mkdir -p "$staging"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc/berth,root}
chmod 1777 "$staging/tmp"

# --- busybox and its applet links ---------------------------------------------------

cp "$busybox" "$staging/bin/busybox"
while read -r applet; do
    if [[ $applet != bin/busybox ]]; then
        ln -s /bin/busybox "$staging/$applet"
    fi
done < <("$busybox" --list-full)

# --- the agent and the shared libraries it links -------------------------------------

# Stripping drops the debug sections, which are most of a debug build's size.
strip -o "$staging/usr/bin/berth-agent" "$agent"

copy_library() {
    local path=$1
    mkdir -p "$staging$(dirname "$path")"
    cp -L "$path" "$staging$path"
}

# ldd prints "name => /path (addr)" for libraries and "/path (addr)" for the loader.
while read -r line; do
    case $line in
        *'=> not found'*)
            echo "$prog: $agent needs a library the host lacks: $line" >&2
            exit 1
            ;;
        *'=> /'*)
            path=${line#*=> }
            copy_library "${path%% (*}"
            ;;
        /*)
            copy_library "${line%% (*}"
            ;;
    esac
done < <(ldd "$agent" 2>/dev/null || true)

# --- kernel modules ------------------------------------------------------------------

declare -A module_path=()
while read -r file; do
    name=$(basename "$file" .ko)
    module_path[${name//-/_}]=${file#"$modules_src"/}
done < <(find "$modules_src/kernel" -name '*.ko')

declare -A module_state=()
load_order=()

# Append MODULE and, before it, every module it depends on to load_order, once each.
add_module() {
    local name=${1//-/_}
    local path=${module_path[$name]:-}
    local depends dependency

    case ${module_state[$name]:-} in
        done) return 0 ;;
        visiting)
            echo "$prog: module dependency cycle through $name" >&2
            exit 1
            ;;
    esac

    if [[ -z $path ]]; then
        if grep -q "/$1.ko\$" "$modules_src/modules.builtin"; then
            module_state[$name]="done"
            return 0
        fi
        echo "$prog: module $1 is neither in $modules_src/kernel nor built in" >&2
        exit 1
    fi

    module_state[$name]="visiting"
    depends=$(readelf -p .modinfo "$modules_src/$path" | sed -n 's/.*depends=//p')
    for dependency in ${depends//,/ }; do
        add_module "$dependency"
    done
    module_state[$name]="done"
    load_order+=("$path")
}

read -r -a extra_modules <<<"${BERTH_VM_EXTRA_MODULES:-}"
for module in "${default_modules[@]}" "${extra_modules[@]}"; do
    add_module "$module"
done

modules_dst=$staging/lib/modules/$version
mkdir -p "$modules_dst"
cp "$modules_src/modules.builtin" "$modules_src/modules.order" "$modules_dst/"
: >"$staging/etc/berth/modules"
for path in "${load_order[@]}"; do
    mkdir -p "$modules_dst/$(dirname "$path")"
    cp "$modules_src/$path" "$modules_dst/$path"
    echo "$path" >>"$staging/etc/berth/modules"
done

# A modules.dep for the modules packed here, so busybox modprobe can load them by name
# in the guest. Each line lists a module's whole dependency closure, which modprobe
# loads from the last entry to the first, so the closure is written in reverse load order.
declare -A closure=()
: >"$modules_dst/modules.dep"
for path in "${load_order[@]}"; do
    depends=$(readelf -p .modinfo "$modules_src/$path" | sed -n 's/.*depends=//p')
    deps=()
    for dependency in ${depends//,/ }; do
        dependency=${dependency//-/_}
        # shellcheck disable=SC2206 # the closure is a space-separated list of paths
        deps+=("${module_path[$dependency]:-}" ${closure[$dependency]:-})
    done
    unique=()
    for dep in "${load_order[@]}"; do
        if [[ " ${deps[*]} " == *" $dep "* ]]; then
            unique=("$dep" "${unique[@]}")
        fi
    done
    name=$(basename "$path" .ko)
    closure[${name//-/_}]="${unique[*]}"
    echo "$path:${unique[*]:+ ${unique[*]}}" >>"$modules_dst/modules.dep"
done

# --- /init and the test bundle -------------------------------------------------------

cp "$here/init.sh" "$staging/init"
chmod 0755 "$staging/init"

bundle_script=$workspace/ci/busybox-bundle.sh
if [[ -x $bundle_script ]]; then
    "$bundle_script" "$staging/bundle" >/dev/null
else
    echo "$prog: $bundle_script not found; the image has no /bundle" >&2
fi

# The kernel opens /dev/console for /init before anything mounts devtmpfs.
if [[ $(id -u) -eq 0 ]]; then
    mknod -m 0600 "$staging/dev/console" c 5 1
else
    echo "$prog: not root, so no /dev/console node: early kernel output before" \
        "/init mounts devtmpfs has no console" >&2
fi

# --- the archive ---------------------------------------------------------------------

# Fixed mtimes, owners and file order make the archive depend only on its inputs.
epoch=${SOURCE_DATE_EPOCH:-0}
find "$staging" -exec touch -h -d "@$epoch" {} +

archive=$outdir/$archive_name
rm -f "$outdir/initramfs.cpio" "$outdir/initramfs.cpio.gz"

(
    cd "$staging"
    find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z |
        cpio --null --create --format=newc --owner=0:0 --reproducible --quiet
) >"$archive.tmp"
if [[ $archive == *.gz ]]; then
    gzip -n -6 <"$archive.tmp" >"$archive"
    rm -f "$archive.tmp"
else
    mv "$archive.tmp" "$archive"
fi

echo "$prog: kernel $version, ${#load_order[@]} modules, $(du -h "$archive" | cut -f1): $archive"
