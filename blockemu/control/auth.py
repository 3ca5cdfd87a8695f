"""Who may change a device through the control API.

The control API listens on loopback by default, where only local users reach
it.  Binding it anywhere else needs an explicit ``--http-allow-remote`` and a
bearer token (RFC 6750): every request that can change something (any method
but GET and HEAD) must carry ``Authorization: Bearer <token>``.  Reads stay
open, so Prometheus can scrape ``/metrics`` without the secret.

The token comes from a file (``--http-token-file``), never from the command
line, where every local user could read it in ``ps``.  The server hands it
to nbdkit's plugin in the environment variable :data:`TOKEN_ENV`, which only
the same user can read; clients (``blockemu ctl``, :class:`blockemu.control.client.ControlClient`)
take it from the same variable or from ``--token-file``.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from pathlib import Path

TOKEN_ENV = "BLOCKEMU_HTTP_TOKEN"
# RFC 6750's b64token characters; at least 16 of them, so that it cannot be guessed by trying.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]{16,4096}=*")
READ_METHODS = ("GET", "HEAD")


class TokenError(ValueError):
    """A token file or value that cannot be used."""


def validate_token(token: str, origin: str) -> str:
    if not _TOKEN_RE.fullmatch(token):
        raise TokenError(f"{origin}: the token must be 16 to 4096 characters from A-Z a-z 0-9 - . _ ~ + / "
                         f"(optionally ending in =), got {len(token)} characters")
    return token


def read_token_file(path: str | Path) -> str:
    """The token in ``path``: its only line, surrounding whitespace ignored."""
    origin = f"token file {path}"
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        raise TokenError(f"{origin}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TokenError(f"{origin}: cannot read it as ASCII text ({err.__class__.__name__})") from None
    return validate_token(text.strip(), origin)


_PSK_LINE_RE = re.compile(r"[^:\s]+:(?:[0-9a-fA-F]{2}){16,}")


def check_psk_file(path: str | Path) -> str:
    """The first user name of an nbdkit ``--tls-psk`` file (``username:hexkey`` lines, as psktool writes)."""
    origin = f"PSK file {path}"
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="ascii").splitlines() if line.strip()]
    except FileNotFoundError:
        raise TokenError(f"{origin}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TokenError(f"{origin}: cannot read it as ASCII text ({err.__class__.__name__})") from None
    for number, line in enumerate(lines, 1):
        if not _PSK_LINE_RE.fullmatch(line):
            raise TokenError(f"{origin}: line {number} must be username:hexkey with a key of at least 16 bytes "
                             "(e.g. psktool -u alice -p FILE)")
    if not lines:
        raise TokenError(f"{origin}: no username:hexkey line")
    return lines[0].split(":", 1)[0]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_binding(host: str, allow_remote: bool, token: str | None) -> None:
    """Refuse a control API reachable from other machines unless it was asked for and is protected."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise TokenError(f"the control API binds to loopback only; {host} needs --http-allow-remote "
                         "and --http-token-file FILE")
    if not token:
        raise TokenError(f"a control API on {host} needs --http-token-file FILE: a bearer token that every "
                         "request other than GET must carry")


def authorized(method: str, authorization: str | None, token: str | None) -> bool:
    """Whether a request may proceed: reads always, changes only with the right bearer token."""
    if token is None or method in READ_METHODS:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time, so the answer's timing tells nothing about the token.
    return hmac.compare_digest(presented.strip().encode(), token.encode())
