"""The control API's bearer-token rules (blockemu/control/auth.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockemu.control.auth import TokenError, authorized, check_binding, is_loopback, read_token_file, validate_token

TOKEN = "s3cret-token_0123456789"


def test_loopback_addresses_need_nothing() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        assert is_loopback(host)
        check_binding(host, allow_remote=False, token=None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_other_addresses_need_the_flag_and_a_token(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(TokenError, match="--http-allow-remote"):
        check_binding(host, allow_remote=False, token=TOKEN)
    with pytest.raises(TokenError, match="--http-token-file"):
        check_binding(host, allow_remote=True, token=None)
    check_binding(host, allow_remote=True, token=TOKEN)


def test_reads_are_open_and_changes_need_the_exact_token() -> None:
    assert authorized("GET", None, TOKEN) and authorized("HEAD", None, TOKEN)
    assert authorized("POST", None, None)  # no token configured: loopback as before
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        assert not authorized(method, None, TOKEN)
        assert not authorized(method, f"Basic {TOKEN}", TOKEN)
        assert not authorized(method, f"Bearer {TOKEN}x", TOKEN)
        assert not authorized(method, f"Bearer {TOKEN[:-1]}", TOKEN)
        assert authorized(method, f"Bearer {TOKEN}", TOKEN)
        assert authorized(method, f"bearer  {TOKEN} ", TOKEN)


def test_token_files_are_validated(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text(f"  {TOKEN}\n")
    assert read_token_file(good) == TOKEN
    with pytest.raises(TokenError, match="no such file"):
        read_token_file(tmp_path / "missing")
    for text in ("", "short", "has space in it 0123456789", "x" * 4097, "tökén-0123456789abcdef"):
        bad = tmp_path / "bad"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(TokenError, match=r"token file .*bad") as err:
            read_token_file(bad)
        assert "\n" not in str(err.value)
    assert validate_token("abcdefghijklmnop==", "t") == "abcdefghijklmnop=="
