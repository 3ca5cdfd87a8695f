"""``blockemu experiment NAME``: the studies' parsers; each study's module keeps its run functions.

The two studies that boot a VM (``hid``, ``pmqos-vm``) run their guest half
as the same command with a hidden ``--guest`` flag and the same options, e.g.
``python -m blockemu experiment hid --guest --size-mib 48 ...``, started by
their host half inside the VM.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    # Here, not at the top: the studies import numpy, the device models and
    # matplotlib, which only `blockemu experiment` needs.
    from blockemu.experiments import gc, hid, pmqos, zram

    sub = parser.add_subparsers(dest="experiment", required=True)

    study = sub.add_parser("pmqos", help="queue-depth PM-QoS boost vs simple_ondemand: latency, bandwidth, energy")
    study.add_argument("--quick", action="store_true", help="short run (seconds) that still prints the table")
    study.add_argument("--out", help="results folder (default results/pmqos-<UTC timestamp>)")
    study.add_argument("--seed", type=int, default=pmqos.Workloads.seed)
    study.set_defaults(func=pmqos.run_from_args)

    study = sub.add_parser("hid", help="copy a file on fragmented UFS before/after HID (VM)")
    study.add_argument("--quick", action="store_true", help=f"a small run: {hid.QUICK}")
    study.add_argument("--size-mib", type=int, help=f"source file size (default {hid.FULL.size_mib})")
    study.add_argument("--levels", help=f"fragmentation levels, %% (default {hid.FULL.levels})")
    study.add_argument("--time-scale", type=float, help="realtime slow-down during the timed copies")
    study.add_argument("--fragment-kib", type=int, default=4, help="size of the scattered pieces (default 4)")
    study.add_argument("--rewrite-fraction", type=float, default=0.05,
                       help="share of the source rewritten in place during churn (default 0.05)")
    study.add_argument("--seed", type=int, default=1)
    study.add_argument("--config", default=str(hid.DEFAULT_CONFIG))
    study.add_argument("--mem-mib", type=int, help="guest memory (default: enough for the device)")
    study.add_argument("--timeout", type=float, default=7200.0, help="VM timeout, seconds")
    study.add_argument("--out", help="output folder (default results/hid-<timestamp>)")
    study.add_argument("--analyse-only", action="store_true",
                       help="skip the VM: replay and report the guest results already in --out")
    study.add_argument("--model-only", action="store_true",
                       help="no VM: drive the model in-process (closed loop, virtual time), with the SRAM sweep")
    study.add_argument("--repeats", type=int, default=2,
                       help="timed copies per phase, the last reported (default 2: the first pays one-off costs)")
    study.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    study.set_defaults(func=_run_hid)

    study = sub.add_parser("zram", help="zram: launch latency, memory and CPU per policy")
    study.add_argument("--quick", action="store_true", help="a short run (fewer apps, pages and rounds)")
    study.add_argument("--out", help="output directory (default results/zram-<timestamp>)")
    study.add_argument("--seed", type=int, help="workload and corpus seed")
    study.add_argument("--cost-us", metavar="COSTS",
                       help="pin the cost model, e.g. 'lz4=4.8/1.5, zstd=14/5.6' (µs per page, "
                            "compress/decompress); default: calibrate on this host at start-up")
    study.set_defaults(func=zram.main)

    study = sub.add_parser("launch", help="app launches on a phone memory model: zram/ZCACHE policies × pressure")
    study.add_argument("--quick", action="store_true", help="a short run (fewer apps, launches and pressures)")
    study.add_argument("--out", help="output directory (default results/launch-<timestamp>)")
    study.add_argument("--seed", type=int, help="workload and corpus seed")
    study.add_argument("--set", action="append", metavar="NAME=VALUE",
                       help="override a model parameter (repeatable); all are printed at start")
    study.add_argument("--policies", help="comma-separated policies, e.g. lz4,multi_async,lz4+zc_async_zsmalloc, "
                                          "or 'all' for every zram × sync/async × ZCACHE combination")
    study.add_argument("--cost-us", metavar="COSTS", help="pin the cost model, as for the zram study")
    study.add_argument("--vm", action="store_true",
                       help="the real-kernel half: Linux 6.12's reclaim swapping to one blockemu zram device "
                            "per policy, timed launches and the kernel's counters, in one boot")
    study.add_argument("--vm-policies", default="lz4,zstd,multi,zstd_async",
                       help="--vm: comma-separated, of lz4, lz4hc, zstd, multi, lz4_async, zstd_async, multi_async "
                            "(default lz4,zstd,multi,zstd_async)")
    study.add_argument("--vm-ram-fraction", type=float, default=0.5,
                       help="--vm: the apps' memory cgroup limit as a fraction of their working set (default 0.5)")
    study.add_argument("--mem", default="2G", help="--vm: guest memory (default 2G)")
    study.add_argument("--timeout", type=float, default=3600.0, help="--vm: seconds before the VM is killed")
    study.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    study.set_defaults(func=_run_launch)

    study = sub.add_parser("gc", help="zoned-log GC: policies × copy methods, write amplification and latency")
    study.add_argument("--quick", action="store_true", help="a short run (fewer zones, fewer overwrites)")
    study.add_argument("--out", help="output directory (default results/gc-<timestamp>)")
    study.add_argument("--seed", type=int, help="workload seed")
    study.set_defaults(func=gc.main)

    study = sub.add_parser("zram-fidelity", help="zram model vs Linux's zram: mm_stat on the same pages (VM)")
    study.add_argument("--quick", action="store_true", help="1024 pages per corpus instead of 4096")
    study.add_argument("--pages", type=int, help="pages per corpus")
    study.add_argument("--cases", default="lz4,lz4hc:9,zstd:3,lz4+zstd",
                       help="algorithms, comma-separated (default: lz4,lz4hc:9,zstd:3,lz4+zstd)")
    study.add_argument("--seed", type=int, default=7, help="corpus seed (default 7)")
    study.add_argument("--mem", default="2G", help="guest memory (default 2G)")
    study.add_argument("--timeout", type=float, default=3600.0)
    study.add_argument("--out", help="output folder (default results/zram-fidelity-<timestamp>)")
    study.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    study.set_defaults(func=_run_zram_fidelity)

    study = sub.add_parser("pmqos-vm", help="PM-QoS vs ondemand on F2FS in the VM (realtime)")
    study.add_argument("--quick", action="store_true", help="12 bursts per governor instead of 60")
    study.add_argument("--bursts", type=int, help="bursts per governor")
    study.add_argument("--burst", type=int, default=8, help="reads per burst (default 8)")
    study.add_argument("--think-ms", type=float, default=600.0,
                       help="real think time between bursts (default 600 = 30 modeled ms at time_scale 20)")
    study.add_argument("--time-scale", type=float, default=20.0, help="realtime slow-down (default 20)")
    study.add_argument("--timeout", type=float, default=1800.0)
    study.add_argument("--out", help="output folder (default results/pmqos-vm-<timestamp>)")
    study.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    study.set_defaults(func=_run_pmqos_vm)


def _run_launch(args: argparse.Namespace) -> int:
    if args.vm:
        from blockemu.experiments.launch import vm

        return int(vm.guest_main(args) if args.guest else vm.host_main(args))
    from blockemu.experiments.launch import study

    return study.main(args)


def _run_hid(args: argparse.Namespace) -> int:
    from blockemu.experiments import hid

    return int(hid.guest_main(args) if args.guest else hid.host_main(args))


def _run_zram_fidelity(args: argparse.Namespace) -> int:
    from blockemu.experiments import zram_fidelity

    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in zram_fidelity.CASES]
    if unknown:
        print(f"blockemu experiment zram-fidelity: unknown case {unknown[0]!r}; allowed: "
              f"{', '.join(zram_fidelity.CASES)}", file=sys.stderr)
        return 2
    return int(zram_fidelity.guest_main(args) if args.guest else zram_fidelity.host_main(args))


def _run_pmqos_vm(args: argparse.Namespace) -> int:
    from blockemu.experiments import pmqos_vm

    return int(pmqos_vm.guest_main(args) if args.guest else pmqos_vm.host_main(args))
