#!/usr/bin/env bash
# Download Debian's amd64 kernel package into OUTDIR, unpack it there without installing
# it on the host, and extract the uncompressed ELF vmlinux that QEMU boots with -kernel.
#
# Usage: vm/fetch-kernel.sh OUTDIR
#
# Results:
#   OUTDIR/debs/linux-image-*.deb   the downloaded package
#   OUTDIR/root/                    the package unpacked with dpkg -x (boot/, lib/modules/)
#   OUTDIR/vmlinuz                  the compressed kernel as Debian ships it
#   OUTDIR/vmlinux                  the uncompressed ELF kernel
#   OUTDIR/kernel-version           the module directory name, for example 6.1.0-57-amd64
#   OUTDIR/kernel-package           the package name and version that was unpacked
#
# The package is the one that `linux-image-amd64` depends on in the host's apt lists.
# Set BERTH_KERNEL_PACKAGE (for example linux-image-6.1.0-57-amd64) to pin another one.
# A second run with the same package changes nothing.
set -euo pipefail

prog=vm/fetch-kernel.sh

if [[ $# -ne 1 || -z $1 ]]; then
    echo "usage: $prog OUTDIR" >&2
    exit 2
fi
outdir=$1

for tool in apt-get apt-cache dpkg-deb xz readelf; do
    if ! command -v "$tool" >/dev/null; then
        echo "$prog: $tool not found; run ci/deps.sh or install it by hand" >&2
        exit 1
    fi
done

meta_package_depends() {
    local fields
    fields=$(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null || true)
    sed -n 's/^Depends: *\(linux-image-[^ ,]*\).*/\1/p' <<<"$fields" | head -n 1
}

# Print the versioned image package that the linux-image-amd64 meta package depends on,
# for the version apt would install.
resolve_package() {
    if [[ -n ${BERTH_KERNEL_PACKAGE:-} ]]; then
        echo "$BERTH_KERNEL_PACKAGE"
        return
    fi

    local depends
    depends=$(meta_package_depends)
    # A fresh machine may have empty apt lists, so refresh them once before giving up.
    if [[ -z $depends && $(id -u) -eq 0 ]]; then
        echo "$prog: linux-image-amd64 not in the apt lists; running apt-get update" >&2
        apt-get update >&2
        depends=$(meta_package_depends)
    fi
    if [[ -z $depends ]]; then
        echo "$prog: linux-image-amd64 not found in the apt lists; run apt-get update as root" >&2
        exit 1
    fi
    echo "$depends"
}

# Print the byte offset of the first xz stream header (FD 37 7A 58 5A 00) in FILE.
xz_offset() {
    local matches
    # -m 1 stops after the first matching line, but one binary "line" can hold several.
    matches=$(LC_ALL=C grep -obUaP -m 1 '\xfd7zXZ\x00' "$1" | cut -d: -f1)
    echo "${matches%%$'\n'*}"
}

package=$(resolve_package)
mkdir -p "$outdir/debs"
outdir=$(cd "$outdir" && pwd)

deb=$(find "$outdir/debs" -maxdepth 1 -name "${package}_*.deb" | sort | tail -n 1)
if [[ -z $deb ]]; then
    echo "$prog: downloading $package"
    # apt-get download writes to the current directory.
    (cd "$outdir/debs" && apt-get download "$package")
    deb=$(find "$outdir/debs" -maxdepth 1 -name "${package}_*.deb" | sort | tail -n 1)
    if [[ -z $deb ]]; then
        echo "$prog: apt-get download $package left no .deb in $outdir/debs" >&2
        exit 1
    fi
fi
package_id="$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"

if [[ -s $outdir/vmlinux && -s $outdir/kernel-version &&
    $(cat "$outdir/kernel-package" 2>/dev/null) == "$package_id" ]]; then
    echo "$prog: $package_id already unpacked in $outdir"
    exit 0
fi

echo "$prog: unpacking $(basename "$deb")"
rm -rf --one-file-system "$outdir/root" "$outdir/vmlinux" "$outdir/vmlinuz" \
    "$outdir/kernel-version" "$outdir/kernel-package"
dpkg-deb -x "$deb" "$outdir/root"

versions=()
for dir in "$outdir"/root/lib/modules/*/; do
    versions+=("$(basename "$dir")")
done
if [[ ${#versions[@]} -ne 1 ]]; then
    echo "$prog: expected one module directory in $outdir/root/lib/modules, found ${#versions[@]}" >&2
    exit 1
fi
version=${versions[0]}

vmlinuz=$outdir/root/boot/vmlinuz-$version
if [[ ! -f $vmlinuz ]]; then
    echo "$prog: $vmlinuz not found in $(basename "$deb")" >&2
    exit 1
fi
cp "$vmlinuz" "$outdir/vmlinuz"

# The bzImage is a setup stub followed by an xz stream that contains the ELF kernel. Booting
# the ELF directly skips the in-guest decompression, which is slow under TCG.
offset=$(xz_offset "$outdir/vmlinuz")
if [[ -z $offset ]]; then
    echo "$prog: no xz stream found in $outdir/vmlinuz; this kernel uses another compression" >&2
    exit 1
fi
# xz stops reading at the end of the stream, so tail may die of SIGPIPE on the padding
# after it. That is expected; a truncated or corrupt stream still fails in xz.
{ tail -c +"$((offset + 1))" "$outdir/vmlinuz" || true; } |
    xz -dc --single-stream >"$outdir/vmlinux.tmp"

if ! readelf -h "$outdir/vmlinux.tmp" >/dev/null 2>&1; then
    echo "$prog: the data at offset $offset of $outdir/vmlinuz is not an ELF file" >&2
    rm -f "$outdir/vmlinux.tmp"
    exit 1
fi

# QEMU boots an ELF given to -kernel only through the PVH entry point, which the kernel
# announces in a Xen ELF note of type 0x12 (XEN_ELFNOTE_PHYS32_ENTRY).
# binutils 2.40 prints it as "Unknown note type: (0x00000012)".
notes=$(readelf -n "$outdir/vmlinux.tmp")
if ! grep -Eq 'Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+Unknown note type: \(0x00000012\)' <<<"$notes"; then
    echo "$prog: $outdir/vmlinux has no PVH entry note (Xen note 0x12); QEMU cannot boot it" \
        "with -kernel. Boot $outdir/vmlinuz instead." >&2
    rm -f "$outdir/vmlinux.tmp"
    exit 1
fi
mv "$outdir/vmlinux.tmp" "$outdir/vmlinux"

echo "$version" >"$outdir/kernel-version"
echo "$package_id" >"$outdir/kernel-package"
echo "$prog: kernel $version ready: $outdir/vmlinux"
