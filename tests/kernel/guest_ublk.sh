#!/bin/sh
# Runs INSIDE the VM (`blockemu vm run -- sh tests/kernel/guest_ublk.sh [PHASES]`):
# blockemu's ublk server (blockemu serve CONFIG --ublk) under Linux 6.12.
#
# Phases (default: all; pass a subset as arguments):
#   conventional  UFS model as /dev/ublkbN: fio 4 KiB random writes verified
#                 with crc32c on the raw disk, ext4 mkfs/mount/write/fsck,
#                 then SIGTERM: the disk and /dev/ublkcN must be gone.
#   kill9         a server killed with SIGKILL: I/O must fail, not hang, the
#                 disk must disappear, and `python -m blockemu.frontends.ublk
#                 delete N` frees the id.
#   zoned         ZNS model: sysfs says host-managed with the config's limits,
#                 `blkzone report` (saved for the host test to compare),
#                 blkzone open/close/finish/reset, a write off the write
#                 pointer fails, fio --zonemode=zbd --verify=crc32c on the raw disk.
#   f2fs          mkfs.f2fs -m on the 8 GiB ZNS disk with zone capacity = zone
#                 size, fio verify, umount, fsck.f2fs clean.  F2FS_ZONE_CAPACITY_MIB=48
#                 (the config's ZCAP < ZSZE) mounts and verifies too, but fsck.f2fs
#                 1.15 (Debian 12) then reports "free segment_count matched with CP
#                 [Fail]" after a clean umount; not yet known whose fault that is.
# Prints "UBLK-VM <phase>: PASS" per phase and "UBLK-VM: PASS" if all passed.
set -u

repo=$(cd "$(dirname "$0")/../.." && pwd)
py=$repo/.venv/bin/python
results=${BLOCKEMU_RESULTS:-$(mktemp -d)}
work=$(mktemp -d)
cd "$work"  # fio's verify state files land in the cwd; the repo is read-only in the guest
phases=${*:-conventional kill9 zoned f2fs}
failures=0
start=$(date +%s)
say() { echo "UBLK-VM [$(( $(date +%s) - start )) s] $*"; }

modprobe ublk_drv || { say "modprobe ublk_drv failed"; exit 1; }

# start_server LOG CONFIG [serve args...]: sets server_pid and dev.
start_server() {
    log=$1
    shift
    "$py" -m blockemu serve "$@" --ublk --http '' >"$log" 2>&1 &
    server_pid=$!
    i=0
    while [ $i -lt 900 ]; do  # 3 minutes: Python starts slowly under emulation
        dev=$(sed -n 's/^  ublk: *//p' "$log")
        if [ -n "$dev" ] && [ -b "$dev" ]; then
            say "server $server_pid serves $dev"
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.2
        i=$((i + 1))
    done
    say "server did not start:"
    cat "$log"
    return 1
}

# stop_server: SIGTERM, wait, and check that the device is gone.
stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid"
    rc=$?
    n=${dev#/dev/ublkb}
    if [ "$rc" -ne 0 ]; then say "server exited $rc"; return 1; fi
    if [ -e "/sys/block/ublkb$n" ] || [ -e "/dev/ublkc$n" ]; then
        say "ublkb$n or ublkc$n still exists after SIGTERM"
        return 1
    fi
    say "SIGTERM: server exited 0, ublkb$n and ublkc$n are gone"
}

phase_conventional() {
    start_server "$results/server-ufs.log" "$repo/configs/ufs41.toml" --set device.capacity_mib=512 || return 1
    q=/sys/block/${dev#/dev/}/queue
    say "queue: lbs=$(cat $q/logical_block_size) pbs=$(cat $q/physical_block_size)" \
        "max_sectors_kb=$(cat $q/max_sectors_kb) discard_max=$(cat $q/discard_max_bytes)" \
        "wzeroes_max=$(cat $q/write_zeroes_max_bytes) zoned=$(cat $q/zoned) fua=$(cat $q/fua)" \
        "cache=$(cat $q/write_cache)"
    fio --name=raw --filename="$dev" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bs=4k \
        --size=32M --verify=crc32c --verify_fatal=1 --verify_state_save=0 --output-format=json \
        --output="$results/fio-ublk-ufs-raw.json" || { say "fio verify on $dev failed"; return 1; }
    say "fio randwrite+verify on $dev: ok"
    mkfs.ext4 -q -F "$dev" || return 1
    mkdir -p "$work/mnt"
    mount "$dev" "$work/mnt" || return 1
    dd if=/dev/urandom of="$work/mnt/file" bs=1M count=16 status=none
    sum=$(md5sum <"$work/mnt/file")
    fstrim -v "$work/mnt" || say "fstrim failed (discard)"
    umount "$work/mnt"
    e2fsck -fn "$dev" >"$results/e2fsck.log" 2>&1 || { say "e2fsck not clean"; return 1; }
    mount "$dev" "$work/mnt" || return 1
    [ "$(md5sum <"$work/mnt/file")" = "$sum" ] || { say "file changed across remount"; return 1; }
    umount "$work/mnt"
    say "ext4 mkfs/mount/write/fstrim/fsck/reread: ok"
    stop_server
}

phase_kill9() {
    start_server "$results/server-kill9.log" "$repo/configs/ufs41.toml" --set device.capacity_mib=128 || return 1
    n=${dev#/dev/ublkb}
    kill -KILL "$server_pid"
    wait "$server_pid" 2>/dev/null
    timeout 60 dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct status=none
    rc=$?
    if [ "$rc" -eq 124 ]; then say "I/O hung after SIGKILL"; return 1; fi
    i=0
    while [ -e "/sys/block/ublkb$n" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    if [ -e "/sys/block/ublkb$n" ]; then say "ublkb$n still there 30 s after SIGKILL"; return 1; fi
    say "SIGKILL: I/O failed (dd rc=$rc), ublkb$n removed by the kernel"
    "$py" -m blockemu.frontends.ublk delete "$n" || return 1
    if [ -e "/dev/ublkc$n" ]; then say "ublkc$n still there after delete"; return 1; fi
    say "delete $n freed the id"
}

zone_bytes=$((64 * 1024 * 1024))
phase_zoned() {
    # 32 zones of 64 MiB (48 MiB capacity), the first 4 conventional; 14
    # open/active (Linux reports no limit when it is >= the sequential zones).
    start_server "$results/server-zns.log" "$repo/configs/zns.toml" --set device.capacity_mib=2048 || return 1
    name=${dev#/dev/}
    q=/sys/block/$name/queue
    for attr in zoned nr_zones chunk_sectors max_open_zones max_active_zones zone_append_max_bytes \
                logical_block_size; do
        echo "$attr=$(cat $q/$attr)"
    done | tee "$results/zoned-sysfs.txt"
    [ "$(cat $q/zoned)" = host-managed ] || { say "not host-managed"; return 1; }
    blkzone report "$dev" >"$results/blkzone-before.txt" || return 1
    # Zone 5 (sector 5 * 131072): write 1 MiB, then a write off its write pointer must fail.
    z5=$((5 * zone_bytes))
    dd if=/dev/urandom of="$dev" bs=1M count=1 seek=$((z5 / 1048576)) oflag=direct status=none \
        || { say "sequential write at zone 5 start failed"; return 1; }
    if dd if=/dev/zero of="$dev" bs=4k count=1 seek=$(( (z5 + 4 * 1048576) / 4096 )) oflag=direct status=none; then
        say "a write off zone 5's write pointer succeeded"; return 1
    fi
    blkzone open -o $((6 * zone_bytes / 512)) -c 1 "$dev" || return 1
    blkzone close -o $((5 * zone_bytes / 512)) -c 1 "$dev" || return 1
    blkzone finish -o $((7 * zone_bytes / 512)) -c 1 "$dev" || return 1
    blkzone report "$dev" >"$results/blkzone-after-ops.txt" || return 1
    blkzone reset "$dev" || return 1
    blkzone report "$dev" >"$results/blkzone-after-reset.txt" || return 1
    fio --name=zbd --filename="$dev" --direct=1 --zonemode=zbd --ioengine=psync --rw=write --bs=64k \
        --offset=$((4 * zone_bytes)) --size=$((6 * zone_bytes)) --verify=crc32c --verify_fatal=1 --verify_state_save=0 \
        --output-format=json --output="$results/fio-ublk-zbd.json" || { say "fio zbd verify failed"; return 1; }
    fio --name=zbdrand --filename="$dev" --direct=1 --zonemode=zbd --ioengine=libaio --iodepth=8 \
        --rw=randwrite --bs=16k --offset=$((10 * zone_bytes)) --size=$((6 * zone_bytes)) --io_size=64M \
        --max_open_zones=6 --verify=crc32c --verify_fatal=1 --verify_state_save=0 --output-format=json \
        --output="$results/fio-ublk-zbd-rand.json" || { say "fio zbd random verify failed"; return 1; }
    blkzone report "$dev" >"$results/blkzone-after-fio.txt"
    say "zoned: sysfs, blkzone ops, refused write, fio zbd verify: ok"
    stop_server
}

phase_f2fs() {
    # The config's 8 GiB: F2FS reserves whole zones for GC (1.5 GiB of a 2 GiB disk).
    zcap=${F2FS_ZONE_CAPACITY_MIB:-64}
    start_server "$results/server-f2fs.log" "$repo/configs/zns.toml" --set zns.zone_capacity_mib="$zcap" || return 1
    mkfs.f2fs -f -m "$dev" >"$results/mkfs-f2fs.log" 2>&1 || { cat "$results/mkfs-f2fs.log"; return 1; }
    mkdir -p "$work/f2fs"
    mount -t f2fs "$dev" "$work/f2fs" || return 1
    fio --directory="$work/f2fs" --name=f2fs --size=64M --rw=randwrite --bs=4k --ioengine=libaio \
        --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 --verify_state_save=0 --output-format=json \
        --output="$results/fio-ublk-f2fs.json" || { say "fio on f2fs failed"; return 1; }
    umount "$work/f2fs"
    fsck.f2fs "$dev" >"$results/fsck-f2fs.log" 2>&1 || { tail -20 "$results/fsck-f2fs.log"; return 1; }
    say "f2fs on zoned ublk: mkfs -m, fio verify, fsck: ok"
    stop_server
}

for phase in $phases; do
    say "== $phase"
    if "phase_$phase"; then
        say "$phase: PASS"
    else
        say "$phase: FAIL"
        failures=$((failures + 1))
        # Unmount first: the server's exit removes the disk under a mounted filesystem otherwise.
        for m in "$work/mnt" "$work/f2fs"; do mountpoint -q "$m" && umount "$m"; done
        if [ -n "${server_pid:-}" ] && kill -0 "$server_pid" 2>/dev/null; then
            kill -TERM "$server_pid"; wait "$server_pid"
        fi
        dmesg | grep -i -E "ublk|zone|blk_" | tail -30
    fi
done
dmesg >"$results/dmesg.txt"
[ "$failures" -eq 0 ] && say "PASS" && exit 0
say "$failures phase(s) failed"
exit 1
