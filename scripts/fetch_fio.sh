#!/bin/sh
# Fetch fio's own zoned-device test suite (t/zbd/test-zbd-support) from
# Debian's source archive into .cache/fio/, for tests/kernel/test_zbd_vm.py
# and `make conformance` (docs/zns.md).  Debian's fio package ships no t/, and
# CI reaches only Debian's mirrors and PyPI, so the suite comes from the
# source packages' upstream tarballs (fio_X.orig.tar.gz).  Two versions:
#
#   installed  the upstream version of the installed fio package (bookworm:
#              3.33); its t/zbd runs the installed /usr/bin/fio.
#   newest     the newest fio in Debian's trixie and sid source lists whose
#              tarball the mirror serves (fio reads max_active_zones from 3.36 on);
#              built here with `./configure --disable-native`, because a
#              binary tuned to this CPU dies with SIGILL on the VM's emulated one.
#
# apt runs with a private sources list and state under .cache/fio/apt (deb-src
# for bookworm, trixie and sid on the mirror the host's apt uses); the host's
# apt configuration is not touched.  Each tarball is checked against the
# SHA256 the signed Sources index gives.  Idempotent: with both trees in place
# it prints their paths and exits.
#
# Layout produced:
#   .cache/fio/fio-<version>/          the unpacked source; ./fio is the binary
#                                      (a symlink to /usr/bin/fio for the installed one)
#   .cache/fio/installed, .cache/fio/newest   symlinks to those trees
#
# Environment:
#   BLOCKEMU_CACHE_DIR     cache root (default: <repo>/.cache)
#   BLOCKEMU_FIO_NEWEST    a version to use as "newest" instead (e.g. 3.39).  A
#                          tree already built at .cache/fio/fio-<version> (say
#                          from upstream's git tag, where the mirror no longer
#                          serves the tarball) is taken as it is.
set -eu

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${BLOCKEMU_CACHE_DIR:-$repo_root/.cache}
top=$cache_root/fio
apt_dir=$top/apt

die() { echo "fetch_fio.sh: $*" >&2; exit 1; }

installed=$(dpkg-query -W -f='${Version}' fio 2>/dev/null) || die "fio is not installed; run \`make setup\`"
installed=${installed#*:}
installed=${installed%-*}

# ready VERSION: the tree for VERSION is complete (its ./fio runs and says VERSION).
ready() {
    [ -f "$top/fio-$1/t/zbd/test-zbd-support" ] && [ -x "$top/fio-$1/fio" ] &&
        [ "$("$top/fio-$1/fio" --version 2>/dev/null)" = "fio-$1" ]
}

if [ -z "${BLOCKEMU_FIO_NEWEST:-}" ] && [ -L "$top/newest" ] && [ -L "$top/installed" ] &&
   [ "$(readlink "$top/installed")" = "fio-$installed" ] && ready "$installed" &&
   ready "$(readlink "$top/newest" | sed 's/^fio-//')"; then
    echo "$top/installed -> $(readlink "$top/installed")"
    echo "$top/newest -> $(readlink "$top/newest")"
    exit 0
fi

for tool in apt-get apt-cache dpkg-query sha256sum tar make gcc; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found; run \`make setup\`"
done

# The mirror the host's apt uses for Debian's main archive, so a machine
# behind its own mirror (CI) fetches from there.
mirror=$(apt-cache policy 2>/dev/null |
         awk '$3 ~ /^bookworm\/main/ && $2 ~ /^https?:/ {print $2; exit}')
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
{
    for suite in bookworm trixie sid; do
        echo "deb-src $mirror $suite main"
    done
} > "$apt_dir/sources.list"
# apt_private ARGS: apt-get/apt-cache with the private sources and state.
# Check-Valid-Until=false: a mirror that is a snapshot (CI's) serves Release
# files past their Valid-Until date (sid's lasts a week); their signatures
# are still checked.
apt_private() {
    tool=$1
    shift
    "$tool" -q -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache" \
        -o Dir::State::status=/dev/null -o Debug::NoLocking=1 -o Acquire::Check-Valid-Until=false "$@"
}
echo "fetch_fio.sh: reading fio's source versions from $mirror (bookworm, trixie, sid)" >&2
apt_private apt-get update >/dev/null || die "apt-get update with $apt_dir/sources.list failed"

# fetch VERSION: download and unpack fio_VERSION.orig.tar.gz into $top/fio-VERSION.
# Returns 1 if no source package of that version is in the lists or the
# mirror does not serve its tarball.
fetch() {
    version=$1
    debian_version=$(apt_private apt-cache showsrc fio 2>/dev/null |
                     awk -v v="$version" '$1 == "Version:" && index($2, v "-") == 1 {print $2; exit}')
    [ -n "$debian_version" ] || return 1
    line=$(apt_private apt-get --print-uris source "fio=$debian_version" 2>/dev/null |
           grep "fio_$version.orig.tar" | grep -v "\.asc" | head -n 1)
    [ -n "$line" ] || return 1
    url=$(echo "$line" | awk '{print $1}' | tr -d "'")
    file=$(echo "$line" | awk '{print $2}')
    sha=$(echo "$line" | awk '{print $4}' | sed 's/^SHA256://')
    archive=$apt_dir/cache/archives/$file
    if [ ! -f "$archive" ] || ! echo "$sha  $archive" | sha256sum -c --status; then
        rm -f "$archive.part"
        /usr/bin/python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
            "$url" "$archive.part" 2>/dev/null || { echo "fetch_fio.sh: $url: not served" >&2; return 1; }
        echo "$sha  $archive.part" | sha256sum -c --status || die "$url: SHA256 differs from the Sources index"
        mv "$archive.part" "$archive"
    fi
    rm -rf "$top/fio-$version" "$top/.unpack"
    mkdir -p "$top/.unpack"
    tar -xf "$archive" -C "$top/.unpack"
    mv "$top/.unpack"/fio-* "$top/fio-$version"
    rmdir "$top/.unpack"
    [ -f "$top/fio-$version/t/zbd/test-zbd-support" ] || die "$file has no t/zbd/test-zbd-support"
}

if ! ready "$installed"; then
    fetch "$installed" || die "no source tarball for the installed fio $installed on $mirror"
    ln -sfn "$(command -v fio)" "$top/fio-$installed/fio"
    ready "$installed" || die "$(command -v fio) does not report fio-$installed"
fi
ln -sfn "fio-$installed" "$top/installed"

if [ -n "${BLOCKEMU_FIO_NEWEST:-}" ]; then
    candidates=$BLOCKEMU_FIO_NEWEST
else
    candidates=$(apt_private apt-cache showsrc fio 2>/dev/null | awk '$1 == "Version:" {print $2}' |
                 sed 's/^[0-9]*://; s/-[^-]*$//' | sort -Vr -u)
fi
newest=
for version in $candidates; do
    if ready "$version"; then
        newest=$version
        break
    fi
    if fetch "$version"; then
        echo "fetch_fio.sh: building fio $version (./configure --disable-native)" >&2
        (cd "$top/fio-$version" && ./configure --disable-native >configure.log 2>&1 &&
         make -j"$(nproc)" fio >make.log 2>&1) ||
            die "building fio $version failed; see $top/fio-$version/configure.log and make.log"
        ready "$version" || die "$top/fio-$version/fio does not report fio-$version"
        newest=$version
        break
    fi
done
[ -n "$newest" ] || die "none of fio $(echo "$candidates" | tr '\n' ' ')is served by $mirror"
ln -sfn "fio-$newest" "$top/newest"
echo "$top/installed -> fio-$installed"
echo "$top/newest -> fio-$newest"
