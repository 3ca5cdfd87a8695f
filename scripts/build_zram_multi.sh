#!/bin/sh
# Build Linux's own zram module with CONFIG_ZRAM_MULTI_COMP for the guest
# kernel in .cache/kernel/, so that `blockemu experiment zram-fidelity` can
# compare recompression (recomp_algorithm, recompress) with the kernel's.
# Debian's 6.12 kernel ships zram without it.
#
# From the Debian archive, for the release in .cache/kernel/release:
#   linux-source-6.12 (only drivers/block/zram is unpacked from it),
#   linux-headers-<release>, linux-headers-<ver>-common, linux-kbuild-<ver>,
# unpacked under .cache/zram-multi/ (nothing is installed on the host), then
#   make -C <headers> M=<zram sources> with -DCONFIG_ZRAM_MULTI_COMP=1.
# Result: .cache/zram-multi/zram.ko (the guest loads it instead of its own,
# after `modprobe zram` has loaded its dependencies).  Idempotent.
set -eu

repo_root=$(cd "$(dirname "$0")/.." && pwd)
cache_root=${BLOCKEMU_CACHE_DIR:-$repo_root/.cache}
out=$cache_root/zram-multi
release_file=$cache_root/kernel/release
if [ ! -s "$release_file" ]; then
    echo "build_zram_multi.sh: no guest kernel in $cache_root/kernel; run scripts/fetch_kernel.sh first" >&2
    exit 1
fi
release=$(cat "$release_file")                       # 6.12.118+deb12-amd64
if [ -f "$out/zram.ko" ] && [ "$(cat "$out/release" 2>/dev/null)" = "$release" ]; then
    echo "$out/zram.ko"
    exit 0
fi
abi=${release%-amd64}                                # 6.12.118+deb12
series=$(echo "$release" | cut -d. -f1-2)            # 6.12
version=$(apt-cache show "linux-headers-$release" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
if [ -z "$version" ]; then
    echo "build_zram_multi.sh: apt knows no linux-headers-$release; run 'apt-get update'" >&2
    exit 1
fi
echo "build_zram_multi.sh: zram with CONFIG_ZRAM_MULTI_COMP for $release (Debian $version)" >&2
rm -rf "$out"
mkdir -p "$out/debs" "$out/root"
(cd "$out/debs" && apt-get download -q "linux-source-$series=$version" "linux-headers-$release=$version" \
    "linux-headers-$abi-common=$version" "linux-kbuild-$abi=$version" >/dev/null 2>&1) || {
    echo "build_zram_multi.sh: apt-get download failed for linux-source-$series / linux-headers-$release" >&2
    exit 1
}
for deb in "$out"/debs/*.deb; do
    dpkg-deb -x "$deb" "$out/root"
done
# The headers' Makefile includes the -common tree's by its installed path
# (/usr/src/...): point it at the unpacked one.
echo "include $out/root/usr/src/linux-headers-$abi-common/Makefile" > "$out/root/usr/src/linux-headers-$release/Makefile"
tar -xJf "$out/root/usr/src/linux-source-$series.tar.xz" -C "$out" "linux-source-$series/drivers/block/zram"
mv "$out/linux-source-$series/drivers/block/zram" "$out/src"
echo 'ccflags-y += -DCONFIG_ZRAM_MULTI_COMP=1' >> "$out/src/Makefile"
# No BTF for the module: pahole is not needed, and nothing reads it.
make -s -C "$out/root/usr/src/linux-headers-$release" M="$out/src" CONFIG_DEBUG_INFO_BTF_MODULES= modules >&2
cp "$out/src/zram.ko" "$out/zram.ko"
rm -rf "$out/debs" "$out/root" "$out/linux-source-$series"
echo "$release" > "$out/release"
echo "$out/zram.ko"
