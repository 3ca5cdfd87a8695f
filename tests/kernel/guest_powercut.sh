#!/bin/sh
# Runs INSIDE the VM (via `blockemu vm run CONFIG -- sh tests/kernel/guest_powercut.sh`):
# F2FS across emulated power cuts, as dm-flakey/dm-log-writes crash tests do.
#
# For each mode (drop, then torn, on the same filesystem):
#   write a file and fsync it (the kernel flushes the device's write cache),
#   write another with O_DIRECT and no fsync (it sits in the device's volatile
#   cache), cut the power: the device goes offline (fault injection: the
#   kernel's later requests, F2FS's shutdown flushes among them, fail) and
#   drops its cache (POST /api/v1/powercut); shut F2FS down without syncing,
#   unmount, bring the device back, mount again (F2FS rolls forward what was fsync'd), and check
#   that every fsync'd file so far reads back with its checksum; then
#   unmount and fsck.f2fs must find a consistent filesystem.
# The cut's report goes to $BLOCKEMU_RESULTS/powercut-<mode>.json.
# Exits non-zero at the first failure; prints "POWERCUT: PASS" at the end.
set -eu

dev=${BLOCKEMU_DEV0:?no device attached}
http=${BLOCKEMU_HTTP0:?no control API}
results=${BLOCKEMU_RESULTS:?}

work=$(mktemp -d)
mnt=$work/mnt
mkdir "$mnt"
start=$(date +%s)
step() { echo "== [$(( $(date +%s) - start )) s] $*"; }
# api METHOD PATH BODY: one control API request; prints the answer.
api() {
    python3 - "$http/api/v1/$2" "$1" "$3" <<'EOF'
import sys, urllib.request
url, method, body = sys.argv[1:]
request = urllib.request.Request(url, method=method, data=body.encode() if body else None)
print(urllib.request.urlopen(request, timeout=60).read().decode())
EOF
}

step "mkfs.f2fs $dev"
mkfs.f2fs -f -q "$dev"

for mode in drop torn; do
    mount -t f2fs "$dev" "$mnt"
    step "$mode: write a fsync'd file and an unflushed O_DIRECT file"
    python3 - "$mnt" "$mode" "$work" <<'EOF'
import hashlib, mmap, os, random, sys
mnt, mode, work = sys.argv[1:]
rng = random.Random(mode)
synced = rng.randbytes(4 << 20)
with open(f"{mnt}/synced-{mode}.dat", "wb") as f:
    f.write(synced)
    f.flush()
    os.fsync(f.fileno())  # F2FS flushes the device's cache before fsync returns
with open(f"{work}/synced-{mode}.sha256", "w") as f:
    f.write(hashlib.sha256(synced).hexdigest())
# O_DIRECT without fsync: on the device, in its volatile cache only.
fd = os.open(f"{mnt}/unsynced-{mode}.dat", os.O_CREAT | os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4 << 20)
buf.write(rng.randbytes(4 << 20))
os.write(fd, buf)
os.close(fd)
EOF
    step "$mode: power cut: the device goes offline and loses its cache; F2FS is shut down"
    # Offline first, so that nothing the kernel sends after this instant
    # (F2FS flushes at shutdown) reaches the device: as when the power goes.
    api PUT faults '{"offline": true}' > /dev/null
    api POST powercut "{\"mode\": \"$mode\", \"seed\": 7}" > "$results/powercut-$mode.json"
    python3 - "$results/powercut-$mode.json" "$mode" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"powercut {sys.argv[2]}: {report['pending_sectors']} sectors unflushed, "
      f"{report['dropped_sectors']} dropped, {report['kept_sectors']} kept")
if report["dropped_sectors"] == 0:
    sys.exit("the cut lost nothing: the unflushed write was flushed after all")
EOF
    f2fs_io shutdown 2 "$mnt" > /dev/null 2>&1 || true  # its I/O fails: the device is off
    umount "$mnt"
    api DELETE faults '' > /dev/null  # power back

    step "$mode: mount again (roll-forward) and check every fsync'd file"
    mount -t f2fs "$dev" "$mnt"
    for sum in "$work"/synced-*.sha256; do
        name=$(basename "$sum" .sha256)
        got=$(sha256sum "$mnt/$name.dat" | cut -d' ' -f1)
        if [ "$got" != "$(cat "$sum")" ]; then
            echo "$name.dat: fsync'd data did not survive the $mode cut"; exit 1
        fi
        echo "$name.dat intact"
    done
    umount "$mnt"

    step "$mode: fsck.f2fs"
    fsck.f2fs -f --dry-run "$dev" > "$results/fsck-f2fs-powercut-$mode.log" 2>&1 || {
        cat "$results/fsck-f2fs-powercut-$mode.log"; echo "fsck.f2fs failed after the $mode cut"; exit 1; }
    if grep -q '\[Fail\]' "$results/fsck-f2fs-powercut-$mode.log"; then
        grep '\[Fail\]' "$results/fsck-f2fs-powercut-$mode.log"
        echo "fsck.f2fs found errors after the $mode cut"; exit 1
    fi
done
step "done"
echo "POWERCUT: PASS"
