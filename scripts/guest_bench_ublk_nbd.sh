#!/bin/sh
# Runs INSIDE the VM: the same model over NBD ($BLOCKEMU_DEV0) and over ublk
# ($BLOCKEMU_DEV1), measured with fio in the same boot.  Started by
#
#   .venv/bin/python -m blockemu vm run --transport nbd,ublk,auto \
#       configs/ufs41.toml configs/ufs41.toml configs/zns.toml -- sh scripts/guest_bench_ublk_nbd.sh
#
# (the third device, ZNS with the default transport, checks that zoned
# configs come up over ublk).  Each device: 64 MiB written sequentially
# first (so reads hit written data); then ROUNDS rounds (default 3) of 4 KiB
# random reads at QD1 and QD16 and 1 MiB sequential writes, RUNTIME_S seconds
# each (default 10), O_DIRECT, libaio.  The two transports take turns on
# every job and swap who goes first each round, so that a burst of load from
# elsewhere on the machine does not land on one of them only; the summary
# gives medians over the rounds.  Writes results/bench-<transport>-<job>-<round>.json.
set -eu
runtime_s=${RUNTIME_S:-10}
rounds=${ROUNDS:-3}
results=${BLOCKEMU_RESULTS:?}
cd "$(mktemp -d)"

for dev in ${BLOCKEMU_DEV2:-}; do
    echo "BENCH: $dev zoned=$(cat /sys/block/${dev#/dev/}/queue/zoned)"
done
device() { if [ "$1" = nbd ]; then echo "$BLOCKEMU_DEV0"; else echo "$BLOCKEMU_DEV1"; fi; }

for transport in nbd ublk; do
    fio --filename="$(device $transport)" --direct=1 --ioengine=libaio --output-format=json \
        --name=fill --rw=write --bs=1M --size=64M --output="$results/bench-$transport-fill.json"
done
round=1
while [ "$round" -le "$rounds" ]; do
    if [ $((round % 2)) -eq 1 ]; then order="nbd ublk"; else order="ublk nbd"; fi
    for job in randread-qd1 randread-qd16 seqwrite-1m; do
        case $job in
            randread-qd1) args="--rw=randread --bs=4k --iodepth=1 --size=64M" ;;
            randread-qd16) args="--rw=randread --bs=4k --iodepth=16 --size=64M" ;;
            seqwrite-1m) args="--rw=write --bs=1M --iodepth=4 --offset=64M --size=512M" ;;
        esac
        for transport in $order; do
            # shellcheck disable=SC2086  # $args is a list of options
            fio --filename="$(device $transport)" --direct=1 --ioengine=libaio --output-format=json \
                --name="$job" $args --time_based --runtime="$runtime_s" \
                --output="$results/bench-$transport-$job-$round.json"
        done
    done
    round=$((round + 1))
done
python3 - "$results" "$rounds" <<'PY'
import json, pathlib, statistics, sys
results, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
for job in ("randread-qd1", "randread-qd16", "seqwrite-1m"):
    line, iops = [], {}
    for transport in ("nbd", "ublk"):
        sides = []
        for r in range(1, rounds + 1):
            j = json.loads((results / f"bench-{transport}-{job}-{r}.json").read_text())["jobs"][0]
            sides.append(j["write"] if job.startswith("seq") else j["read"])
        iops[transport] = statistics.median(s["iops"] for s in sides)
        each = " ".join(f"{s['iops']:.0f}" for s in sides)
        line.append(f"{transport} {iops[transport]:.0f} IOPS "
                    f"{statistics.median(s['bw'] for s in sides) / 1024:.1f} MiB/s "
                    f"(clat mean {statistics.median(s['clat_ns']['mean'] for s in sides) / 1000:.0f} us; rounds {each})")
    print(f"BENCH {job}: " + " | ".join(line) + f" | ublk/nbd {iops['ublk'] / iops['nbd']:.2f}")
PY
