#!/usr/bin/env python3
"""Write dashboards/blockemu.json, the Grafana dashboard for blockemu's /metrics.

    .venv/bin/python scripts/make_dashboard.py            # rewrite it
    .venv/bin/python scripts/make_dashboard.py --check    # exit 1 if it differs

One row per device kind (every device, UFS, ZNS, zram, power), each panel
one or more PromQL expressions filtered by the ``device`` variable.  Every
expression is run against a real Prometheus scraping served devices by
tests/integration/test_dashboard_prometheus.py, so a renamed metric breaks
that test.  Edit the tables below, not the JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "dashboards" / "blockemu.json"
D = 'device=~"$device"'
RATE = "$__rate_interval"

# (row title, device kind it needs, [(panel title, unit, [(expr, legend)])])
ROWS: list[tuple[str, str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    ("All devices", "any", [
        ("IOPS", "iops", [(f'sum by (device, op) (rate(blockemu_requests_total{{{D}, op=~"read|write"}}[{RATE}]))',
                           "{{device}} {{op}}")]),
        ("Throughput", "Bps", [(f'sum by (device, op) (rate(blockemu_bytes_total{{{D}, op=~"read|write"}}[{RATE}]))',
                                "{{device}} {{op}}")]),
        ("Modeled latency", "s", [
            (f"histogram_quantile({q}, sum by (device, le) "
             f"(rate(blockemu_request_modeled_latency_seconds_bucket{{{D}}}[{RATE}])))", f"{{{{device}}}} p{name}")
            for q, name in ((0.5, "50"), (0.99, "99"), (0.999, "99.9"))]),
        ("Queue depth", "short", [(f"blockemu_queue_depth{{{D}}}", "{{device}} now"),
                                  (f"blockemu_queue_depth_peak{{{D}}}", "{{device}} peak")]),
        ("Errors", "reqps", [(f"sum by (device, op) (rate(blockemu_request_errors_total{{{D}}}[{RATE}]))",
                              "{{device}} {{op}}")]),
    ]),
    ("UFS", "ufs", [
        ("HID progress_ratio", "percent", [(f"blockemu_hid_progress_ratio{{{D}}}", "{{device}}")]),
        ("HID state", "short", [(f"blockemu_hid_state{{{D}}} == 1", "{{device}} {{state}}")]),
        ("Fragmentation", "bytes", [(f"blockemu_ufs_fragmented_bytes{{{D}}}", "{{device}} fragmented"),
                                    (f"blockemu_hid_fragmented_size_bytes{{{D}}}", "{{device}} HID fragmented_size"),
                                    (f"blockemu_ufs_mapped_bytes{{{D}}}", "{{device}} mapped")]),
        ("Relocation", "Bps", [(f"rate(blockemu_ufs_gc_relocated_bytes_total{{{D}}}[{RATE}])", "{{device}} GC"),
                               (f"rate(blockemu_hid_defrag_moved_bytes_total{{{D}}}[{RATE}])", "{{device}} HID")]),
        ("Write amplification", "short", [(f"blockemu_ufs_write_amplification{{{D}}}", "{{device}}")]),
        ("Free superblocks", "short", [(f"blockemu_ufs_free_superblocks{{{D}}}", "{{device}}")]),
        ("L2P mapping cache", "short", [
            (f"rate(blockemu_ufs_l2p_misses_total{{{D}}}[{RATE}])", "{{device}} misses/s"),
            (f"rate(blockemu_ufs_l2p_map_writes_total{{{D}}}[{RATE}])", "{{device}} write-backs/s"),
            (f"rate(blockemu_ufs_l2p_misses_total{{{D}}}[{RATE}]) / (rate(blockemu_ufs_l2p_hits_total{{{D}}}[{RATE}])"
             f" + rate(blockemu_ufs_l2p_misses_total{{{D}}}[{RATE}]))", "{{device}} miss ratio")]),
        ("WriteBooster", "Bps", [
            (f"rate(blockemu_ufs_wb_slc_written_bytes_total{{{D}}}[{RATE}])", "{{device}} SLC"),
            (f"rate(blockemu_ufs_wb_tlc_direct_bytes_total{{{D}}}[{RATE}])", "{{device}} TLC direct"),
            (f"rate(blockemu_ufs_wb_folded_bytes_total{{{D}}}[{RATE}])", "{{device}} folded"),
            (f"blockemu_ufs_wb_buffer_used_bytes{{{D}}}", "{{device}} buffer used (bytes)")]),
    ]),
    ("ZNS", "zns", [
        ("Zones by condition", "short", [(f"sum by (device, condition) (blockemu_zns_zones{{{D}}})",
                                          "{{device}} {{condition}}")]),
        ("Open and active zones", "short", [(f"blockemu_zns_open_zones{{{D}}}", "{{device}} open"),
                                            (f"blockemu_zns_active_zones{{{D}}}", "{{device}} active")]),
        ("Zone management", "ops", [(f"rate(blockemu_zns_zone_resets_total{{{D}}}[{RATE}])", "{{device}} resets"),
                                    (f"rate(blockemu_zns_zone_finishes_total{{{D}}}[{RATE}])", "{{device}} finishes")]),
        ("Simple Copy", "Bps", [(f"rate(blockemu_zns_copied_bytes_total{{{D}}}[{RATE}])", "{{device}}")]),
        ("Zoned log GC", "Bps", [(f"sum by (device, method) (rate(blockemu_zns_ftl_gc_relocated_bytes_total{{{D}}}"
                                  f"[{RATE}]))", "{{device}} {{method}}")]),
        ("Zoned log free zones and WAF", "short", [
            (f"blockemu_zns_ftl_free_zones{{{D}}}", "{{device}} free zones"),
            (f"blockemu_zns_ftl_write_amplification{{{D}}}", "{{device}} WAF")]),
    ]),
    ("zram", "zram", [
        ("mm_stat", "bytes", [(f"blockemu_zram_orig_data_bytes{{{D}}}", "{{device}} orig_data_size"),
                              (f"blockemu_zram_compr_data_bytes{{{D}}}", "{{device}} compr_data_size"),
                              (f"blockemu_zram_mem_used_bytes{{{D}}}", "{{device}} mem_used_total")]),
        ("Stored pages by algorithm", "short", [(f"sum by (device, algo) (blockemu_zram_stored_pages{{{D}}})",
                                                 "{{device}} {{algo}}")]),
        ("Same and huge pages", "short", [(f"blockemu_zram_same_pages{{{D}}}", "{{device}} same"),
                                          (f"blockemu_zram_huge_pages{{{D}}}", "{{device}} huge")]),
        ("Async backlog (staged pages)", "short", [(f"blockemu_zram_staged_pages{{{D}}}", "{{device}}")]),
        ("Compression by algorithm", "ops", [
            (f'sum by (device, algo) (rate(blockemu_zram_codec_pages_total{{{D}, op="compress"}}[{RATE}]))',
             "{{device}} {{algo}}")]),
    ]),
    ("Power", "power", [
        ("Frequency", "hertz", [(f"blockemu_power_cur_freq_hz{{{D}}}", "{{device}}")]),
        ("Governor and its queue depth", "short", [
            (f"blockemu_power_governor{{{D}}} == 1", "{{device}} {{governor}}"),
            (f"blockemu_power_governor_queue_depth{{{D}}}", "{{device}} queue depth")]),
        ("Power", "watt", [(f"blockemu_power_watts{{{D}}}", "{{device}} now"),
                           (f"sum by (device) (rate(blockemu_power_energy_joules_total{{{D}}}[{RATE}]))",
                            "{{device}} average")]),
        ("Energy", "joule", [(f"sum by (device) (blockemu_power_energy_joules_total{{{D}}})", "{{device}}")]),
        ("Frequency transitions", "ops", [
            (f"sum by (device) (rate(blockemu_power_transitions_total{{{D}}}[{RATE}]))", "{{device}}")]),
    ]),
]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, kind, row_panels in ROWS:
        panels.append({"type": "row", "title": row_title, "id": next_id, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "description": f"needs a {kind} device"})
        next_id += 1
        y += 1
        for i, (title, unit, targets) in enumerate(row_panels):
            panels.append({
                "type": "timeseries", "title": title, "id": next_id, "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 8, "x": 8 * (i % 3), "y": y + 8 * (i // 3)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                "targets": [{"refId": chr(ord("A") + j), "datasource": DATASOURCE, "expr": expr,
                             "legendFormat": legend} for j, (expr, legend) in enumerate(targets)],
            })
            next_id += 1
        y += 8 * -(-len(row_panels) // 3)
    query = "label_values(blockemu_requests_total, device)"
    return {
        "title": "blockemu", "uid": "blockemu", "editable": True, "schemaVersion": 39, "version": 1,
        "description": "blockemu's emulated devices: I/O, UFS HID and fragmentation, zones, zram, power "
                       "(generated by scripts/make_dashboard.py)",
        "tags": ["blockemu"], "time": {"from": "now-15m", "to": "now"}, "refresh": "5s",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
            {"name": "device", "label": "device", "type": "query", "datasource": DATASOURCE,
             "definition": query, "query": {"query": query, "refId": "device"}, "refresh": 2,
             "includeAll": True, "multi": True, "allValue": ".+", "sort": 1},
        ]},
        "panels": panels,
    }


def main() -> int:
    text = json.dumps(dashboard(), indent=2) + "\n"
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is not what scripts/make_dashboard.py writes; run it", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
