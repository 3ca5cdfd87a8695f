#!/bin/sh
# Runs INSIDE the VM on a blockemu zram device ($BLOCKEMU_DEV0):
#   1. swap on it, then a memory-pressure workload that allocates 1.5x its
#      memory cgroup's limit and verifies every page it wrote (no deadlock,
#      no loss);
#   2. ext4 on it with fio's crc32c verification, and a clean e2fsck.
# Prints "ZRAM-VM: PASS" at the end; exits non-zero at the first failure.
set -eu

dev=${BLOCKEMU_DEV0:?no device attached}
results=${BLOCKEMU_RESULTS:?}
here=$(cd "$(dirname "$0")" && pwd)

echo "== mkswap/swapon $dev"
mkswap "$dev" >/dev/null
swapon -p 100 "$dev"
grep "$dev" /proc/swaps

echo "== memory pressure in a memory cgroup"
# The workload runs in a memory cgroup limited to 40% of RAM and allocates
# 1.5x its limit, so the kernel must swap it out to the device, as Android's
# per-app cgroups do.  The server stays outside: reclaim never has to wait on
# a server that is itself short of memory (the deadlock an in-kernel zram
# cannot have and a user-space one must be kept out of).
[ -f /sys/fs/cgroup/cgroup.controllers ] || mount -t cgroup2 none /sys/fs/cgroup
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
group=/sys/fs/cgroup/zram-pressure
mkdir -p "$group"
ram_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
limit_kib=$((ram_kib * 40 / 100))
echo "${limit_kib}K" > "$group/memory.max"
sh -c "echo \$\$ > $group/cgroup.procs && exec python3 '$here/guest_zram_pressure.py' --bytes $((limit_kib * 1024 * 3 / 2))" \
    | tee "$results/pressure.txt"
swapoff "$dev"
echo "== swapoff done"

echo "== ext4 on $dev"
work=$(mktemp -d)
mkfs.ext4 -q -F "$dev"
echo "== mkfs.ext4 done"
mount "$dev" "$work"
fio --directory="$work" --name=zram-ext4 --rw=randwrite --bs=4k --size=96M --ioengine=libaio \
    --iodepth=8 --direct=1 --verify=crc32c --verify_fatal=1 --verify_state_save=0 \
    --output-format=json --output="$results/fio-zram-ext4.json"
umount "$work"
e2fsck -fn "$dev"
echo "ZRAM-VM: PASS"
