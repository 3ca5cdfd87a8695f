"""README.md and docs/ point at things that exist.

Every relative Markdown link must name an existing file and, with ``#anchor``,
a heading of that page (GitHub's anchor rules); every ``blockemu/...`` or
``plugins/...`` path and every ``blockemu.module.name`` quoted in the docs
(``from blockemu.x import Y`` in examples included) must exist, so that moving
a module without updating the docs fails here rather than misleading a reader.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# Quoted repository paths that the docs promise exist (globs and placeholders excluded).
QUOTED_PATH = re.compile(r"^(?:blockemu|plugins)/[\w./-]*$")
# (?<![/\w]): not a file name inside a path, such as dashboards/blockemu.json.
DOTTED_NAME = re.compile(r"(?<![/\w])blockemu(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"\bfrom\s+(blockemu(?:\.\w+)*)\s+import\s+([\w, ]+)")


def doc_files(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: plain text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """One line per relative link in PATH that does not resolve."""
    problems = []
    for number, line in prose_lines(path.read_text()):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            where = f"{path.name}:{number}: {target}"
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                problems.append(f"{where}: no such file {resolved}")
            elif anchor:
                if resolved.suffix != ".md":
                    problems.append(f"{where}: an anchor into a file that is not Markdown")
                elif anchor not in anchors(resolved):
                    problems.append(f"{where}: {resolved.name} has no heading with anchor #{anchor}")
    return problems


def missing_quoted_paths(path: Path, root: Path = REPO) -> list[str]:
    """One line per `blockemu/...` or `plugins/...` path quoted in PATH that does not exist."""
    problems = []
    for number, line in prose_lines(path.read_text()):
        for match in CODE_SPAN.finditer(line):
            quoted = match.group(2).strip()
            if QUOTED_PATH.match(quoted) and ".." not in quoted and not (root / quoted).exists():
                problems.append(f"{path.name}:{number}: `{quoted}` does not exist")
    return problems


def resolves(dotted: str) -> bool:
    """Whether a dotted name is a blockemu module, or an attribute reached from the longest importable one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def missing_python_names(path: Path) -> list[str]:
    """One line per `blockemu.x.y` name (module, class, function) in PATH, code blocks included, that is not there."""
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        names = [f"{module}.{name.strip()}" for module, imported in FROM_IMPORT.findall(line)
                 for name in imported.split(",") if name.strip()]
        names += [name for name in DOTTED_NAME.findall(line) if not name.endswith(".py")]
        problems += [f"{path.name}:{number}: {name} does not exist" for name in names if not resolves(name)]
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_quoted_package_paths_exist(path: Path) -> None:
    assert missing_quoted_paths(path) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_quoted_python_names_exist(path: Path) -> None:
    assert missing_python_names(path) == []


def test_docs_folder_is_linked_from_readme() -> None:
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in sorted((REPO / "docs").glob("*.md")) if f"(docs/{p.name}" not in readme]
    assert unlinked == []


def test_the_checker_finds_what_is_broken(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B page\n\n## What it costs (`x`)\n\n## What it costs (`x`)\n")
    page = tmp_path / "docs" / "a.md"
    page.write_text(
        "# A\n\n"
        "[ok](b.md) [ok](b.md#what-it-costs-x) [ok](b.md#what-it-costs-x-1) [ok](#a) [web](https://example.com/x)\n"
        "[gone](c.md) [bad anchor](b.md#what-it-costs) [self](#nowhere)\n"
        "`[not a link](c.md)`\n"
        "```\n[in a fence](c.md)\n# not a heading\n```\n"
        "`blockemu/no_such_module.py` and `blockemu/` and `blockemu/*.py` and `blockemu/...`\n"
    )
    assert [line.split(": ", 1)[0] for line in broken_links(page)] == ["a.md:4"] * 3
    assert "#not-a-heading" not in anchors(page)
    assert missing_quoted_paths(page, root=tmp_path) == [
        "a.md:10: `blockemu/no_such_module.py` does not exist",
        "a.md:10: `blockemu/` does not exist",
    ]
    page.write_text(
        "`blockemu.clock.VirtualClock`, `python -m blockemu.vm`, plugins/blockemu.py\n"
        "`blockemu.clock.NoSuchClock` and `blockemu.no_such_module`\n"
        "```python\nfrom blockemu.clock import VirtualClock, NoSuchClock\n```\n"
    )
    assert missing_python_names(page) == [
        "a.md:2: blockemu.clock.NoSuchClock does not exist",
        "a.md:2: blockemu.no_such_module does not exist",
        "a.md:4: blockemu.clock.NoSuchClock does not exist",
    ]
