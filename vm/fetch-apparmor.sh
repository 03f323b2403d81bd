#!/usr/bin/env bash
# Download Debian's apparmor package into OUTDIR and unpack it there without installing
# it, so that the VM tests can compile AppArmor profiles on the host with its
# apparmor_parser. Nothing of the package is installed or started on the host, and the
# host kernel needs no AppArmor, because the tests compile with -Q (no kernel load).
#
# Usage: vm/fetch-apparmor.sh OUTDIR
#
# Results:
#   OUTDIR/debs/apparmor_*.deb      the downloaded package
#   OUTDIR/root/                    the package unpacked with dpkg-deb -x
#   OUTDIR/apparmor_parser          a symlink to root/sbin/apparmor_parser
#   OUTDIR/features                 a symlink to the policy feature set the package pins
#                                   (root/usr/share/apparmor-features/features)
#   OUTDIR/apparmor-package         the package name and version that was unpacked
#
# The package is the version apt installs. Once a .deb is in OUTDIR/debs, later runs
# reuse it and change nothing; delete OUTDIR to take a newer version.
set -euo pipefail

prog=vm/fetch-apparmor.sh

if [[ $# -ne 1 || -z $1 ]]; then
    echo "usage: $prog OUTDIR" >&2
    exit 2
fi
outdir=$1
package=apparmor

for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null; then
        echo "$prog: $tool not found; install it by hand" >&2
        exit 1
    fi
done

mkdir -p "$outdir/debs"
outdir=$(cd "$outdir" && pwd)

deb=$(find "$outdir/debs" -maxdepth 1 -name 'apparmor_*.deb' | sort | tail -n 1)
if [[ -z $deb ]]; then
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
    deb=$(find "$outdir/debs" -maxdepth 1 -name 'apparmor_*.deb' | sort | tail -n 1)
    if [[ -z $deb ]]; then
        echo "$prog: apt-get download $package left no .deb in $outdir/debs" >&2
        exit 1
    fi
fi
package_id="$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"

parser=$outdir/root/sbin/apparmor_parser
features=$outdir/root/usr/share/apparmor-features/features

if [[ $(cat "$outdir/apparmor-package" 2>/dev/null) != "$package_id" ]]; then
    echo "$prog: unpacking $(basename "$deb")"
    rm -rf --one-file-system "$outdir/root" "$outdir/apparmor_parser" "$outdir/features" \
        "$outdir/apparmor-package"
    dpkg-deb -x "$deb" "$outdir/root"
fi

if [[ ! -x $parser ]]; then
    echo "$prog: $(basename "$deb") has no executable sbin/apparmor_parser" >&2
    exit 1
fi
if [[ ! -s $features ]]; then
    echo "$prog: $(basename "$deb") has no feature set at" \
        "usr/share/apparmor-features/features" >&2
    exit 1
fi

# The parser is linked against the host's libraries, so a run shows that they are all
# present. --config-file /dev/null keeps it from looking for /etc/apparmor/parser.conf,
# which only an installed package has.
if ! version=$("$parser" --config-file /dev/null --version 2>&1); then
    echo "$prog: $parser does not run on this host:" >&2
    echo "$version" >&2
    ldd "$parser" >&2 || true
    exit 1
fi

ln -sfn root/sbin/apparmor_parser "$outdir/apparmor_parser"
ln -sfn root/usr/share/apparmor-features/features "$outdir/features"
echo "$package_id" >"$outdir/apparmor-package"
echo "$prog: $(head -n 1 <<<"$version") ready: $outdir/apparmor_parser"
