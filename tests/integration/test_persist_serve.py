"""Persistent devices for real: libnbd writes, a flush, kill -9 of the server, a restart, the same device.

Each test serves a device with ``[store] backend = "file"`` in a temporary
directory, commits some writes and control-API changes with a flush, makes
more without one, kills the server's whole process group with SIGKILL (the
``blockemu serve`` process and its nbdkit), and restarts it with the same
configuration: reads and the control API must show the committed device
exactly, and nothing of what came after.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from blockemu.control.client import ServedDevice
from tests.conftest import SMALL_UFS, toml_text

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
SECTOR = 4096
# Parts of GET /api/v1/device that belong to the running server, not the device.
RUNTIME_KEYS = ("timing", "faults", "io", "queue_depth", "store", "write_cache")


@pytest.fixture
def start_server(real_components: None) -> Iterator[Callable[..., ServedDevice]]:
    """``ServedDevice(...).start()``, stopped at teardown even when the test failed before killing it."""
    started: list[ServedDevice] = []

    def start(*args: Any) -> ServedDevice:
        started.append(ServedDevice(*args).start())
        return started[-1]

    yield start
    for device in started:
        device.stop()  # after kill_9 this only reaps


def write_config(tmp_path: Path, raw: dict[str, Any]) -> tuple[Path, Path]:
    store = tmp_path / "store"
    store.mkdir()
    path = tmp_path / "device.toml"
    path.write_text(toml_text({**raw, "store": {"backend": "file", "path": str(store)}}))
    return path, store


def kill_9(device: ServedDevice, store: Path) -> None:
    """SIGKILL the server's process group and wait until nothing of it holds the store."""
    assert device.process is not None
    os.killpg(device.process.pid, signal.SIGKILL)
    device.process.wait()
    deadline = time.monotonic() + 30
    with (store / "lock").open("rb") as lock:
        while True:  # nbdkit, the holder, may still be exiting
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the killed server still holds the store"
                time.sleep(0.05)
    device.stop()  # collects its output, removes its run directory


def device_part(device: ServedDevice) -> dict[str, Any]:
    return {k: v for k, v in device.control.device().items() if k not in RUNTIME_KEYS}


def wait_for_gc_to_rest(device: ServedDevice, start_free_zones: int = 3) -> None:
    deadline = time.monotonic() + 60
    while True:
        gc = device.control.get("gc")
        if gc["gc_victim"] is None and gc["free_zones"] > start_free_zones:
            return
        assert time.monotonic() < deadline, f"background GC still busy: {gc}"
        time.sleep(0.05)


def read_all(nbd: Any) -> bytes:
    size = nbd.get_size()
    return b"".join(bytes(nbd.pread(min(8 * MIB, size - at), at)) for at in range(0, size, 8 * MIB))


def test_ufs_survives_kill_9_and_a_corrupt_checkpoint_is_refused(start_server: Callable[..., ServedDevice],
                                                                  tmp_path: Path) -> None:
    config, store = write_config(tmp_path, SMALL_UFS)
    served = start_server(config)
    nbd = served.connect()
    nbd.pwrite(os.urandom(MIB), 0)
    for i in range(64):  # 8 files of 256 KiB written interleaved: fragmented
        for f in range(8):
            nbd.pwrite(os.urandom(SECTOR), 8 * MIB + f * MIB + i * SECTOR)
    nbd.trim(MIB, 10 * MIB)  # (count, offset): file 2
    served.control.put("hid/analysis_trigger", "enable")
    assert served.control.wait_hid("defrag_required") == "defrag_required"
    nbd.pwrite(b"F" * SECTOR, 40 * MIB, 1)  # LIBNBD_CMD_FLAG_FUA
    nbd.flush()
    state = device_part(served)
    hid, fragmentation = served.control.get("hid"), served.control.get("fragmentation")
    committed = read_all(nbd)
    assert state["hid"]["state"] == "defrag_required" and fragmentation["fragmented_bytes"] > 0

    nbd.pwrite(os.urandom(2 * MIB), 0)  # over committed data and into unwritten space
    nbd.pwrite(b"u" * 65536, 50 * MIB)
    nbd.trim(MIB, 12 * MIB)  # file 4, never committed
    served.control.put("hid/defrag_trigger", "enable")
    served.control.wait_hid("defrag_completed")
    assert served.control.get("hid")["state"] == "defrag_completed"
    kill_9(served, store)

    with ServedDevice(config) as again:
        assert device_part(again) == state
        assert again.control.get("hid") == hid
        assert again.control.get("fragmentation") == fragmentation
        nbd = again.connect()
        assert read_all(nbd) == committed
        nbd.shutdown()

    # One flipped byte in the checkpoint: serve refuses, in one line, naming the file.
    blob = bytearray((store / "state").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (store / "state").write_bytes(bytes(blob))
    result = subprocess.run([sys.executable, "-m", "blockemu", "serve", str(config), "--unix",
                             str(tmp_path / "s.sock")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"blockemu: {store}/state: checksum mismatch (stored 0x")
    assert result.stderr.endswith("): the checkpoint is corrupt; refusing to start\n")
    assert not (tmp_path / "s.sock").exists()
    blob[len(blob) // 2] ^= 0x01
    (store / "state").write_bytes(bytes(blob))
    # Another geometry is refused the same way; service times may change.
    result = subprocess.run([sys.executable, "-m", "blockemu", "serve", str(config), "--set", "ufs.dies=8"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr == (f"blockemu: {store}/state: written for [ufs] dies = 4, the configuration has 8; a store "
                             "opens only with the geometry it was created with (use another [store] path for a "
                             "new device)\n")
    with ServedDevice(config, ["ufs.read_setup_us=30"]) as again:
        assert again.connect().pread(SECTOR, 40 * MIB) == b"F" * SECTOR


def test_zns_zones_survive_kill_9(start_server: Callable[..., ServedDevice], tmp_path: Path) -> None:
    zone = 2 * MIB
    raw = {"device": {"type": "zns", "name": "zns_persist", "capacity_mib": 20},
           "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 1, "max_open_zones": 3,
                   "max_active_zones": 4}}
    config, store = write_config(tmp_path, raw)
    served = start_server(config)
    nbd, control = served.connect(), served.control
    nbd.pwrite(os.urandom(256 * 1024), 0)  # conventional zone
    nbd.pwrite(os.urandom(64 * 1024), zone)  # zone 1: implicitly open
    control.zone_append(2, os.urandom(8 * SECTOR))
    control.zone_action(2, "close")
    control.zone_action(3, "open")
    nbd.pwrite(os.urandom(SECTOR), 4 * zone)
    control.zone_action(4, "finish")
    nbd.pwrite(os.urandom(SECTOR), 5 * zone)
    control.zone_action(5, "reset")
    nbd.pwrite(os.urandom(MIB), 6 * zone)  # a whole zone capacity: full
    nbd.flush()
    zones, state, committed = control.zones(), device_part(served), read_all(nbd)
    assert [z["condition"] for z in zones[:8]] == ["not_write_pointer", "implicitly_open", "closed",
                                                   "explicitly_open", "full", "empty", "full", "empty"]

    nbd.pwrite(os.urandom(SECTOR), zone + 64 * 1024)  # at zone 1's write pointer
    nbd.pwrite(os.urandom(SECTOR), SECTOR)  # conventional overwrite
    control.zone_action(6, "reset")  # a full zone's data, gone unless committed
    control.zone_action(1, "finish")
    control.zone_append(7, os.urandom(SECTOR))
    assert control.zones() != zones
    kill_9(served, store)

    with ServedDevice(config) as again:
        assert again.control.zones() == zones
        assert device_part(again) == state
        nbd = again.connect()
        assert read_all(nbd) == committed
        nbd.pwrite(b"w" * SECTOR, zone + 64 * 1024)  # writing carries on at the committed write pointer
        assert again.control.zone(1)["wp"] == zone + 64 * 1024 + SECTOR
        nbd.shutdown()


def test_zns_ftl_map_survives_kill_9(start_server: Callable[..., ServedDevice], tmp_path: Path) -> None:
    raw = {"device": {"type": "zns_ftl", "name": "log_persist", "capacity_mib": 32},
           "zns": {"zone_size_mib": 1, "max_open_zones": 6, "max_active_zones": 8},
           "zns_ftl": {"gc_policy": "zone_aware", "overprovision_percent": 25.0, "gc_start_free_zones": 3}}
    config, store = write_config(tmp_path, raw)
    served = start_server(config, ["store.fsync=false"])
    nbd = served.connect()
    size = nbd.get_size()
    for at in range(0, size, MIB):
        nbd.pwrite(os.urandom(min(MIB, size - at)), at)
    rng = random.Random(7)
    for _ in range(1500):  # overwrites: garbage collection moves blocks and resets zones
        nbd.pwrite(os.urandom(SECTOR), rng.randrange(size // SECTOR) * SECTOR)
    wait_for_gc_to_rest(served)  # so that what the flush commits is what we look at next
    nbd.flush()
    state, committed = device_part(served), read_all(nbd)
    assert state["gc"]["zones_collected"] > 0
    for _ in range(1500):
        nbd.pwrite(os.urandom(SECTOR), rng.randrange(size // SECTOR) * SECTOR)
    wait_for_gc_to_rest(served)
    # GC reset zones whose blocks the committed map still points at: only the
    # undo journal can bring their data back.
    assert served.control.get("gc")["zones_collected"] > state["gc"]["zones_collected"]
    kill_9(served, store)

    with ServedDevice(config) as again:
        assert device_part(again) == state
        assert read_all(again.connect()) == committed


def text_pages(tag: int, count: int) -> bytes:
    """``count`` compressible 4 KiB pages (none a same page) that zstd packs into a smaller size class than lz4."""
    words = ("alpha", "beta", "gamma", "delta", "epsilon")
    pages = []
    for i in range(count):
        page, n = bytearray(), tag * 100_000 + i * 1000
        while len(page) < SECTOR:
            page += f"{words[n % 5]} {n} ".encode()
            n += 1 + n % 3
        pages.append(bytes(page[:SECTOR]))
    return b"".join(pages)


def zram_state(device: ServedDevice) -> dict[str, Any]:
    control = device.control
    return {"device": device_part(device),
            **{name: control.get(f"zram/{name}") for name in ("mm_stat", "io_stat", "comp_algorithm",
                                                              "recomp_algorithm")},
            "recompressed": control.metric("blockemu_zram_recompressed_pages_total"),
            "stored": control.metrics_text().count("blockemu_zram_stored_pages{")}


def test_zram_pages_and_index_survive_kill_9(start_server: Callable[..., ServedDevice], tmp_path: Path) -> None:
    # Asynchronous compression on: a flush must include what the executor had not compressed yet.
    raw = {"device": {"type": "zram", "name": "zram_persist", "capacity_mib": 32},
           "zram": {"recomp_algorithms": "zstd", "cost_us": "lz4=4/1, lz4hc=20/1, zstd=15/5", "async_workers": 2,
                    "staging_pages": 256, "batch_pages": 16}}
    config, store = write_config(tmp_path, raw)
    served = start_server(config)
    nbd, control = served.connect(), served.control
    nbd.pwrite(os.urandom(256 * 1024), 0)  # huge pages
    nbd.pwrite(text_pages(1, 512), MIB)  # 2 MiB compressed
    nbd.pwrite(bytes(64 * 1024) + b"\x5a" * 64 * 1024, 4 * MIB)  # same pages
    nbd.pwrite(b"partial!" * 64, 5 * MIB + 1024)  # read-modify-write inside a page
    nbd.trim(64 * 1024, 2 * MIB)  # 16 pages, still staged or not: notify_free 16 either way
    nbd.flush()  # staged pages stored: the idle marking below sees them
    control.put("zram/idle", "all")
    control.put("zram/recompress", "type=idle max_pages=300")  # per-slot algorithm: zstd at priority 1
    control.put("zram/recomp_algorithm", "algo=lz4hc priority=2")
    control.put("zram/mem_limit", "24M")
    nbd.pwrite(text_pages(3, 1), 7 * MIB, 1)  # LIBNBD_CMD_FLAG_FUA: a commit
    nbd.pwrite(text_pages(2, 64), 6 * MIB)  # staged; the flush compresses and commits them
    nbd.flush()
    state, committed = zram_state(served), read_all(nbd)
    stat = state["device"]["zram"]["mm_stat"]
    assert stat["huge_pages"] == 64 and stat["same_pages"] == 32 and stat["mem_limit"] == 24 * MIB
    assert state["io_stat"].split()[3] == "16" and state["recompressed"] > 100
    assert state["recomp_algorithm"] == "#1: lz4 lz4hc [zstd] \n#2: lz4 [lz4hc] zstd \n"

    nbd.pwrite(text_pages(4, 128), MIB)  # over committed pages
    nbd.pwrite(os.urandom(MIB), 20 * MIB)
    nbd.trim(MIB, 6 * MIB)
    control.put("zram/comp_algorithm", "zstd")
    control.put("zram/recompress", "type=huge")
    control.put("zram/compact", "1")
    control.put("zram/mem_limit", "0")
    assert zram_state(served) != state
    kill_9(served, store)

    with ServedDevice(config) as again:
        assert zram_state(again) == state
        nbd = again.connect()
        assert read_all(nbd) == committed
        nbd.shutdown()
    # The algorithms bind the store: another one is refused in one line before nbdkit starts.
    result = subprocess.run([sys.executable, "-m", "blockemu", "serve", str(config), "--set",
                             "zram.recomp_algorithms=lz4hc"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr == (f"blockemu: {store}/state: written for [zram] recomp_algorithms = 'zstd', the "
                             "configuration has 'lz4hc'; a store opens only with the geometry it was created with "
                             "(use another [store] path for a new device)\n")
