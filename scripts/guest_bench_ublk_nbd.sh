#!/bin/sh
# Runs INSIDE the VM: the same model over NBD ($BLOCKEMU_DEV0) and over ublk
# ($BLOCKEMU_DEV1), measured with fio in the same boot.  Started by
#
#   .venv/bin/python -m blockemu.vm run --transport nbd,ublk,auto \
#       configs/ufs41.toml configs/ufs41.toml configs/zns.toml -- sh scripts/guest_bench_ublk_nbd.sh
#
# (the third device, ZNS with the default transport, checks that zoned
# configs come up over ublk).  Each device: 64 MiB written sequentially
# first (so reads hit written data), then 4 KiB random reads at QD1 and QD16
# and 1 MiB sequential writes, each for RUNTIME_S seconds, O_DIRECT, libaio.
# Writes results/bench-<transport>-<job>.json and prints one line per job.
set -eu
runtime_s=${RUNTIME_S:-20}
results=${BLOCKEMU_RESULTS:?}
cd "$(mktemp -d)"

for dev in ${BLOCKEMU_DEV2:-}; do
    echo "BENCH: $dev zoned=$(cat /sys/block/${dev#/dev/}/queue/zoned)"
done
for pair in "nbd:$BLOCKEMU_DEV0" "ublk:$BLOCKEMU_DEV1"; do
    transport=${pair%%:*} dev=${pair#*:}
    common="--filename=$dev --direct=1 --ioengine=libaio --output-format=json"
    fio $common --name=fill --rw=write --bs=1M --size=64M --output="$results/bench-$transport-fill.json"
    fio $common --name=randread-qd1 --rw=randread --bs=4k --iodepth=1 --size=64M --time_based \
        --runtime="$runtime_s" --output="$results/bench-$transport-randread-qd1.json"
    fio $common --name=randread-qd16 --rw=randread --bs=4k --iodepth=16 --size=64M --time_based \
        --runtime="$runtime_s" --output="$results/bench-$transport-randread-qd16.json"
    fio $common --name=seqwrite-1m --rw=write --bs=1M --iodepth=4 --offset=64M --size=512M --time_based \
        --runtime="$runtime_s" --output="$results/bench-$transport-seqwrite-1m.json"
done
python3 - "$results" <<'PY'
import json, pathlib, sys
results = pathlib.Path(sys.argv[1])
for job in ("randread-qd1", "randread-qd16", "seqwrite-1m"):
    line = []
    for transport in ("nbd", "ublk"):
        j = json.loads((results / f"bench-{transport}-{job}.json").read_text())["jobs"][0]
        side = j["write"] if job.startswith("seq") else j["read"]
        line.append(f"{transport} {side['iops']:.0f} IOPS {side['bw'] / 1024:.1f} MiB/s "
                     f"(clat mean {side['clat_ns']['mean'] / 1000:.0f} us)")
    print(f"BENCH {job}: " + " | ".join(line))
PY
