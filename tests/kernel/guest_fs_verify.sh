#!/bin/sh
# Runs INSIDE the VM (via `blockemu vm run CONFIG -- sh tests/kernel/guest_fs_verify.sh [RAND SEQ]`):
# real filesystems on the emulated device, with data verified by fio.
#
# For F2FS and then ext4 (the baseline) on $BLOCKEMU_DEV0:
#   mkfs, mount, fio writes with crc32c verification (4 KiB random writes at
#   iodepth 16 through libaio, 1 MiB sequential writes through io_uring, both
#   O_DIRECT so every byte reaches the device), umount, fsck (must be clean),
#   remount and verify everything again with --verify_only, umount.
# fio's JSON reports go to $BLOCKEMU_RESULTS/fio-<fs>-<phase>.json.
# Exits non-zero at the first failure; prints "FS-VERIFY: PASS" at the end.
set -eu

dev=${BLOCKEMU_DEV0:?no device attached}
results=${BLOCKEMU_RESULTS:?}
# Sizes of the random-write and sequential-write files (fio size syntax).
rand_size=${1:-16M}
seq_size=${2:-32M}

# The guest's /tmp is a writable overlay; the repo (our cwd) is read-only.
work=$(mktemp -d)
mnt=$work/mnt
mkdir "$mnt"
cd "$work"

start=$(date +%s)
step() { echo "== [$(( $(date +%s) - start )) s] $*"; }

# $1: fs label, $2: phase (write|reverify), further args go to fio.
run_fio() {
    fs=$1 phase=$2
    shift 2
    json=$results/fio-$fs-$phase.json
    fio --directory="$mnt" --direct=1 --verify=crc32c --verify_fatal=1 \
        --verify_state_save=0 --output-format=json --output="$json" "$@" \
        --name=rand4k --filename=rand4k.dat --size="$rand_size" --rw=randwrite \
            --bs=4k --iodepth=16 --ioengine=libaio \
        --name=seq1m --stonewall --filename=seq1m.dat --size="$seq_size" --rw=write \
            --bs=1M --iodepth=4 --ioengine=io_uring
    # One line per job, so the console shows what was measured.
    python3 - "$json" "$fs" "$phase" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
for job in report["jobs"]:
    w, r = job["write"], job["read"]
    wrote = f"write {w['io_bytes'] >> 20} MiB {w['iops']:.0f} IOPS, " if w["iops"] else ""
    print(f"fio {sys.argv[2]} {sys.argv[3]} {job['jobname']}: {wrote}"
          f"verify-read {r['io_bytes'] >> 20} MiB {r['iops']:.0f} IOPS, error={job['error']}")
    if job["error"]:
        sys.exit(1)
EOF
}

check_fs() {
    fs=$1
    case $fs in
        f2fs)
            step "mkfs.f2fs $dev"
            mkfs.f2fs -f -q "$dev"
            ;;
        ext4)
            step "mkfs.ext4 $dev"
            mkfs.ext4 -F -q "$dev"
            ;;
    esac
    mount -t "$fs" "$dev" "$mnt"
    step "$fs: fio write + verify"
    run_fio "$fs" write
    umount "$mnt"

    step "$fs: fsck"
    case $fs in
        f2fs)
            # -f checks even a cleanly unmounted fs; --dry-run never writes.
            fsck.f2fs -f --dry-run "$dev" > "$results/fsck-f2fs.log" 2>&1 || {
                cat "$results/fsck-f2fs.log"; echo "fsck.f2fs failed"; exit 1; }
            if grep -q '\[Fail\]' "$results/fsck-f2fs.log"; then
                grep '\[Fail\]' "$results/fsck-f2fs.log"; echo "fsck.f2fs found errors"; exit 1
            fi
            ;;
        ext4)
            e2fsck -f -n "$dev" > "$results/fsck-ext4.log" 2>&1 || {
                cat "$results/fsck-ext4.log"; echo "e2fsck found errors"; exit 1; }
            ;;
    esac

    step "$fs: remount + verify only"
    mount -t "$fs" "$dev" "$mnt"
    run_fio "$fs" reverify --verify_only
    umount "$mnt"
}

check_fs f2fs
check_fs ext4
step "done"
echo "FS-VERIFY: PASS"
