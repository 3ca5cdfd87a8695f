"""blockemu vm warns, in one line, when the devices can hold more in memory than the guest has."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockemu.vm import host

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("mem", "mib"), [("2G", 2048), ("4096M", 4096), ("3072", 3072), ("1t", 1024 * 1024),
                                           ("2GB", None), ("lots", None)])
def test_mem_mib_reads_qemus_sizes(mem: str, mib: int | None) -> None:
    assert host.mem_mib(mem) == mib


def test_memory_mib_counts_the_memory_store_only(tmp_path: Path) -> None:
    assert host.memory_mib(CONFIGS / "zns.toml") == 8192
    assert host.memory_mib(config(tmp_path, "defaults.toml", "")) == host.DEFAULT_CAPACITY_MIB
    on_file = config(tmp_path, "file.toml", '[device]\ncapacity_mib = 4096\n[store]\nbackend = "file"\n'
                                            'path = "/x"\n')
    assert host.memory_mib(on_file) == 0
    assert host.memory_mib(CONFIGS / "zns.toml", ["--set", "device.capacity_mib=2048"]) == 2048
    assert host.memory_mib(CONFIGS / "zns.toml", ["--set=store.backend=file"]) == 0


def test_zram_counts_its_pages_whatever_the_store_up_to_mem_limit(tmp_path: Path) -> None:
    zram = config(tmp_path, "zram.toml", '[device]\ntype = "zram"\ncapacity_mib = 4096\n[store]\n'
                                         'backend = "file"\npath = "/x"\n')
    assert host.memory_mib(zram) == 4096
    assert host.memory_mib(zram, ["--set", "zram.mem_limit_mib=512"]) == 512


def test_warns_in_one_line_when_the_devices_outgrow_the_guest() -> None:
    configs = [CONFIGS / "zns.toml", CONFIGS / "ufs41.toml"]
    warning = host.memory_warning(configs, "2G")
    assert warning is not None and "\n" not in warning
    assert "16384 MiB" in warning and "2048 MiB" in warning and "zns.toml 8192 MiB" in warning
    assert host.memory_warning(configs, "16G") is None
    assert host.memory_warning(configs, "2G", ["--set", "device.capacity_mib=1024"]) is None
    assert host.memory_warning([], "2G") is None
    assert host.memory_warning(configs, "2GB") is None  # qemu judges what we cannot read
