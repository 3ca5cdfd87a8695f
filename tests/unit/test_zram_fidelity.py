"""The host half of ``experiment zram-fidelity``: corpora, the accounting replay, the comparison (no VM)."""

from __future__ import annotations

from typing import Any

import pytest

from blockemu.config import config_from_mapping
from blockemu.devices.zram.codecs import PAGE, Codec
from blockemu.devices.zram.core import same_pattern
from blockemu.devices.zram.device import ZramDevice
from blockemu.experiments import zram_fidelity as zf
from blockemu.store import MemoryStore


@pytest.fixture(scope="module")
def corpora() -> dict[str, bytes]:
    return zf.make_corpora(128, 7, lambda _: None)


def own_sizes(data: bytes, codec: Codec, huge: int) -> list[int]:
    """What a kernel whose codec were the model's would report per page (-1: same page; 4096: huge)."""
    sizes = []
    for i in range(len(data) // PAGE):
        page = data[i * PAGE : (i + 1) * PAGE]
        if same_pattern(page) is not None:
            sizes.append(-1)
        else:
            size = len(codec.compress(page))
            sizes.append(PAGE if size >= huge else size)
    return sizes


def test_corpora_have_the_stated_mix(corpora: dict[str, bytes]) -> None:
    assert set(corpora) == set(zf.CORPORA) and all(len(d) == 128 * PAGE for d in corpora.values())
    mix = [corpora["swap-mix"][i * PAGE : (i + 1) * PAGE] for i in range(128)]
    assert sum(1 for p in mix if not any(p)) == 12 and sum(1 for p in mix if any(p) and same_pattern(p)) == 2
    random = corpora["random"]
    assert len(Codec("lz4").compress(random[:PAGE])) > PAGE - 16  # incompressible


def test_replay_of_the_models_own_sizes_gives_the_models_own_mm_stat(corpora: dict[str, bytes]) -> None:
    data = corpora["swap-mix"] + corpora["process"]
    config = config_from_mapping({"device": {"type": "zram", "name": "t", "capacity_mib": 1},
                                  "zram": {"comp_algorithm": "zstd", "recomp_algorithms": "",
                                           "cost_us": "zstd:3=1/1"}}, "<test>")
    device = ZramDevice(config, MemoryStore(config.capacity_bytes))
    device.write(0, memoryview(data), False, 0)
    written = device.mm_stat_values()
    sizes = own_sizes(data, Codec("zstd"), device.pool.huge_class_size)
    replay = zf.replay_kernel_sizes("zstd:3", data, sizes)
    assert replay["written"] == written
    assert replay["discarded+compacted"][0] == len(data) // 2  # every other 64 KiB discarded
    assert zf.codec_residual("zstd:3", data, sizes) == {"pages": sum(1 for s in sizes if 0 <= s < PAGE),
                                                         "pages_differing": 0, "bytes_gap": 0.0}


def test_compare_reports_gaps_per_field_and_phase(corpora: dict[str, bytes]) -> None:
    data = corpora["files"]
    sizes = own_sizes(data, Codec("lz4"), 3625)
    kernel = zf.replay_kernel_sizes("lz4", data, sizes)
    model = {phase: list(values) for phase, values in kernel.items()}
    model["written"][1] = int(kernel["written"][1] * 1.02)  # compr_data_size 2% high
    guest: list[dict[str, Any]] = [
        {"case": "lz4", "corpus": "files", "kernel": kernel, "model": model, "kernel_page_sizes": sizes},
        {"case": "lz4+zstd", "corpus": "files", "kernel": None, "model": model,
         "kernel_missing": "no CONFIG_ZRAM_MULTI_COMP"},
    ]
    rows = zf.compare(guest, corpora)
    assert len(rows) == 2 * 2 * len(zf.MM_STAT_FIELDS)
    bad = [(r["phase"], r["field"]) for r in rows if r["within_1pct"] is False]
    assert bad == [("written", "compr_data_size")]
    assert all(r["replay_gap"] == 0.0 for r in rows if r["case"] == "lz4")
    assert all(r["gap"] is None and r["note"] for r in rows if r["case"] == "lz4+zstd")
    table = zf.summary(rows)
    assert "+2.00%" in table and "kernel n/a" in table and "NO" in table
