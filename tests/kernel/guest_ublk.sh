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
#                 blkzone open/close/finish/reset; writes the zone rules forbid
#                 (into the middle of a zone, into a full zone) fail with EIO and
#                 change neither the zones nor the data nor what the device
#                 counted (snapshots saved for the host test); fio
#                 --zonemode=zbd --verify=crc32c on the raw disk.
#   f2fs          mkfs.f2fs -m on the 8 GiB ZNS disk with zone capacity = zone
#                 size, fio verify, then churn (every other 8 MiB file deleted)
#                 and F2FS's own garbage collector (F2FS_IOC_GARBAGE_COLLECT),
#                 metrics saved around it, umount, fsck.f2fs clean, files reread.
#   f2fs_zcap     the same with the config's zone capacity (48 of 64 MiB) and
#                 exactly 2 conventional zones: mkfs, fio verify, fsck clean.
#                 With conventional zones inside F2FS's main area, ZCAP < ZSZE
#                 does not pass fsck.f2fs 1.15 (upstream disagreements, not the
#                 device's: see docs/ublk.md).
#   btrfs         btrfs in zoned mode (its data goes out as REQ_OP_ZONE_APPEND)
#                 on the ZNS disk without conventional zones: files written,
#                 remounted, compared, scrubbed (checksums at the addresses the
#                 device returned), btrfs check clean; metrics saved around it.
# Prints "UBLK-VM <phase>: PASS" per phase and "UBLK-VM: PASS" if all passed.
set -u

repo=$(cd "$(dirname "$0")/../.." && pwd)
py=$repo/.venv/bin/python
results=${BLOCKEMU_RESULTS:-$(mktemp -d)}
work=$(mktemp -d)
cd "$work"  # fio's verify state files land in the cwd; the repo is read-only in the guest
phases=${*:-conventional kill9 zoned f2fs f2fs_zcap btrfs zonefs}
failures=0
start=$(date +%s)
say() { echo "UBLK-VM [$(( $(date +%s) - start )) s] $*"; }

modprobe ublk_drv || { say "modprobe ublk_drv failed"; exit 1; }

# The servers' control API and metrics, on the guest's loopback (one server at a time).
http=127.0.0.1:9290

# get PATH FILE: GET the running server's PATH (/metrics, /api/v1/...) into $results/FILE.
get() {
    "$py" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://$http$1" >"$results/$2" || { say "GET $1 failed"; return 1; }
}

# start_server LOG CONFIG [serve args...]: sets server_pid and dev.
start_server() {
    log=$1
    shift
    "$py" -m blockemu serve "$@" --ublk --http "$http" >"$log" 2>&1 &
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

# snapshot NAME: zones 5-7 (blkzone and the control API), their data, and the device's metrics.
snapshot() {
    blkzone report -o $((5 * zone_bytes / 512)) -c 3 "$dev" >"$results/refused-blkzone-$1.txt" || return 1
    { dd if="$dev" bs=1M skip=$((5 * zone_bytes / 1048576)) count=8 iflag=direct status=none | md5sum
      dd if="$dev" bs=1M skip=$((7 * zone_bytes / 1048576)) count=1 iflag=direct status=none | md5sum
    } >"$results/refused-data-$1.txt"
    get /api/v1/zones "refused-zones-$1.json" && get /metrics "refused-metrics-$1.prom"
}

# Writes the zone rules forbid, after zone 5 got 1 MiB and was closed and zone 7
# was finished: 4 KiB in the middle of zone 5 (above its write pointer), and 4 KiB
# at the start of full zone 7.  Each must fail with EIO and change nothing.
# Linux 6.12 refuses the first itself (its zone write plug knows zone 5's write
# pointer); it has no plug for zone 7, so that write reaches the device, which
# refuses it (the host test checks the device's refusal counter).
refused_writes() {
    snapshot before || return 1
    for target in "zone 5 middle:$(( (5 * zone_bytes + 4 * 1048576) / 4096 ))" \
                  "full zone 7:$(( 7 * zone_bytes / 4096 ))"; do
        what=${target%%:*}
        if dd if=/dev/urandom of="$dev" bs=4k count=1 seek="${target#*:}" oflag=direct status=none \
                2>"$work/dd.err"; then
            say "a write into $what succeeded"; return 1
        fi
        grep -q "Input/output error" "$work/dd.err" || { say "write into $what: $(cat "$work/dd.err"), not EIO"; return 1; }
    done
    snapshot after || return 1
    for kind in blkzone data; do
        cmp -s "$results/refused-$kind-before.txt" "$results/refused-$kind-after.txt" \
            || { say "refused writes changed the $kind:"; diff "$results/refused-$kind-before.txt" \
                 "$results/refused-$kind-after.txt"; return 1; }
    done
    say "refused writes: EIO, zones and data unchanged"
}

# zone_limits: the config's 14 open/active zones are what the device enforces
# under the kernel: 14 explicit opens succeed, a 15th open and a write that
# would open a 15th zone fail, and the device counts the zones as open.  Both
# refusals must read EOVERFLOW ("Value too large for defined data type"), the
# errno of BLK_STS_ZONE_ACTIVE_RESOURCE that an NVMe ZNS drive or null_blk
# gives (an empty zone needs an active resource before an open one).
eoverflow="Value too large for defined data type"
zone_limits() {
    blkzone open -o $((4 * zone_bytes / 512)) -c 14 "$dev" || { say "opening 14 zones failed"; return 1; }
    if blkzone open -o $((18 * zone_bytes / 512)) -c 1 "$dev" 2>"$work/open.err"; then
        say "a 15th explicit open was accepted"; return 1
    fi
    grep -q "$eoverflow" "$work/open.err" || { say "15th open: $(cat "$work/open.err"), not EOVERFLOW"; return 1; }
    if dd if=/dev/zero of="$dev" bs=4k count=1 seek=$((19 * zone_bytes / 4096)) oflag=direct status=none \
            2>"$work/dd.err"; then
        say "a write opening a 15th zone was accepted"; return 1
    fi
    grep -q "$eoverflow" "$work/dd.err" || { say "15th zone's write: $(cat "$work/dd.err"), not EOVERFLOW"; return 1; }
    opened=$(blkzone report -o $((4 * zone_bytes / 512)) -c 16 "$dev" | grep -c "(oe)" || true)
    blkzone report "$dev" >"$results/blkzone-limits.txt"
    [ "$opened" -eq 14 ] || { say "$opened zones explicitly open, 14 expected"; return 1; }
    blkzone reset "$dev" || return 1
    say "zone limits: 14 opens, the 15th open and a 15th zone's write refused with EOVERFLOW ($opened reported open)"
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
    # Zone 5 (sector 5 * 131072): write 1 MiB.
    z5=$((5 * zone_bytes))
    dd if=/dev/urandom of="$dev" bs=1M count=1 seek=$((z5 / 1048576)) oflag=direct status=none \
        || { say "sequential write at zone 5 start failed"; return 1; }
    blkzone open -o $((6 * zone_bytes / 512)) -c 1 "$dev" || return 1
    blkzone close -o $((5 * zone_bytes / 512)) -c 1 "$dev" || return 1
    blkzone finish -o $((7 * zone_bytes / 512)) -c 1 "$dev" || return 1
    blkzone report "$dev" >"$results/blkzone-after-ops.txt" || return 1
    refused_writes || return 1
    blkzone reset "$dev" || return 1
    blkzone report "$dev" >"$results/blkzone-after-reset.txt" || return 1
    zone_limits || return 1
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

# f2fs_gc DIR: F2FS_IOC_GARBAGE_COLLECT (_IOW(0xf5, 6, __u32), 1 = foreground): two
# sections (each call collects one; ENODATA: no victim left); f2fs_io 1.15 has no command for it.
f2fs_gc() {
    "$py" - "$1" <<'PY'
import errno, fcntl, os, struct, sys
F2FS_IOC_GARBAGE_COLLECT = 0x4004F506
fd = os.open(sys.argv[1], os.O_RDONLY)
calls = 0
for _ in range(2):
    try:
        fcntl.ioctl(fd, F2FS_IOC_GARBAGE_COLLECT, struct.pack("I", 1))
    except OSError as err:
        if err.errno != errno.ENODATA:
            raise
        break
    calls += 1
print(f"F2FS_IOC_GARBAGE_COLLECT: {calls} sections collected")
PY
}

# f2fs_mkfs_fio LOG_NAME FIO_SIZE: mkfs.f2fs -m on $dev, mount it on $work/f2fs, fio verify.
f2fs_mkfs_fio() {
    mkfs.f2fs -f -m "$dev" >"$results/mkfs-$1.log" 2>&1 || { cat "$results/mkfs-$1.log"; return 1; }
    mkdir -p "$work/f2fs"
    mount -t f2fs "$dev" "$work/f2fs" || return 1
    fio --directory="$work/f2fs" --name=f2fs --size="$2" --rw=randwrite --bs=4k --ioengine=libaio \
        --iodepth=16 --direct=1 --verify=crc32c --verify_fatal=1 --verify_state_save=0 --output-format=json \
        --output="$results/fio-ublk-$1.json" || { say "fio on f2fs failed"; return 1; }
}

phase_f2fs() {
    # The config's 8 GiB: F2FS reserves whole zones for GC (1.5 GiB of a 2 GiB disk).
    start_server "$results/server-f2fs.log" "$repo/configs/zns.toml" --set zns.zone_capacity_mib=64 || return 1
    f2fs_mkfs_fio f2fs 64M || return 1
    mnt=$work/f2fs
    # Churn: 24 files of 8 MiB (three 64 MiB sections), then every other one
    # deleted, so that each of those sections is half valid: victims for GC.
    i=0
    while [ $i -lt 24 ]; do
        dd if=/dev/urandom of="$mnt/churn$i" bs=1M count=8 status=none || return 1
        i=$((i + 1))
    done
    sync
    i=0
    while [ $i -lt 24 ]; do rm "$mnt/churn$i"; i=$((i + 2)); done
    (cd "$mnt" && md5sum churn* f2fs.0.0) >"$work/f2fs.md5"
    # A remount first: the checkpoint and pending discards are done and the
    # page cache is empty, so what GC moves is read from the device.
    umount "$mnt" && mount -t f2fs "$dev" "$mnt" || return 1
    get /metrics f2fs-gc-before.prom || return 1
    f2fs_gc "$mnt" >"$results/f2fs-gc.txt" || { say "F2FS_IOC_GARBAGE_COLLECT failed"; return 1; }
    say "$(cat "$results/f2fs-gc.txt")"
    sync
    get /metrics f2fs-gc-after.prom || return 1
    umount "$mnt"  # issues the discards of the sections GC freed: zone resets
    get /metrics f2fs-gc-umount.prom || return 1
    fsck.f2fs "$dev" >"$results/fsck-f2fs.log" 2>&1 || { tail -20 "$results/fsck-f2fs.log"; return 1; }
    mount -t f2fs "$dev" "$mnt" || return 1
    (cd "$mnt" && md5sum -c --quiet "$work/f2fs.md5") || { say "files changed across GC"; return 1; }
    umount "$mnt"
    say "f2fs on zoned ublk: mkfs -m, fio verify, GC, fsck, reread: ok"
    stop_server
}

phase_f2fs_zcap() {
    # Zone capacity 48 MiB of 64 (the config's).  F2FS's metadata takes zones
    # 0-1, so with 2 conventional zones every main-area section is sequential:
    # with conventional sections there, Linux 6.12 and fsck.f2fs 1.15 count
    # their usable segments differently (docs/ublk.md).
    start_server "$results/server-f2fs-zcap.log" "$repo/configs/zns.toml" --set zns.conventional_zones=2 || return 1
    f2fs_mkfs_fio f2fs-zcap 32M || return 1
    umount "$work/f2fs"
    fsck.f2fs "$dev" >"$results/fsck-f2fs-zcap.log" 2>&1 || { tail -20 "$results/fsck-f2fs-zcap.log"; return 1; }
    say "f2fs with zone capacity < zone size: mkfs -m, fio verify, fsck: ok"
    stop_server
}

# zonefs (fs/zonefs): one file per zone.  mkzonefs is not in Debian 12, so
# scripts/mkzonefs.py writes the super block from the kernel's layout.
# 16 zones of 64 MiB (48 MiB capacity), 4 conventional: zone 0 holds the
# super block, so cnv/ has 3 files and seq/ has 12.
phase_zonefs() {
    start_server "$results/server-zonefs.log" "$repo/configs/zns.toml" --set device.capacity_mib=1024 || return 1
    modprobe zonefs || { say "modprobe zonefs failed"; return 1; }
    blkzone reset "$dev" || return 1
    "$py" "$repo/scripts/mkzonefs.py" "$dev" --label blockemu || return 1
    mnt=$work/zonefs
    mkdir -p "$mnt"
    mount -t zonefs "$dev" "$mnt" || { say "mount -t zonefs failed"; return 1; }
    ncnv=$(ls "$mnt/cnv" | wc -l)
    nseq=$(ls "$mnt/seq" | wc -l)
    [ "$ncnv" -eq 3 ] && [ "$nseq" -eq 12 ] || { say "zonefs: $ncnv cnv and $nseq seq files, 3 and 12 expected"; return 1; }
    seq_max=$(stat -c %s "$mnt/seq/1")  # an empty zone's file is empty ...
    [ "$seq_max" -eq 0 ] || { say "seq/1 is $seq_max bytes before any write"; return 1; }
    # Sequential files take direct appends only; the size is the write pointer.
    head -c 8M /dev/urandom >"$work/zonefs.dat"
    dd if="$work/zonefs.dat" of="$mnt/seq/0" bs=1M oflag=direct,append conv=notrunc status=none \
        || { say "append to seq/0 failed"; return 1; }
    [ "$(stat -c %s "$mnt/seq/0")" -eq $((8 << 20)) ] || { say "seq/0 is not 8 MiB"; return 1; }
    blkzone report -o $((4 * zone_bytes / 512)) -c 1 "$dev" | tee "$results/zonefs-seq0.txt"
    grep -q "wptr 0x004000" "$results/zonefs-seq0.txt" || { say "zone 4's write pointer is not at 8 MiB"; return 1; }
    cmp "$work/zonefs.dat" "$mnt/seq/0" || { say "seq/0 reads back different data"; return 1; }
    if dd if=/dev/zero of="$mnt/seq/0" bs=4k count=1 seek=1 oflag=direct conv=notrunc status=none 2>/dev/null; then
        say "a write into the middle of seq/0 was accepted"; return 1
    fi
    # Conventional files take random writes.
    dd if="$work/zonefs.dat" of="$mnt/cnv/0" bs=1M count=2 seek=5 oflag=direct conv=notrunc status=none || return 1
    cmp -n $((2 << 20)) "$work/zonefs.dat" "$mnt/cnv/0" $((0)) $((5 << 20)) || { say "cnv/0 reads back different data"; return 1; }
    # truncate to 0 resets the zone; to the zone capacity finishes it.
    truncate -s 0 "$mnt/seq/0" || return 1
    truncate -s $((48 << 20)) "$mnt/seq/1" || return 1
    umount "$mnt"
    mount -t zonefs "$dev" "$mnt" || return 1
    s0=$(stat -c %s "$mnt/seq/0"); s1=$(stat -c %s "$mnt/seq/1")
    [ "$s0" -eq 0 ] && [ "$s1" -eq $((48 << 20)) ] || { say "after remount seq/0 is $s0, seq/1 is $s1 bytes"; return 1; }
    blkzone report -o $((4 * zone_bytes / 512)) -c 2 "$dev" | tee "$results/zonefs-after.txt"
    umount "$mnt"
    say "zonefs: mkzonefs.py, mount, 3 cnv + 12 seq files, append = wp, reset and finish by truncate: ok"
    stop_server
}

phase_btrfs() {
    # btrfs writes file data with REQ_OP_ZONE_APPEND, but only into block
    # groups on sequential zones: no conventional zones here (its superblock
    # log then lives in sequential zones 0 and 1).
    start_server "$results/server-btrfs.log" "$repo/configs/zns.toml" --set zns.conventional_zones=0 || return 1
    modprobe btrfs || { say "modprobe btrfs failed"; return 1; }
    mkfs.btrfs -f -O zoned "$dev" >"$results/mkfs-btrfs.log" 2>&1 || { cat "$results/mkfs-btrfs.log"; return 1; }
    mnt=$work/btrfs
    mkdir -p "$mnt"
    mount -t btrfs "$dev" "$mnt" || return 1
    get /metrics btrfs-before.prom || return 1
    for i in 1 2 3 4; do
        dd if=/dev/urandom of="$mnt/file$i" bs=1M count=16 status=none || return 1
    done
    sync
    get /metrics btrfs-after.prom || return 1
    (cd "$mnt" && md5sum file*) >"$work/btrfs.md5"
    # Reread from the device (a remount empties the page cache): btrfs reads each
    # extent at the address the zone append returned and checks its checksum.
    umount "$mnt" && mount -t btrfs "$dev" "$mnt" || return 1
    (cd "$mnt" && md5sum -c --quiet "$work/btrfs.md5") || { say "files changed across remount"; return 1; }
    btrfs scrub start -B "$mnt" >"$results/btrfs-scrub.log" 2>&1 || { cat "$results/btrfs-scrub.log"; return 1; }
    umount "$mnt"
    btrfs check "$dev" >"$results/btrfs-check.log" 2>&1 || { tail -20 "$results/btrfs-check.log"; return 1; }
    say "btrfs zoned on ublk: mkfs, write, remount, md5, scrub, check: ok"
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
        for m in "$work/mnt" "$work/f2fs" "$work/btrfs" "$work/zonefs"; do mountpoint -q "$m" && umount "$m"; done
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
