"""Every sh, python and console block of README.md and docs/*.md runs, in page order, against real served
devices (issue 24; the rules: docs/testing.md, Docs that run).  Blocks marked slow run in `make docs-slow`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import require, require_tool
from tests.docs.mdblocks import PAGES, ROOT, RUN_LANGS, DocsError, blocks, has_slow, run_page

SLOW = os.environ.get("BLOCKEMU_DOCS_SLOW") == "1"  # set by `make docs-slow`


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _run(page: Path, *, slow: bool = False) -> None:
    """Fail with the harness's own message (file:line, the block, its output), not a traceback."""
    try:
        run_page(page, slow=slow)
    except DocsError as err:
        message = str(err)
    else:
        return
    pytest.fail(message, pytrace=False)


def _real_components() -> None:
    require_tool("nbdkit")
    try:
        import nbd  # noqa: F401
    except ImportError:
        require(False, "libnbd python binding (python3-libnbd)")


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_fence_follows_the_rules(page: Path) -> None:
    """A fence names its language and its directives are known: no command block escapes the run below."""
    try:
        blocks(page)
    except DocsError as err:
        message = str(err)
    else:
        return
    pytest.fail(message, pytrace=False)


@pytest.mark.integration
@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_the_page_runs_as_written(page: Path) -> None:
    try:
        runnable = any(b.lang in RUN_LANGS or b.arg("output") for b in blocks(page))
    except DocsError:
        runnable = True  # run_page names what breaks the rules
    if not runnable:
        pytest.skip("no block to run")
    _real_components()
    _run(page)


@pytest.mark.docs_slow
@pytest.mark.timeout(4 * 3600)
@pytest.mark.parametrize("page", [p for p in PAGES if has_slow(p)], ids=_name)
def test_the_page_runs_with_its_slow_blocks(page: Path) -> None:
    if not SLOW:
        pytest.skip("the slow tier: make docs-slow")
    _real_components()
    _run(page, slow=True)
