"""blockemu's ctypes copies of ublk_cmd.h, io_uring.h and blkzoned.h, checked against the real headers.

A small C program is compiled against Debian's Linux 6.12 uapi headers
(scripts/fetch_ublk_header.sh unpacks them into .cache/linux-uapi) and prints
sizeof/offsetof of every field the Python side declares, and every constant
it uses; the test compares them one by one.  Without the headers or a C
compiler it skips, and under CI=true it fails.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from blockemu.frontends.ublk import uapi, uring
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
UAPI = Path(os.environ.get("BLOCKEMU_CACHE_DIR", REPO / ".cache")) / "linux-uapi" / "include" / "uapi"

HEADERS = ("ublk_cmd.h", "io_uring.h", "blkzoned.h")
# ctypes class -> C struct name; unions the Python side flattens are checked
# through their first member's name (cmd_op shares off's low bytes, etc.).
STRUCTS: dict[type[ctypes.Structure], str] = {
    uapi.UblksrvCtrlCmd: "ublksrv_ctrl_cmd",
    uapi.UblksrvCtrlDevInfo: "ublksrv_ctrl_dev_info",
    uapi.UblksrvIoDesc: "ublksrv_io_desc",
    uapi.UblksrvIoCmd: "ublksrv_io_cmd",
    uapi.UblkParamBasic: "ublk_param_basic",
    uapi.UblkParamDiscard: "ublk_param_discard",
    uapi.UblkParamDevt: "ublk_param_devt",
    uapi.UblkParamZoned: "ublk_param_zoned",
    uapi.UblkParams: "ublk_params",
    uapi.BlkZone: "blk_zone",
    uring.IoSqringOffsets: "io_sqring_offsets",
    uring.IoCqringOffsets: "io_cqring_offsets",
    uring.IoUringParams: "io_uring_params",
    uring.IoUringSqe: "io_uring_sqe",
    uring.IoUringCqe: "io_uring_cqe",
}
# Python field names that are a differently named union member in C.
C_FIELD = {("io_uring_sqe", "pad2"): "__pad2"}

CONSTANTS = {
    **{name: getattr(uapi, name) for name in dir(uapi)
       if name.startswith(("UBLK_", "UBLKSRV_", "BLK_ZONE_"))},
    **{name: getattr(uring, name) for name in dir(uring)
       if name.startswith(("IORING_OP_", "IORING_SETUP_", "IORING_OFF_", "IORING_ENTER_"))},
}


def _c_program() -> str:
    lines = [
        "#include <stdio.h>", "#include <stddef.h>", "#include <errno.h>",
        "#include <linux/ublk_cmd.h>", "#include <linux/io_uring.h>", "#include <linux/blkzoned.h>",
        "int main(void) {",
    ]
    for cls, c_name in STRUCTS.items():
        lines.append(f'printf("sizeof {c_name} %zu\\n", sizeof(struct {c_name}));')
        for field_name, *_ in cls._fields_:
            c_field = C_FIELD.get((c_name, field_name), field_name)
            lines.append(f'printf("offsetof {c_name}.{field_name} %zu\\n", offsetof(struct {c_name}, {c_field}));')
    for name in sorted(CONSTANTS):
        lines.append(f'printf("const {name} %lld\\n", (long long)({name}));')
    lines += ["return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def kernel_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    require((UAPI / "linux" / "ublk_cmd.h").is_file(),
            f"Linux 6.12 uapi headers at {UAPI} (scripts/fetch_ublk_header.sh)")
    compiler = shutil.which("cc") or shutil.which("gcc")
    require(compiler is not None, "a C compiler (apt-get install gcc)")
    assert compiler is not None
    folder = tmp_path_factory.mktemp("uapi")
    # The package's include/uapi is the kernel's source form (its stddef.h
    # wants kernel-internal headers), so only the three headers under test
    # come from it; linux/types.h and asm/ come from the host's linux-libc-dev.
    (folder / "linux").mkdir()
    for header in HEADERS:
        (folder / "linux" / header).symlink_to(UAPI / "linux" / header)
    source, binary = folder / "layout.c", folder / "layout"
    source.write_text(_c_program())
    build = subprocess.run([compiler, "-I", str(folder), "-o", str(binary), str(source)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    return {key: int(value) for key, value in (line.rsplit(" ", 1) for line in output.splitlines())}


@pytest.mark.parametrize("cls", list(STRUCTS), ids=lambda cls: STRUCTS[cls])
def test_structure_matches_header(kernel_layout: dict[str, int], cls: type[ctypes.Structure]) -> None:
    c_name = STRUCTS[cls]
    if c_name == "io_uring_sqe":
        # The header's size is the 64-byte base; the 128-byte SQE is two of them.
        assert ctypes.sizeof(cls) == kernel_layout[f"sizeof {c_name}"] == uring.SQE_SIZE
        assert uring._SQE_FORMAT.size == uring.SQE_SIZE
    elif c_name == "io_uring_cqe":
        assert uring._CQE_FORMAT.size == ctypes.sizeof(cls) == kernel_layout[f"sizeof {c_name}"]
    else:
        assert ctypes.sizeof(cls) == kernel_layout[f"sizeof {c_name}"]
    for field_name, *_ in cls._fields_:
        assert getattr(cls, field_name).offset == kernel_layout[f"offsetof {c_name}.{field_name}"], field_name


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_constant_matches_header(kernel_layout: dict[str, int], name: str) -> None:
    assert CONSTANTS[name] == kernel_layout[f"const {name}"]


def test_sqe_command_area_is_where_the_header_puts_cmd(kernel_layout: dict[str, int]) -> None:
    # cmd[] overlays addr3: the URING_CMD payload starts there in a 128-byte SQE.
    assert uring.SQE_CMD_OFFSET == kernel_layout["offsetof io_uring_sqe.addr3"]


def test_user_copy_offset_encodes_queue_and_tag() -> None:
    assert uapi.user_copy_offset(0, 0) == 0x80000000
    assert uapi.user_copy_offset(0, 1) == 0x80000000 + (1 << 25)
    assert uapi.user_copy_offset(2, 3) == 0x80000000 + (2 << 41) + (3 << 25)
