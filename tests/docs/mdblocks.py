"""Run the fenced blocks of a Markdown page, in order, as a reader would (issue 24).

The rules are in docs/testing.md ("Docs that run"); in short:

- ```` ```sh ```` and ```` ```python ```` blocks run, each in its own process, from the
  repository root with ``.venv/bin`` first on PATH; a non-zero exit fails.
  ```` ```console ```` blocks run their ``$ `` lines and compare what they print.
- ```` ```text ```` (and toml, json, ...) blocks are not commands; an unnamed fence is an error.
- One HTML comment right above a fence changes that block:
  ``<!-- docs: output [COMMAND] -->`` (a text block: what the block before it, or COMMAND, prints),
  ``<!-- docs: serve -->``   (the block is a server: run it in the background until the page ends),
  ``<!-- docs: serve CONFIG [ARGS] -->`` (start ``blockemu serve CONFIG ARGS`` before the block),
  ``<!-- docs: slow REASON -->`` (only in ``make docs-slow``),
  ``<!-- docs: skip REASON -->`` (never run: a synopsis, the suite itself).
- ``/tmp`` in a block is the page's own temporary directory, and ``127.0.0.1:9250`` (the
  default control address) the page's own free port, so pages run side by side; output is
  compared with them put back.

Markdown is parsed with markdown-it-py (the CommonMark parser), so fences in lists count too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

from blockemu.control.client import free_port

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

RUN_LANGS = {"sh", "python", "console"}
# Not commands: output, configuration and file excerpts, diagrams.
TEXT_LANGS = {"text", "toml", "json", "ini", "yaml", "diff", "c", "csv", "promql"}
DIRECTIVE = re.compile(r"^<!--\s*docs:\s*(\w+)\s*(.*?)\s*-->\s*$")
KINDS = {"output", "serve", "slow", "skip"}
DEFAULT_HTTP = "127.0.0.1:9250"  # blockemu serve's and blockemu ctl's default (blockemu/cli/common.py)
BLOCK_TIMEOUT_S = 600.0
SLOW_BLOCK_TIMEOUT_S = 3600.0  # a VM run or a full experiment
READY_TIMEOUT_S = 90.0


class DocsError(Exception):
    """A page breaks the rules, or one of its blocks did not do what the page says."""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    directives: tuple[tuple[str, str], ...] = ()  # (kind, argument), from the comments right above

    @property
    def where(self) -> str:
        try:
            name = self.page.relative_to(ROOT)
        except ValueError:
            name = self.page
        return f"{name}:{self.line}"

    def has(self, kind: str) -> bool:
        return any(k == kind for k, _ in self.directives)

    def arg(self, kind: str) -> str:
        return next((a for k, a in self.directives if k == kind), "")


def blocks(page: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of ``page`` with its directives; DocsError names a block that breaks the rules."""
    source = page.read_text() if text is None else text
    found: list[Block] = []
    pending: list[tuple[str, str]] = []
    pending_line = 0
    for token in MarkdownIt("commonmark").parse(source):
        line = token.map[0] + 1 if token.map else 0
        where = f"{page.name}:{line}"
        if token.type == "html_block" and "docs:" in token.content:
            match = DIRECTIVE.match(token.content.strip())
            if not match:
                raise DocsError(f"{where}: not a docs directive: {token.content.strip()!r}; "
                                "write <!-- docs: KIND [ARGUMENT] --> alone on its line")
            pending.append((match.group(1), match.group(2)))
            pending_line = pending_line or line
            continue
        if token.type == "code_block":
            raise DocsError(f"{where}: an indented code block; use a fence that names its language "
                            "(docs/testing.md, Docs that run)")
        if token.type != "fence":
            if pending and token.type != "html_block":
                raise DocsError(f"{page.name}:{pending_line}: a docs directive must sit right above a fence")
            continue
        lang = token.info.split()[0] if token.info.strip() else ""
        if lang not in RUN_LANGS | TEXT_LANGS:
            raise DocsError(f"{where}: fence language {lang or '(none)'!r}: name it sh, python or console to "
                            f"run it, or one of {', '.join(sorted(TEXT_LANGS))} for what is not a command "
                            "(docs/testing.md, Docs that run)")
        block = Block(page, line, lang, token.content, tuple(pending))
        _check_directives(block, found)
        _check_console(block)
        found.append(block)
        pending, pending_line = [], 0
    if pending:
        raise DocsError(f"{page.name}:{pending_line}: a docs directive must sit right above a fence")
    return found


def _check_directives(block: Block, before: list[Block]) -> None:
    where, lang = f"{block.page.name}:{block.line}", block.lang
    for kind, arg in block.directives:
        if kind not in KINDS:
            raise DocsError(f"{where}: docs directive {kind!r}: expected one of {', '.join(sorted(KINDS))}")
        if kind in ("slow", "skip") and not arg:
            raise DocsError(f"{where}: <!-- docs: {kind} REASON -->: say why the block does not run in make test")
        if kind in ("slow", "skip", "serve") and lang not in RUN_LANGS:
            raise DocsError(f"{where}: a ```{lang} block is not a command; <!-- docs: {kind} --> is for one")
        if kind == "serve" and not arg and lang != "sh":
            raise DocsError(f"{where}: a bare <!-- docs: serve --> marks a ```sh block that is a server")
        if kind == "output":
            if lang != "text":
                raise DocsError(f"{where}: <!-- docs: output --> marks a ```text block, not ```{lang}")
            if arg:
                continue  # <!-- docs: output COMMAND -->: what a hidden command prints
            previous = before[-1] if before else None
            if (previous is None or previous.lang not in ("sh", "python") or previous.has("skip")
                    or (previous.has("serve") and not previous.arg("serve"))):
                raise DocsError(f"{where}: <!-- docs: output --> must follow a sh or python block that runs")


def _check_console(block: Block) -> None:
    if block.lang == "console":
        try:
            console_parts(block.text)
        except DocsError as err:
            raise DocsError(f"{block.page.name}:{block.line}: {err}") from None


def has_slow(page: Path) -> bool:
    """Whether ``page`` has a slow block; a page that breaks the rules fails its own test, not collection."""
    try:
        return any(block.has("slow") for block in blocks(page))
    except DocsError:
        return False


# ---------------------------------------------------------------- output

_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


def _norm(line: str) -> str:
    return _NUMBER.sub("N", line.rstrip())


def output_matches(expected: str, actual: str) -> bool:
    """Line by line, numbers aside (times, addresses and counters vary); a line ``...`` matches any lines."""
    want = [_norm(line) for line in expected.strip("\n").splitlines()]
    got = [_norm(line) for line in actual.strip("\n").splitlines()]
    segments: list[list[str]] = [[]]  # the runs of lines between "..." lines
    for line in want:
        if line == "...":
            segments.append([])
        else:
            segments[-1].append(line)
    if len(segments) == 1:
        return want == got
    first, *middle, last = segments
    end = len(got) - len(last)
    if end < len(first) or got[:len(first)] != first or got[end:] != last:
        return False
    at = len(first)
    for segment in middle:  # each at its earliest place: leaves the most room for the rest
        found = next((i for i in range(at, end - len(segment) + 1) if got[i:i + len(segment)] == segment), None)
        if found is None:
            return False
        at = found + len(segment)
    return True


def console_parts(text: str) -> list[tuple[str, str]]:
    """A console block's (command, expected output) pairs: ``$ `` lines (``\\`` continues one) and what follows."""
    parts: list[tuple[str, str]] = []
    command: list[str] = []
    output: list[str] = []
    continued = False
    for line in text.splitlines():
        if continued:
            command.append(line)
            continued = line.endswith("\\")
        elif line.startswith("$ "):
            if command:
                parts.append(("\n".join(command), "\n".join(output)))
            command, output = [line[2:]], []
            continued = line.endswith("\\")
        elif command:
            output.append(line)
        else:
            raise DocsError(f"a console block starts with '$ COMMAND', not {line!r}")
    if command:
        parts.append(("\n".join(command), "\n".join(output)))
    return parts


# ---------------------------------------------------------------- running

@dataclass
class Page:
    """One page's run: its temporary directory, its control port, its servers."""

    path: Path
    tmp: Path
    port: int
    slow: bool = False
    server: subprocess.Popen[bytes] | None = None
    server_log: Path | None = None
    ran: list[str] = field(default_factory=list)  # where each block that ran is, for the report
    last_output: str = ""
    previous_ran: bool = False

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(ROOT / ".venv" / "bin")
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = str(ROOT / ".venv")
        env["TMPDIR"] = str(self.tmp)
        env["BLOCKEMU_URL"] = f"http://{self.http}"
        env.pop("PYTHONPATH", None)
        return env

    def unlocalise(self, output: str) -> str:
        """Output as the page shows it: the shared /tmp/ and port again."""
        return output.replace(str(self.tmp), "/tmp").replace(self.http, DEFAULT_HTTP)

    def _with_port(self, command: str) -> str:
        """A ``blockemu serve`` without ``--http`` serves the control API on the page's port."""
        if "blockemu serve" in command and "--http" not in command:
            return command.replace("blockemu serve", f"blockemu serve --http {self.http}", 1)
        return command

    def localise(self, text: str) -> str:
        """The page's /tmp and control port in place of the shared ones (/var/tmp and /tmpfoo stay)."""
        text = re.sub(r"(?<![\w.])/tmp(?=/|\s|$|[;&|)'\"])", str(self.tmp), text)
        return text.replace(DEFAULT_HTTP, self.http)

    def run(self, block: Block) -> None:
        if block.has("output"):
            command = block.arg("output")
            if command:  # a hidden command whose output the block shows
                self.ran.append(block.where)
                self._check_output(block, self._shell(block, self._with_port(command),
                                                      check=False), f"$ {command}")
            elif self.previous_ran:
                self._check_output(block, self.last_output, "the block above")
            return
        runs = (block.lang in RUN_LANGS and not block.has("skip") and (self.slow or not block.has("slow")))
        self.previous_ran = runs
        if not runs:
            return
        self.ran.append(block.where)
        if block.has("serve"):
            arg = block.arg("serve")
            self._serve(block, self._serve_command(arg) if arg else self.localise(block.text))
            if not arg:
                return  # the block was the server
        if block.lang == "console":
            for command, expected in console_parts(block.text):
                result = self.unlocalise(self._shell(block, command, check=False))
                if not output_matches(expected, result):
                    raise DocsError(f"{block.where}: $ {command}\nexpected:\n{expected}\ngot:\n{result}")
            return
        self.last_output = self._shell(block, block.text, check=True)

    def _serve_command(self, arg: str) -> str:
        return self.localise(".venv/bin/blockemu serve " + arg)

    def _serve(self, block: Block, command: str) -> None:
        self._stop_server()  # one device at a time, as a reader with one spare terminal has
        command = self._with_port(command)
        self.server_log = self.tmp / f"serve-{block.line}.log"
        with open(self.server_log, "w") as log:
            self.server = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=self.env(), stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        sockets = [Path(s) for s in re.findall(r"--unix[ =](\S+)", command)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise DocsError(f"{block.where}: the server exited ({self.server.returncode}):\n{command}")
            if _answers(f"http://{self.http}/api/v1/device") and all(s.exists() for s in sockets):
                return
            time.sleep(0.2)
        raise DocsError(f"{block.where}: the server did not answer on {self.http} within "
                        f"{READY_TIMEOUT_S:.0f} s:\n{command}")

    def server_output(self) -> str:
        """The last lines the page's server printed, for a failure's message."""
        if self.server_log is None or not self.server_log.exists():
            return ""
        tail = self.server_log.read_text(errors="replace").splitlines()[-30:]
        return "\n--- the server's output (last lines):\n" + "\n".join(tail)

    def _shell(self, block: Block, text: str, *, check: bool) -> str:
        if block.lang == "python":
            argv = [str(ROOT / ".venv" / "bin" / "python"), "-c", self.localise(text)]
        else:
            # -e: each command must succeed, as the page implies; no pipefail, since `cmd | head` is normal.
            argv = ["bash", "-e", "-c", self.localise(text)]
        limit = SLOW_BLOCK_TIMEOUT_S if block.has("slow") else BLOCK_TIMEOUT_S
        try:
            result = subprocess.run(argv, cwd=ROOT, env=self.env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, timeout=limit, start_new_session=True)
        except subprocess.TimeoutExpired as err:
            raise DocsError(f"{block.where}: still running after {limit:.0f} s:\n{text}") from err
        if check and result.returncode != 0:
            raise DocsError(f"{block.where}: exit status {result.returncode}:\n{text}\n--- output:\n"
                            f"{result.stdout[-4000:]}")
        return result.stdout

    def _check_output(self, block: Block, output: str, source: str) -> None:
        output = self.unlocalise(output)
        if not output_matches(block.text, output):
            raise DocsError(f"{block.where}: {source} printed something else.\nexpected:\n{block.text}\n"
                            f"got:\n{output}")

    def _stop_server(self) -> None:
        if self.server is not None:
            _stop(self.server)
            self.server = None

    def close(self) -> None:
        self._stop_server()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # a 401 or 404 still means a server is there
    except OSError:
        return False


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as the page says; the whole group (bash, blockemu, nbdkit) if it does not go."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _in_checkout() -> set[str]:
    """What git does not track or ignore, and what is under results/ (experiments' default): not for outputs."""
    try:
        listed = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--directory"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return set()  # not a git checkout: nothing to compare
    results = ROOT / "results"
    if results.is_dir():
        listed += [f"results/{entry.name}" for entry in results.iterdir()]
    # Tools' caches (.import_linter_cache, made by `make lint`) are not a page's outputs.
    return {line.rstrip("/") for line in listed if not line.startswith(".")}


def _remove_new(before: set[str]) -> list[str]:
    """Remove what the page left in the checkout (it was not there before the page ran)."""
    left = sorted(_in_checkout() - before)
    for name in left:
        path = ROOT / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return left


def run_page(path: Path, *, slow: bool = False, text: str | None = None) -> list[str]:
    """Run ``path``'s blocks in order; returns where the blocks that ran are. DocsError on the first failure."""
    page_blocks = blocks(path, text)
    before = _in_checkout()
    with tempfile.TemporaryDirectory(prefix="blockemu-docs-") as tmp:
        page = Page(path, Path(tmp), free_port(), slow=slow)
        try:
            for block in page_blocks:
                try:
                    page.run(block)
                except DocsError as err:
                    raise DocsError(str(err) + page.server_output()) from None
        finally:
            page.close()
            left = _remove_new(before)
        if left:
            raise DocsError(f"{path.name}: its blocks left {', '.join(left)} in the repository (now removed); "
                            "write outputs under /tmp, the page's own temporary directory (--out /tmp/NAME)")
        return page.ran


if __name__ == "__main__":  # python -m tests.docs.mdblocks PAGE [--slow]: one page, by hand
    try:
        ran = run_page(Path(sys.argv[1]).resolve(), slow="--slow" in sys.argv)
    except DocsError as err:
        sys.exit(f"FAILED {err}")
    print(f"{len(ran)} blocks ran: {', '.join(ran)}")
