"""The live page's files: ``index.html`` at ``GET /`` and its scripts and styles at ``GET /static/{name}``.

No build step and nothing fetched at run time: the page is plain HTML and
JavaScript, and its one library, uPlot (https://github.com/leeoniya/uPlot,
MIT licence in ``static/uPlot.LICENSE``), is vendored as its own release's
minified files (npm package ``uplot`` 1.6.32, ``dist/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

WEB_DIR = Path(__file__).parent
# Every file served under /static/, with its content type; nothing else in the folder is served.
STATIC_TYPES = {
    "live.js": "text/javascript; charset=utf-8",
    "live.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
# The page loads only its own files and talks only to its own server.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


@dataclass(frozen=True)
class Asset:
    """A file as served: its bytes and content type."""

    body: bytes
    content_type: str


@cache
def page() -> Asset:
    return Asset((WEB_DIR / "index.html").read_bytes(), "text/html; charset=utf-8")


@cache
def static(name: str) -> Asset:
    """One of :data:`STATIC_TYPES` (the route's parameter has checked the name)."""
    return Asset((WEB_DIR / "static" / name).read_bytes(), STATIC_TYPES[name])
