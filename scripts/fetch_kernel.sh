#!/bin/sh
# Fetch Debian's Linux 6.12 kernel (image + modules) into the project cache
# folder .cache/kernel/ so the VM harness (blockemu.vm) can boot it with
# virtme-ng.  Idempotent: a second run with the kernel already unpacked only
# prints the vmlinuz path.  Nothing is installed into the host's /boot or
# /lib/modules.
#
# Layout produced (relative to the repo root):
#   .cache/kernel/boot/vmlinuz-<release>              the kernel image
#   .cache/kernel/lib/modules/<release>/              its modules (+ depmod)
#   .cache/kernel/release                             "<release>" of the unpacked kernel
#
# virtme-ng finds the modules by itself: for `vng -r .cache/kernel/boot/vmlinuz-R`
# it walks up from the image to the first folder holding lib/modules/ and, in
# the guest, symlinks /lib/modules/R to that folder (seen through the shared
# host root).  That is why the image sits in a boot/ next to lib/.
#
# Environment:
#   BLOCKEMU_KERNEL_PACKAGE  exact package name to fetch (default: newest
#                            linux-image-6.12.*-amd64-unsigned apt knows of)
#   BLOCKEMU_CACHE_DIR       cache root (default: <repo>/.cache)
set -eu

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${BLOCKEMU_CACHE_DIR:-$repo_root/.cache}
kernel_dir=$cache_root/kernel

# Already unpacked?  The release file is written last, so its presence means
# the previous run completed.
if [ -z "${BLOCKEMU_KERNEL_PACKAGE:-}" ] && [ -s "$kernel_dir/release" ]; then
    release=$(cat "$kernel_dir/release")
    if [ -f "$kernel_dir/boot/vmlinuz-$release" ] && \
       [ -f "$kernel_dir/lib/modules/$release/modules.dep" ]; then
        echo "$kernel_dir/boot/vmlinuz-$release"
        exit 0
    fi
fi

for tool in apt-cache apt-get dpkg-deb depmod; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/sbin/$tool" ] && [ ! -x "/usr/sbin/$tool" ]; then
        echo "fetch_kernel.sh: '$tool' not found (apt-get install kmod dpkg apt)" >&2
        exit 1
    fi
done
# depmod lives in /sbin, which is not on a normal user's PATH.
PATH=$PATH:/usr/sbin:/sbin

package=${BLOCKEMU_KERNEL_PACKAGE:-}
if [ -z "$package" ]; then
    # Newest 6.12 generic (not -rt, not -cloud) image; sort -V orders the
    # ABI numbers (6.12.107 < 6.12.115) correctly.
    package=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9.]+\+deb[0-9]+-amd64-unsigned$' \
              | awk '{print $1}' | sort -V | tail -n 1)
fi
if [ -z "$package" ]; then
    echo "fetch_kernel.sh: no linux-image-6.12.*-amd64-unsigned in apt's lists;" \
         "enable bookworm-security (or trixie) and run 'apt-get update'" >&2
    exit 1
fi

mkdir -p "$kernel_dir/debs"
cd "$kernel_dir/debs"
if ! ls "$package"_*.deb >/dev/null 2>&1; then
    echo "fetch_kernel.sh: downloading $package" >&2
    apt-get download "$package" >&2
fi
deb=$(ls "$package"_*.deb | sort -V | tail -n 1)

# Unpack into a scratch folder first, then move into place, so an interrupted
# run never leaves a half-unpacked tree that looks complete.
staging=$kernel_dir/.unpack.$$
rm -rf "$staging"
trap 'rm -rf "$staging"' EXIT
dpkg-deb -x "$deb" "$staging"

# Debian bookworm ships modules in /lib/modules; newer (merged-/usr)
# packages use /usr/lib/modules.  Accept both.
if [ -d "$staging/lib/modules" ]; then
    modroot=$staging/lib/modules
else
    modroot=$staging/usr/lib/modules
fi
release=$(ls "$modroot" | head -n 1)
if [ -z "$release" ] || [ ! -f "$staging/boot/vmlinuz-$release" ]; then
    echo "fetch_kernel.sh: $deb has no boot/vmlinuz-<release> + modules" >&2
    exit 1
fi

mkdir -p "$kernel_dir/boot" "$kernel_dir/lib/modules"
rm -rf "$kernel_dir/lib/modules/$release"
mv "$modroot/$release" "$kernel_dir/lib/modules/$release"
for f in "$staging"/boot/*-"$release"; do
    mv "$f" "$kernel_dir/boot/"
done

# The .deb ships no modules.dep (the postinst generates it); without it
# modprobe in the guest finds nothing.  -b points depmod at the cache root.
depmod -a -b "$kernel_dir" "$release"

printf '%s\n' "$release" > "$kernel_dir/release"
# The unpacked tree is all that is needed; drop the ~100 MB .deb so a CI
# cache of .cache/kernel stays small.
rm -rf "$kernel_dir/debs"
echo "$kernel_dir/boot/vmlinuz-$release"
