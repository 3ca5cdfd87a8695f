"""The docs harness itself: its rules, its output matching, and that a broken example fails."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import SMALL_UFS, require_tool, toml_text
from tests.docs.mdblocks import ROOT, DocsError, blocks, console_parts, output_matches, run_page

PAGE = Path("page.md")


def page(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_blocks_carry_their_language_line_and_directives() -> None:
    found = blocks(PAGE, page("""
        # Title

        <!-- docs: serve configs/ufs41.toml -->
        <!-- docs: slow boots a VM for 10 minutes -->
        ```sh
        blockemu vm run configs/ufs41.toml -- true
        ```

        - in a list:

          ```python
          print(1)
          ```
        """))
    assert [(b.line, b.lang, b.directives) for b in found] == [
        (5, "sh", (("serve", "configs/ufs41.toml"), ("slow", "boots a VM for 10 minutes"))), (11, "python", ())]
    assert found[1].text == "print(1)\n"


@pytest.mark.parametrize(("text", "says"), [
    ("```\nls\n```\n", "fence language '(none)'"),
    ("```bash\nls\n```\n", "fence language 'bash'"),
    ("    indented code\n", "indented code block"),
    ("<!-- docs: slow -->\n```sh\nls\n```\n", "say why"),
    ("<!-- docs: later one day -->\n```sh\nls\n```\n", "docs directive 'later'"),
    ("<!-- docs: skip x -->\n\ntext between\n\n```sh\nls\n```\n", "right above a fence"),
    ("<!-- docs: skip not a command -->\n```text\nls\n```\n", "is not a command"),
    ("```text\nx\n```\n<!-- docs: output -->\n```text\ny\n```\n", "must follow a sh or python block"),
    ("```console\nno prompt\n```\n", "starts with '$ COMMAND'"),
    ("<!-- docs: serve -->\n```python\nprint()\n```\n", "bare <!-- docs: serve -->"),
    ("<!-- docs: skip a reason\n     on two lines -->\n```sh\nls\n```\n", "not a docs directive"),
])
def test_a_fence_that_breaks_the_rules_is_named(text: str, says: str) -> None:
    with pytest.raises(DocsError, match=r"page\.md:") as err:
        blocks(PAGE, text)
    assert says in str(err.value)


def test_output_is_compared_line_by_line_numbers_aside() -> None:
    assert output_matches("zone 4: wp 0x3000000, 12.5 ms\n", "zone 4: wp 0x10, 3 ms\n")
    assert not output_matches("zone 4: full\n", "zone 4: empty\n")
    assert not output_matches("a\nb\n", "a\n")
    assert output_matches("first\n...\nlast\n", "first\nx\ny\nlast\n")
    assert output_matches("first\n...\nlast\n", "first\nlast\n")
    assert not output_matches("first\n...\nlast\n", "first\nx\n")
    assert output_matches("a\n...\nb\n...\nc\n", "a\nb\nx\nb\nc\n")
    assert not output_matches("a\n...\nc\n...\nb\n", "a\nb\nc\n")
    assert not output_matches("a\n...\na\n", "a\n")
    assert output_matches("...\n", "".join(f"zone {i}\n" for i in range(5000)))


def test_console_blocks_pair_commands_with_their_output() -> None:
    assert console_parts("$ echo a \\\n  b\na b\n$ true\n") == [("echo a \\\n  b", "a b"), ("true", "")]
    with pytest.raises(DocsError, match="starts with"):
        console_parts("output first\n$ true\n")


def test_blocks_run_in_order_in_the_pages_own_tmp() -> None:
    ran = run_page(PAGE, text=page("""
        ```sh
        echo one > /tmp/out.txt
        ```
        ```python
        print(open("/tmp/out.txt").read().strip() + " two")
        ```
        <!-- docs: output -->
        ```text
        one two
        ```
        ```console
        $ cd /tmp && cat out.txt
        one
        ```
        <!-- docs: slow would take an hour -->
        ```sh
        false
        ```
        <!-- docs: skip a synopsis -->
        ```sh
        blockemu replay CONFIG [--json]
        ```
        """))
    assert ran == ["page.md:1", "page.md:4", "page.md:11"]


@pytest.mark.parametrize(("broken", "says"), [
    ("```sh\nblockemu ctl hid wait defrag_done --timeout 1\n```\n", "page.md:3: exit status 2"),
    ("```sh\nfalse\necho never\n```\n", "page.md:3: exit status 1"),
    ("```python\nraise SystemExit('no')\n```\n", "page.md:3: exit status 1"),
    ("```sh\necho 3 zones\n```\n<!-- docs: output -->\n```text\n3 zones full\n```\n",
     "page.md:7: the block above printed something else"),
    ("```console\n$ echo empty\nfull\n```\n", "page.md:3: $ echo empty\nexpected:\nfull"),
])
def test_a_broken_example_fails_naming_its_block(broken: str, says: str) -> None:
    with pytest.raises(DocsError) as err:
        run_page(PAGE, text="# A page\n\n" + broken)
    assert says in str(err.value)


def test_the_slow_tier_runs_slow_blocks() -> None:
    with pytest.raises(DocsError, match=r"page\.md:2: exit status 1"):
        run_page(PAGE, slow=True, text="<!-- docs: slow an hour -->\n```sh\nfalse\n```\n")


@pytest.mark.integration
def test_a_served_device_answers_the_blocks_and_is_gone_after_the_page() -> None:
    require_tool("nbdkit")
    config = toml_text(SMALL_UFS)
    ran = run_page(PAGE, text=page("""
        ```sh
        cat > /tmp/small.toml <<'EOF'
        CONFIG
        EOF
        ```
        <!-- docs: serve /tmp/small.toml --unix /tmp/dev.sock -->
        ```sh
        head -c 1M /dev/urandom | nbdcopy - 'nbd+unix:///?socket=/tmp/dev.sock'
        blockemu ctl device > /tmp/device.json
        ```
        ```python
        import json, os
        device = json.load(open("/tmp/device.json"))
        print(device["name"], os.environ["BLOCKEMU_URL"].startswith("http://127.0.0.1:"))
        ```
        <!-- docs: output -->
        ```text
        ufs_test True
        ```
        <!-- docs: serve -->
        ```sh
        .venv/bin/blockemu serve /tmp/small.toml --unix /tmp/second.sock
        ```
        ```sh
        test -S /tmp/second.sock && ! test -e /tmp/dev.sock   # one device at a time
        python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:9250/api/v1/device")'
        ```
        """).replace("CONFIG\n", config))
    assert len(ran) == 5  # the config, the hidden server's block, python, the server block, the last
    assert "blockemu-docs-" not in _servers()


def _servers() -> str:
    import subprocess

    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_a_page_that_leaves_files_in_the_repository_fails_and_they_are_removed() -> None:
    name = "docs-test-left-behind.txt"
    with pytest.raises(DocsError, match=f"left {name} in the repository") as err:
        run_page(PAGE, text=f"```sh\necho out > {name}\n```\n")
    assert "under /tmp" in str(err.value)
    assert not (ROOT / name).exists()
