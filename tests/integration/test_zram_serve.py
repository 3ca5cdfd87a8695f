"""zram served for real: nbdkit + the python plugin, libnbd I/O, the control API and `blockemu ctl zram`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blockemu.control.client import ServedDevice
from blockemu.devices.zram.codecs import Codec
from blockemu.devices.zram.zsmalloc import ZsPool
from tests.conftest import require_tool, toml_text

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
PAGE = 4096


def zram_toml(tmp_path: Path, name: str = "zram.toml", **zram: Any) -> Path:
    raw = {"device": {"type": "zram", "name": "zram_it", "capacity_mib": 64},
           "zram": {"policy": "multi", "recomp_algorithms": "zstd", "cost_us": "lz4=4/1, zstd=15/5", **zram}}
    path = tmp_path / name
    path.write_text(toml_text(raw))
    return path


def text_pages(count: int) -> bytes:
    """``count`` compressible 4 KiB pages."""
    return b"".join((f"page {i} of some swapped-out heap, value {i * 37 % 1000}; ".encode() * 120)[:PAGE]
                    for i in range(count))


@pytest.fixture(scope="module")
def served_zram(real_components: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedDevice]:
    with ServedDevice(zram_toml(tmp_path_factory.mktemp("zram"))) as device:
        yield device


def test_data_round_trips_and_attributes_read_like_sysfs(served_zram: ServedDevice) -> None:
    nbd = served_zram.connect()
    assert nbd.get_size() == 64 * MIB
    noise = os.urandom(256 * 1024)
    text = text_pages(64)
    nbd.pwrite(noise, 0)
    nbd.pwrite(text, MIB)
    nbd.pwrite(bytes(64 * 1024), 2 * MIB)
    nbd.pwrite(b"partial!" * 64, 3 * MIB + 1024)  # 512 bytes of a page: read-modify-write inside
    control = served_zram.control
    assert control.get("zram/comp_algorithm") == "[lz4] lz4hc zstd \n"
    assert control.get("zram/recomp_algorithm") == "#1: lz4 lz4hc [zstd] \n"
    stat = [int(x) for x in control.get("zram/mm_stat").split()]
    assert stat[0] == (64 + 64 + 16 + 1) * PAGE  # orig_data_size
    assert stat[2] >= stat[1] and stat[5] == 16 and stat[7] == 64  # same_pages, huge_pages
    assert control.get("zram/io_stat") == "       0        0 0        0\n"
    # Recompression through the kernel's attributes changes sizes, never data.
    control.put("zram/idle", "all")
    state = control.put("zram/recompress", "type=idle")
    assert state["mm_stat"]["compr_data_size"] < stat[1]
    # As zram_recompress: a page is replaced only when zstd puts it in a smaller
    # zsmalloc class (size + the 8-byte handle word), not merely in fewer bytes.
    pool = ZsPool()
    stored = [text[i : i + PAGE] for i in range(0, len(text), PAGE)]
    stored.append(bytes(1024) + b"partial!" * 64 + bytes(PAGE - 1536))
    smaller = sum(1 for page in stored if pool.class_index(len(Codec("zstd").compress(page)))
                  < pool.class_index(len(Codec("lz4").compress(page))))
    assert control.metric("blockemu_zram_recompressed_pages_total") == smaller >= 1
    assert nbd.pread(len(noise), 0) == noise
    assert nbd.pread(len(text), MIB) == text
    assert nbd.pread(64 * 1024, 2 * MIB) == bytes(64 * 1024)
    assert nbd.pread(PAGE, 3 * MIB) == bytes(1024) + b"partial!" * 64 + bytes(PAGE - 1536)
    nbd.trim(MIB, MIB)
    assert control.get("zram/io_stat").split()[3] == "256"  # notify_free: every whole page discarded
    nbd.shutdown()
    assert control.metric("blockemu_zram_cpu_seconds_total", op="compress") > 0
    assert control.device()["zram"]["policy"] == "multi"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "zram/comp_algorithm", b"lzo", 400),
        ("PUT", "zram/recomp_algorithm", b"algo=zstd priority=9", 400),
        ("PUT", "zram/recompress", b"type=sometimes", 400),
        ("PUT", "zram/idle", b"yesterday", 400),
        ("PUT", "zram/mem_limit", b"\xff\xfe", 400),
        ("PUT", "zram/mm_stat", b"0", 405),
        ("GET", "zram/recompress", b"", 405),
        ("GET", "zram/nonsense", b"", 404),
    ],
)
def test_bad_attribute_requests_get_4xx_and_change_nothing(
    served_zram: ServedDevice, method: str, path: str, body: bytes, status: int
) -> None:
    before = served_zram.control.get("zram")
    request = urllib.request.Request(f"{served_zram.control.url}/api/v1/{path}", data=body, method=method)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == status
    assert "error" in json.loads(info.value.read())
    assert served_zram.control.get("zram") == before


def test_ctl_zram_commands(served_zram: ServedDevice) -> None:
    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "blockemu", "ctl", "--url", served_zram.control.url, "zram",
                               *args], capture_output=True, text=True, timeout=60)

    got = ctl("get", "comp_algorithm")
    assert got.returncode == 0 and got.stdout == "[lz4] lz4hc zstd \n"
    assert ctl("set", "--quiet", "recomp_algorithm", "algo=lz4hc", "priority=2").returncode == 0
    assert ctl("get", "recomp_algorithm").stdout == "#1: lz4 lz4hc [zstd] \n#2: lz4 [lz4hc] zstd \n"
    shown = json.loads(ctl("show").stdout)
    assert shown["recomp_algorithm"] == {"1": "zstd:3", "2": "lz4hc:9"}
    bad = ctl("set", "recompress", "type=cold")
    assert bad.returncode == 1 and "type must be idle, huge or huge_idle" in bad.stderr
    assert bad.stderr.count("\n") == 1


def test_mem_limit_gives_eio_and_keeps_data(real_components: None, tmp_path: Path) -> None:
    import nbd as libnbd

    with ServedDevice(zram_toml(tmp_path, mem_limit_mib=1)) as served:
        nbd = served.connect()
        kept = os.urandom(128 * PAGE)  # half the limit, stored huge
        nbd.pwrite(kept, 0)
        with pytest.raises(libnbd.Error) as info:
            nbd.pwrite(os.urandom(256 * PAGE), MIB)
        assert info.value.errno == "EIO"  # as Linux's zram
        assert nbd.pread(len(kept), 0) == kept
        assert nbd.pread(PAGE, MIB) == bytes(PAGE)  # nothing of the failed write was stored
        assert served.control.get("zram/io_stat").split()[1] == "1"
        nbd.shutdown()


def test_async_compression_flush_waits_for_staging(real_components: None, tmp_path: Path) -> None:
    with ServedDevice(zram_toml(tmp_path, policy="single", async_workers=2, staging_pages=64,
                                batch_pages=16)) as served:
        nbd = served.connect()
        payload = text_pages(512)
        nbd.pwrite(payload, 0)
        nbd.flush()
        state = served.control.get("zram")
        assert state["staged_pages"] == 0
        assert state["mm_stat"]["compr_data_size"] < len(payload) // 2
        assert nbd.pread(len(payload), 0) == payload
        assert served.control.metric("blockemu_zram_staged_pages") == 0
        nbd.shutdown()


def test_holds_a_swap_area_and_an_ext4_image(served_zram: ServedDevice, tmp_path: Path) -> None:
    """What the VM test does with a kernel: here, images made by mkswap/mkfs.ext4 copied through NBD."""
    mkfs = require_tool("mkfs.ext4")
    mkswap = require_tool("mkswap")
    fsck = require_tool("e2fsck")
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(16 * MIB)
    subprocess.run([mkfs, "-q", "-F", "-b", "4096", str(image)], check=True, timeout=60)
    swap = tmp_path / "swap.img"
    with open(swap, "wb") as f:
        f.truncate(8 * MIB)
    subprocess.run([mkswap, str(swap)], check=True, capture_output=True, timeout=60)
    nbd = served_zram.connect()
    nbd.pwrite(image.read_bytes(), 32 * MIB)
    nbd.pwrite(swap.read_bytes(), 48 * MIB)
    whole = nbd.pread(16 * MIB, 32 * MIB)
    assert whole == image.read_bytes()
    copy = tmp_path / "copy.img"
    copy.write_bytes(whole)
    check = subprocess.run([fsck, "-fn", str(copy)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    swap_back = nbd.pread(8 * MIB, 48 * MIB)
    assert swap_back[PAGE - 10 : PAGE] == b"SWAPSPACE2" and swap_back == swap.read_bytes()
    nbd.shutdown()
