#!/bin/sh
# Fetch the Linux 6.12 user-space API headers (include/uapi) from Debian's
# linux-headers-6.12.*-common package into .cache/linux-uapi/, so the unit
# tests can check blockemu's ctypes copies of ublk_cmd.h, io_uring.h and
# blkzoned.h against the real thing (tests/unit/test_ublk_uapi.py).
# Idempotent; nothing is installed on the host.
#
# The package matches the kernel scripts/fetch_kernel.sh unpacked (its
# .cache/kernel/release, e.g. 6.12.117+deb12-amd64 -> linux-headers-6.12.117+deb12-common);
# without that kernel, the newest 6.12 common headers apt knows of.
#
# Layout produced:  .cache/linux-uapi/include/uapi/linux/ublk_cmd.h ...
#                   .cache/linux-uapi/package      the package it came from
set -eu

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${BLOCKEMU_CACHE_DIR:-$repo_root/.cache}
target=$cache_root/linux-uapi

if [ -s "$target/package" ] && [ -f "$target/include/uapi/linux/ublk_cmd.h" ]; then
    echo "$target/include/uapi"
    exit 0
fi

package=
if [ -s "$cache_root/kernel/release" ]; then
    release=$(cat "$cache_root/kernel/release")
    package=linux-headers-${release%-amd64}-common
fi
if [ -z "$package" ] || ! apt-cache show "$package" >/dev/null 2>&1; then
    package=$(apt-cache search --names-only '^linux-headers-6\.12\.[0-9.]+\+deb[0-9]+-common$' \
              | awk '{print $1}' | sort -V | tail -n 1)
fi
if [ -z "$package" ]; then
    echo "fetch_ublk_header.sh: no linux-headers-6.12.*-common in apt's lists;" \
         "enable bookworm-security and run 'apt-get update'" >&2
    exit 1
fi

staging=$cache_root/.uapi.$$
rm -rf "$staging"
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/debs"
(cd "$staging/debs" && apt-get download "$package" >&2)
dpkg-deb -x "$staging"/debs/*.deb "$staging/root"
uapi=$(ls -d "$staging"/root/usr/src/linux-headers-*-common/include/uapi | head -n 1)
if [ ! -f "$uapi/linux/ublk_cmd.h" ]; then
    echo "fetch_ublk_header.sh: $package has no include/uapi/linux/ublk_cmd.h" >&2
    exit 1
fi
rm -rf "$target"
mkdir -p "$target/include"
mv "$uapi" "$target/include/uapi"
printf '%s\n' "$package" > "$target/package"
echo "$target/include/uapi"
