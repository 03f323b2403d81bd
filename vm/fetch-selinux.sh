#!/usr/bin/env bash
# Download Debian's secilc and libsepol2 packages into OUTDIR and unpack them there
# without installing them, so that the VM tests can compile an SELinux policy written in
# CIL into a binary policy on the host. Nothing is installed on the host, and the host
# kernel needs no SELinux, because secilc only writes a file.
#
# Usage: vm/fetch-selinux.sh OUTDIR
#
# Results:
#   OUTDIR/debs/secilc_*.deb, OUTDIR/debs/libsepol2_*.deb   the downloaded packages
#   OUTDIR/root/                    both packages unpacked with dpkg-deb -x
#   OUTDIR/secilc                   a wrapper that runs root/usr/bin/secilc with the
#                                   unpacked libsepol.so.2 first on LD_LIBRARY_PATH
#   OUTDIR/selinux-packages         the package names and versions that were unpacked
#
# libsepol2 is unpacked too, even where the host has it installed, so that secilc always
# runs with the library of the same release. The packages are the versions apt
# installs. Once a .deb is in OUTDIR/debs, later runs reuse it and change nothing;
# delete OUTDIR to take newer versions.
set -euo pipefail

prog=vm/fetch-selinux.sh

if [[ $# -ne 1 || -z $1 ]]; then
    echo "usage: $prog OUTDIR" >&2
    exit 2
fi
outdir=$1
packages=(secilc libsepol2)

for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null; then
        echo "$prog: $tool not found; install it by hand" >&2
        exit 1
    fi
done

mkdir -p "$outdir/debs"
outdir=$(cd "$outdir" && pwd)

# Prints the newest downloaded .deb of package $1, or nothing.
find_deb() {
    find "$outdir/debs" -maxdepth 1 -name "$1_*.deb" | sort | tail -n 1
}

# Downloads package $1 into OUTDIR/debs unless a .deb of it is there already.
download() {
    local package=$1
    if [[ -n $(find_deb "$package") ]]; then
        return
    fi

    echo "$prog: downloading $package"
    # apt-get download writes to the current directory. A fresh machine may have empty
    # apt lists, so they are refreshed once before giving up.
    if ! (cd "$outdir/debs" && apt-get download "$package"); then
        if [[ $(id -u) -ne 0 ]]; then
            echo "$prog: apt-get download $package failed; run apt-get update as root" >&2
            exit 1
        fi
        echo "$prog: apt-get download $package failed; running apt-get update" >&2
        apt-get update >&2
        (cd "$outdir/debs" && apt-get download "$package")
    fi
    if [[ -z $(find_deb "$package") ]]; then
        echo "$prog: apt-get download $package left no .deb in $outdir/debs" >&2
        exit 1
    fi
}

debs=()
package_ids=""
for package in "${packages[@]}"; do
    download "$package"
    deb=$(find_deb "$package")
    debs+=("$deb")
    package_ids+="$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"$'\n'
done

if [[ $(cat "$outdir/selinux-packages" 2>/dev/null)$'\n' != "$package_ids" ]]; then
    echo "$prog: unpacking ${packages[*]}"
    rm -rf --one-file-system "$outdir/root" "$outdir/secilc" "$outdir/selinux-packages"
    for deb in "${debs[@]}"; do
        dpkg-deb -x "$deb" "$outdir/root"
    done
fi

compiler=$outdir/root/usr/bin/secilc
if [[ ! -x $compiler ]]; then
    echo "$prog: $(basename "${debs[0]}") has no executable usr/bin/secilc" >&2
    exit 1
fi
library=$(find "$outdir/root" -name libsepol.so.2 | sort | head -n 1)
if [[ -z $library ]]; then
    echo "$prog: $(basename "${debs[1]}") has no libsepol.so.2" >&2
    exit 1
fi
library_dir=$(dirname "${library#"$outdir/"}")

cat >"$outdir/secilc" <<EOF
#!/bin/sh
# Written by $prog: runs the unpacked secilc with the unpacked libsepol.
here=\$(dirname "\$(readlink -f "\$0")")
LD_LIBRARY_PATH="\$here/$library_dir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "\$here/root/usr/bin/secilc" "\$@"
EOF
chmod 755 "$outdir/secilc"

# secilc has no --version, and --help exits with status 1, so the check is that its
# usage text appears, which shows that the dynamic loader found every library.
if ! usage=$("$outdir/secilc" --help 2>&1) && ! grep -q '^Usage:' <<<"$usage"; then
    echo "$prog: $compiler does not run on this host:" >&2
    echo "$usage" >&2
    LD_LIBRARY_PATH=$outdir/$library_dir ldd "$compiler" >&2 || true
    exit 1
fi

printf '%s' "$package_ids" >"$outdir/selinux-packages"
echo "$prog: $(tr '\n' ' ' <"$outdir/selinux-packages")ready: $outdir/secilc"
