"""``blockemu serve``: check what was asked, then hand over to a frontend (nbdkit, or ublk with ``--ublk``).

Building this parser imports no device model: ``serve`` is started inside
VMs under software emulation, where importing numpy and the models costs
seconds (nbdkit's plugin, or the ublk server, imports them once, where they
run).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from blockemu.cli.common import DEFAULT_HTTP, fail
from blockemu.config import Config, ConfigError, load_config, parse_http_address
from blockemu.control.auth import TokenError, check_binding, check_psk_file, read_token_file
from blockemu.frontends import ServeError
from blockemu.frontends.nbdkit.launcher import NbdkitOptions, run_nbdkit


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="device configuration (TOML), e.g. configs/ufs41.toml")
    parser.add_argument("--unix", help="unix socket path (default: under $XDG_RUNTIME_DIR or /tmp)")
    parser.add_argument("--port", type=int,
                        help="serve NBD on TCP port PORT (see --listen) instead of a unix socket")
    parser.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                        help="address --port listens on (default 127.0.0.1); off loopback consider --tls-psk")
    parser.add_argument("--tls-psk", metavar="FILE",
                        help="require TLS on NBD with these pre-shared keys (username:hexkey lines, see psktool)")
    parser.add_argument("--http", default=DEFAULT_HTTP,
                        help=f"control API and /metrics address (default {DEFAULT_HTTP}; '' disables)")
    parser.add_argument("--http-allow-remote", action="store_true",
                        help="allow --http on a non-loopback address (needs --http-token-file)")
    parser.add_argument("--http-token-file", metavar="FILE",
                        help="a bearer token every control API request but GET must carry "
                             "(see blockemu/control/auth.py)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    parser.add_argument("--threads", type=int, default=16,
                        help="nbdkit worker threads (queue depth the device sees)")
    parser.add_argument("--verbose", action="store_true", help="nbdkit debug output")
    parser.add_argument("--trace", metavar="FILE", help="record every request to FILE (see blockemu replay)")
    parser.add_argument("--ready-timeout", type=float, default=120.0, metavar="S",
                        help="how long nbdkit may take to start serving (default 120; slow under emulation)")
    parser.add_argument("--ublk", action="store_true",
                        help="serve as a Linux block device /dev/ublkbN (ublk_drv, root) instead of NBD")
    parser.add_argument("--ublk-queue-depth", type=int, default=64, metavar="N",
                        help="ublk tags (requests in flight) on its one queue (default 64)")
    parser.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.set or [])
    except ConfigError as err:
        return fail(str(err))
    if config.store.backend == "file":
        # Refused here, a damaged or mismatched store is one line and exit 2,
        # not a traceback from inside nbdkit.
        from blockemu.stack import check_config_store
        from blockemu.store import StoreError

        try:
            check_config_store(config)
        except StoreError as err:
            return fail(str(err))
    http = None
    if args.http:
        try:
            http = parse_http_address(args.http)
        except ValueError as err:
            return fail(str(err))
    token = None
    try:
        if args.http_token_file:
            token = read_token_file(args.http_token_file)
        if http is not None:
            check_binding(http[0], args.http_allow_remote, token)
    except TokenError as err:
        return fail(f"--http {args.http}: {err}")
    tls_user = None
    if args.tls_psk:
        if args.ublk:
            return fail("--tls-psk encrypts NBD; a ublk device is local and has no network data path")
        try:
            tls_user = check_psk_file(args.tls_psk)
        except TokenError as err:
            return fail(f"--tls-psk: {err}")
    trace = Path(args.trace).resolve() if args.trace else None
    if trace is not None and trace.exists():
        return fail(f"--trace {args.trace}: the file exists; traces never overwrite files")

    def ready(label: str, where: str) -> None:
        print(f"blockemu: serving {config.device.name} ({config.device.type}, {config.device.capacity_mib} MiB, "
              f"{config.timing.mode} timing)")
        print(f"  {label + ':':9}{where}")
        if http is not None:
            print(f"  live:    http://{args.http}/  (open in a browser)")
            print(f"  metrics: http://{args.http}/metrics")
            print(f"  control: http://{args.http}/api/v1/device")
        print("  stop with Ctrl-C", flush=True)

    try:
        if args.ublk:
            return _serve_ublk(args, config, http, token, trace, ready)
        options = NbdkitOptions(
            config=Path(args.config), device_name=config.device.name, overrides=tuple(args.set or ()),
            unix=Path(args.unix) if args.unix else None, port=args.port, listen=args.listen,
            tls_psk=Path(args.tls_psk) if args.tls_psk else None, tls_user=tls_user, http=args.http or "",
            trace=trace, threads=args.threads, verbose=args.verbose, ready_timeout_s=args.ready_timeout)
        return run_nbdkit(options, token, lambda uri: ready("NBD", uri), http)
    except ServeError as err:
        return fail(str(err), err.exit_code)


def _serve_ublk(args: argparse.Namespace, config: Config, http: tuple[str, int] | None, token: str | None,
                trace: Path | None, ready: Callable[[str, str], None]) -> int:
    # Imported only here: the runtime pulls in every device model (see the module docstring).
    from blockemu.frontends.serve import serve_ublk

    return serve_ublk(config, http, token, trace, args.ublk_queue_depth, lambda path: ready("ublk", path))
