"""The HID study's model-only path: counters, the 0% control, the SRAM sweep, and the CLI's outputs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from blockemu.config import Config, load_config
from blockemu.experiments import hid, hid_model

# The shipped geometry (32 MiB superblocks: the small test geometry's 1 MiB ones
# would make garbage collection's erases dominate a copy), on 1 GiB, with 1 KiB
# map pages of 8-byte entries: 512 KiB units, so an 8 MiB file spans sixteen.
SMALL_UNITS = ["device.capacity_mib=1024", "ufs.l2p_cache_kib=64", "ufs.l2p_map_page_kib=1",
               "ufs.l2p_entry_bytes=8", 'ufs.l2p_mode="extent"', "ufs.wb_enabled=true", "ufs.wb_buffer_mib=64"]


def small_units_config() -> Config:
    return load_config(hid.DEFAULT_CONFIG, SMALL_UNITS)


def test_levels_split_the_speedup_into_nand_reads_misses_and_commands() -> None:
    config = small_units_config()
    zero, full = hid_model.model_levels(config, 8, [0, 100], fragment_kib=4, seed=1)
    assert zero["modeled_s_before"] == zero["modeled_s_after"]  # nothing to defragment: exactly 1.0x
    assert zero["modeled_speedup"] == 1.0
    assert full["fragmented_percent_before"] == 100.0 and full["fragmented_percent_after"] == 0.0
    assert full["modeled_speedup"] > 2.0
    assert full["nand_reads_before"] > 4 * full["nand_reads_after"]
    assert full["commands_before"] == full["commands_after"] == 2 * 8 * 1024 // hid_model.COPY_REQUEST_KIB


def test_sram_sweep_shows_misses_only_when_the_map_does_not_fit() -> None:
    config = small_units_config()
    tiny, unlimited = hid_model.sram_sweep(config, 8, 100, fragment_kib=4, seed=1, sizes_kib=(2, 0))
    assert tiny["l2p_cache_kib"] == 2 and unlimited["l2p_mode"] == "unlimited"
    # Scattered units cost a whole 1 KiB map page: two fit, sixteen are read.
    assert tiny["map_misses_before"] > 0 and tiny["miss_rate_before"] > 0
    assert unlimited["map_misses_before"] == 0 and unlimited["miss_rate_before"] == 0.0
    # Contiguous after HID: one-extent units, eight per map page, so far fewer misses.
    assert tiny["map_misses_after"] < tiny["map_misses_before"]
    assert tiny["modeled_s_before"] > unlimited["modeled_s_before"]


def test_cli_model_only_writes_csv_png_and_prints_the_l2p_columns(tmp_path: Path) -> None:
    out = tmp_path / "hid"
    result = subprocess.run([sys.executable, "-m", "blockemu", "experiment", "hid", "--model-only", "--size-mib", "8",
                             "--levels", "0,100", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "L2P miss% bef" in result.stdout and "SRAM sweep" in result.stdout
    assert "mechanism at 100%" in result.stdout and "NAND page reads" in result.stdout
    rows = list(csv.DictReader((out / "hid.csv").open()))
    assert float(rows[0]["modeled_speedup"]) == 1.0
    sweep = list(csv.DictReader((out / "hid-sweep.csv").open()))
    assert [int(r["l2p_cache_kib"]) for r in sweep] == list(hid_model.SWEEP_SRAM_KIB)
    assert (out / "hid.png").stat().st_size > 10_000
