"""Every sh, python and console block of README.md and docs/*.md runs, in page order, against real served
devices (issue 24; the rules: docs/testing.md, Docs that run).  Blocks marked slow run in `make docs-slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require, require_tool
from tests.docs.mdblocks import PAGES, ROOT, RUN_LANGS, DocsError, blocks, has_slow, run_page


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


def _runnable(page: Path) -> bool:
    try:
        return any(b.lang in RUN_LANGS or b.arg("output") for b in blocks(page))
    except DocsError:
        return True  # run_page names what breaks the rules


@pytest.mark.integration
@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=_name)
def test_the_page_runs_as_written(page: Path) -> None:
    _real_components()
    _run(page)


# Deselected by default (pyproject's addopts -m 'not docs_slow'); `make docs-slow` selects it.
@pytest.mark.docs_slow
@pytest.mark.timeout(4 * 3600)
@pytest.mark.parametrize("page", [p for p in PAGES if has_slow(p)], ids=_name)
def test_the_page_runs_with_its_slow_blocks(page: Path) -> None:
    _real_components()
    _run(page, slow=True)
