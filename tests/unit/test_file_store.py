"""The file store and its on-disk format: commits, undo rollback, and refusing damage."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from blockemu.store import open_store
from blockemu.store.file import (
    _RECORD,
    _UNDO_HEADER,
    BLOCK,
    ByteChunks,
    FileStore,
    StoreError,
    check_store,
    decode_checkpoint,
    encode_checkpoint,
)

SIZE = 4 * 1024 * 1024
GEOMETRY = {"device.type": "ufs", "device.capacity_mib": 4, "ufs.dies": 8}


def new_store(path: Path, geometry: dict[str, object] | None = None, fsync: bool = False) -> FileStore:
    return FileStore(path, SIZE, GEOMETRY if geometry is None else geometry, fsync)


def contents(store: FileStore) -> bytes:
    buf = bytearray(SIZE)
    store.read_into(0, memoryview(buf))
    return bytes(buf)


def fill(tag: int, length: int = BLOCK) -> bytes:
    return bytes([tag]) * length


def arrays(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "l2p": rng.integers(-1, 10_000, 1000).astype(np.int64),
        "big": np.array([2**40, -(2**40)], dtype=np.int64),  # does not fit 32 bits: stored as it is
        "flags": rng.random(17) < 0.5,
        "defrag_size": np.array([2**64 - 1], dtype=np.uint64),
        "names": np.array(["ZoneFullError", "TooManyOpenZonesError"]),
        "empty": np.array([], dtype=np.int64),
        "table": np.arange(12, dtype=np.int64).reshape(4, 3),
        "empty_table": np.zeros((0, 3), dtype=np.int64),  # a zram pool with no objects
    }


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert np.array_equal(got[name], want[name]), name


def committed_store(path: Path) -> tuple[FileStore, bytes]:
    """A store with data in blocks 0-3 and 10 at its last commit; returns it and that image."""
    store = new_store(path)
    store.checkpoint(arrays())
    store.write(0, fill(1, 4 * BLOCK))
    store.write(10 * BLOCK, fill(2))
    store.checkpoint(arrays(2))
    return store, contents(store)


def test_a_commit_round_trips_data_and_state(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    assert store.saved_state is None and store.generation == 0
    store.write(5000, b"hello")
    store.checkpoint(arrays(3))
    image = contents(store)
    store.close()
    assert sorted(os.listdir(tmp_path)) == ["data", "lock", "state", "undo"]
    again = new_store(tmp_path)
    assert again.generation == 1
    assert again.saved_state is not None
    assert_same_arrays(again.saved_state, arrays(3))
    assert contents(again) == image and image[5000:5005] == b"hello"
    again.close()


def test_everything_since_the_last_commit_is_undone(tmp_path: Path) -> None:
    store, committed = committed_store(tmp_path)
    store.write(2 * BLOCK, fill(7, 3 * BLOCK))  # over data and into a hole
    store.write(2 * BLOCK + 100, b"again")  # the same blocks twice: the first pre-image counts
    store.write(20 * BLOCK + 300, b"unaligned, in a hole")
    store.zero(0, BLOCK + 512)  # a whole block and part of the next
    store.zero(10 * BLOCK, 64 * BLOCK)  # data and holes
    store.write(12 * BLOCK, fill(8))  # a hole that a zeroing skipped, written afterwards
    store.zero(30 * BLOCK + 8, 100)  # the same within one block
    store.write(30 * BLOCK, fill(9))
    store.zero(0, 5)  # a block already recorded
    assert contents(store) != committed
    store.close()  # a kill -9: no commit
    again = new_store(tmp_path)
    assert contents(again) == committed
    assert again.undo_bytes == 0 and again.generation == 2
    again.close()


def test_zeroing_punches_holes_and_zeros_need_no_undo(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.write(0, os.urandom(SIZE))
    store.checkpoint({})
    allocated = os.stat(tmp_path / "data").st_blocks
    store.zero(BLOCK, SIZE - 2 * BLOCK)
    assert os.stat(tmp_path / "data").st_blocks < allocated / 2
    image = contents(store)
    assert image[BLOCK:-BLOCK] == bytes(SIZE - 2 * BLOCK)
    store.checkpoint({})
    store.zero(0, SIZE // 2)  # mostly zeros already: only block 0 has a pre-image
    assert store.undo_bytes == _RECORD.size + BLOCK
    store.close()


def test_a_corrupt_checkpoint_byte_is_refused(tmp_path: Path) -> None:
    store, _ = committed_store(tmp_path)
    store.close()
    pristine = (tmp_path / "state").read_bytes()
    for position in (12, 40, len(pristine) // 2, len(pristine) - 1):
        damaged = bytearray(pristine)
        damaged[position] ^= 0x20
        (tmp_path / "state").write_bytes(bytes(damaged))
        with pytest.raises(StoreError, match=r"^\S+/state: checksum mismatch \(stored 0x[0-9a-f]{8}, computed "
                                             r"0x[0-9a-f]{8}\): the checkpoint is corrupt; refusing to start$"):
            new_store(tmp_path)
        with pytest.raises(StoreError, match="checksum mismatch"):
            check_store(tmp_path, SIZE, GEOMETRY)
    (tmp_path / "state").write_bytes(b"not ours" + pristine[8:])
    with pytest.raises(StoreError, match="state: not a blockemu state checkpoint"):
        new_store(tmp_path)
    (tmp_path / "state").write_bytes(pristine[:10])
    with pytest.raises(StoreError, match="state: not a blockemu state checkpoint"):
        new_store(tmp_path)


def test_a_checkpoint_of_another_format_version_is_refused() -> None:
    parts = encode_checkpoint(3, GEOMETRY, arrays())
    blob = bytearray(b"".join(bytes(p) for p in parts[:-1]))
    struct.pack_into("<I", blob, 8, 2)
    blob += struct.pack("<I", zlib.crc32(blob))
    with pytest.raises(StoreError, match="x/state: checkpoint format version 2; this blockemu reads version 1"):
        decode_checkpoint(bytes(blob), "x/state")
    decoded = decode_checkpoint(b"".join(bytes(p) for p in parts), "x/state")
    assert decoded.generation == 3 and decoded.geometry == GEOMETRY
    assert_same_arrays(decoded.arrays, arrays())


def test_integer_arrays_are_stored_narrow_when_they_fit() -> None:
    small = encode_checkpoint(1, {}, {"a": np.arange(1000, dtype=np.int64)})
    large = encode_checkpoint(1, {}, {"a": np.arange(1000, dtype=np.int64) << 40})
    assert sum(len(p) for p in large) - sum(len(p) for p in small) == 4 * 1000
    decoded = decode_checkpoint(b"".join(bytes(p) for p in small), "s")
    assert decoded.arrays["a"].dtype == np.int64 and decoded.arrays["a"][-1] == 999


def test_another_geometry_is_refused_naming_the_setting(tmp_path: Path) -> None:
    store, _ = committed_store(tmp_path)
    store.close()
    wrong = dict(GEOMETRY, **{"ufs.dies": 4})
    message = (r"state: written for \[ufs\] dies = 8, the configuration has 4; a store opens only with the "
               r"geometry it was created with \(use another \[store\] path for a new device\)$")
    with pytest.raises(StoreError, match=message):
        new_store(tmp_path, wrong)
    with pytest.raises(StoreError, match=message):
        check_store(tmp_path, SIZE, wrong)
    with pytest.raises(StoreError, match=r"\[device\] type = 'ufs', the configuration has 'zns'"):
        new_store(tmp_path, dict(GEOMETRY, **{"device.type": "zns"}))
    with pytest.raises(StoreError, match="data: 4194304 bytes, the device has 8388608"):
        FileStore(tmp_path, 2 * SIZE, GEOMETRY)
    new_store(tmp_path).close()  # the right one still opens


def undo_records(path: Path) -> list[tuple[int, int, int]]:
    """(position, kind, length) of each record in an undo journal."""
    blob = path.read_bytes()
    position, found = _UNDO_HEADER.size, []
    while position < len(blob):
        _, kind, _, _, length, _, _ = _RECORD.unpack_from(blob, position)
        found.append((position, kind, length))
        position += _RECORD.size + (length if kind == 1 else 0)
    return found


def test_a_torn_tail_record_is_ignored(tmp_path: Path) -> None:
    store, committed = committed_store(tmp_path)
    store.write(0, fill(5))  # block 0: a data pre-image
    store.write(3 * BLOCK, fill(6))  # block 3: the record a kill cut short
    store.close()
    undo = tmp_path / "undo"
    _, last = undo_records(undo)
    for cut in (last[0] + 10, last[0] + _RECORD.size + 100):  # inside the header, inside the payload
        os.truncate(undo, cut)
        # The killed append never reached the data write: put block 3 back as it was.
        data = tmp_path / "data"
        with data.open("r+b") as handle:
            handle.seek(3 * BLOCK)
            handle.write(committed[3 * BLOCK : 4 * BLOCK])
        again = new_store(tmp_path)
        assert contents(again) == committed  # block 0 rolled back, the torn record ignored
        again.write(0, fill(5))
        again.write(3 * BLOCK, fill(6))
        again.close()
    # A host crash can also leave a complete-looking last record with a bad
    # payload, or zeros past the end: both are torn tails.
    blob = bytearray(undo.read_bytes())
    blob[-1] ^= 0xFF
    undo.write_bytes(bytes(blob) + bytes(3 * BLOCK))
    with (tmp_path / "data").open("r+b") as handle:
        handle.seek(3 * BLOCK)
        handle.write(committed[3 * BLOCK : 4 * BLOCK])
    again = new_store(tmp_path)
    assert contents(again) == committed
    again.close()


def test_a_damaged_record_before_the_tail_is_refused(tmp_path: Path) -> None:
    store, _ = committed_store(tmp_path)
    store.write(0, fill(5))
    store.write(3 * BLOCK, fill(6))
    store.close()
    undo = tmp_path / "undo"
    pristine = undo.read_bytes()
    first, _ = undo_records(undo)
    payload = bytearray(pristine)
    payload[first[0] + _RECORD.size + 7] ^= 1
    undo.write_bytes(bytes(payload))
    message = r"undo: record at byte 16: payload checksum mismatch and more records follow \(not a torn tail\)"
    with pytest.raises(StoreError, match=message):
        new_store(tmp_path)
    with pytest.raises(StoreError, match=message):
        check_store(tmp_path, SIZE, GEOMETRY)
    header = bytearray(pristine)
    header[first[0] + 20] ^= 1  # the offset field
    undo.write_bytes(bytes(header))
    with pytest.raises(StoreError, match=r"undo: damaged record header at byte 16 of \d+ \(not a torn tail\)"):
        new_store(tmp_path)
    undo.write_bytes(b"garbage!" + pristine[8:])
    with pytest.raises(StoreError, match="undo: not a blockemu undo journal"):
        new_store(tmp_path)
    undo.write_bytes(pristine)
    new_store(tmp_path).close()  # undamaged, it opens (and rolls back)


def test_records_of_an_older_generation_are_stale_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    store, _ = committed_store(tmp_path)
    old_state = (tmp_path / "state").read_bytes()
    store.write(0, fill(9))
    # Killed between the checkpoint's rename and the journal's truncation:
    journal = (tmp_path / "undo").read_bytes()
    store.checkpoint(arrays(4))
    image = contents(store)
    store.close()
    (tmp_path / "undo").write_bytes(journal)
    again = new_store(tmp_path)
    assert contents(again) == image and image[:BLOCK] == fill(9)  # the stale record was not applied
    again.write(0, fill(10))
    again.close()
    (tmp_path / "state").write_bytes(old_state)  # an older checkpoint than the journal
    with pytest.raises(StoreError, match="undo: record at byte 16 is of generation 3, newer than the checkpoint's 2"):
        new_store(tmp_path)


def test_a_directory_in_use_is_refused(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    with pytest.raises(StoreError, match=r"in use by another blockemu process \(it holds \S+/lock\)"):
        new_store(tmp_path)
    with pytest.raises(StoreError, match="in use"):
        check_store(tmp_path, SIZE, GEOMETRY)
    store.close()
    new_store(tmp_path).close()


def test_creation_interrupted_by_a_kill_starts_afresh_or_completes(tmp_path: Path) -> None:
    check_store(tmp_path, SIZE, GEOMETRY)  # an empty directory is fine, and stays empty but for the lock
    assert os.listdir(tmp_path) == ["lock"]
    store = new_store(tmp_path)
    store.write(0, fill(3))
    store.close()  # killed before the first checkpoint
    assert "data" not in os.listdir(tmp_path)
    store = new_store(tmp_path)
    assert store.saved_state is None and contents(store) == bytes(SIZE)
    store.checkpoint(arrays())
    store.close()
    os.rename(tmp_path / "data", tmp_path / "data.new")  # killed between the two renames
    check_store(tmp_path, SIZE, GEOMETRY)
    store = new_store(tmp_path)
    assert store.saved_state is not None
    store.close()
    assert "data" in os.listdir(tmp_path)
    (tmp_path / "state").unlink()
    with pytest.raises(StoreError, match=r"state: missing, but \S+/data exists: not a complete blockemu store"):
        new_store(tmp_path)
    with pytest.raises(StoreError, match="state: missing"):
        check_store(tmp_path, SIZE, GEOMETRY)


def test_open_store_chooses_by_name(tmp_path: Path) -> None:
    store = open_store("file", SIZE, str(tmp_path), geometry=GEOMETRY, fsync=True)
    assert isinstance(store, FileStore) and store.fsync
    store.write(0, b"x")
    store.checkpoint({})
    store.close()
    with pytest.raises(ValueError, match="needs the device's geometry"):
        open_store("file", SIZE, str(tmp_path))
    with pytest.raises(ValueError, match="allowed: memory, file"):
        open_store("tape", SIZE)


def test_byte_chunks_are_saved_as_the_array_they_stand_for() -> None:
    chunked = encode_checkpoint(1, {}, {"objects": ByteChunks([b"ab", b"", b"cde"]), "n": np.arange(3)})
    joined = encode_checkpoint(1, {}, {"objects": np.frombuffer(b"abcde", dtype=np.uint8), "n": np.arange(3)})
    assert b"".join(bytes(p) for p in chunked) == b"".join(bytes(p) for p in joined)
    decoded = decode_checkpoint(b"".join(bytes(p) for p in chunked), "s").arrays["objects"]
    assert decoded.dtype == np.uint8 and decoded.tobytes() == b"abcde"
