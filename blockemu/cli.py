"""``blockemu``: serve devices, control them, boot them under a real kernel."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from blockemu.auth import TOKEN_ENV, TokenError, check_binding, check_psk_file, read_token_file
from blockemu.config import ConfigError, load_config, parse_http_address

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PLUGIN = PACKAGE_ROOT / "plugins" / "blockemu.py"
DEFAULT_HTTP = "127.0.0.1:9250"
DEFAULT_URL = "http://" + DEFAULT_HTTP
# Modules that add commands to the CLI (see build_parser).
CLI_EXTENSIONS: tuple[str, ...] = (
    "blockemu.layers.power",
    "blockemu.experiments.pmqos",
    "blockemu.experiments.hid",
    "blockemu.zram_ctl",
    "blockemu.experiments.zram",
    "blockemu.devices.zns",
    "blockemu.experiments.gc",
    "blockemu.vm",
    "blockemu.layers.write_cache",
    "blockemu.layers.faults",
    "blockemu.experiments.pmqos_vm",
)
# Commands that need none of the extensions.  `serve` is started inside VMs
# under software emulation, where importing numpy and the device models just
# to build the parser costs seconds (nbdkit's plugin imports them anyway).
LIGHT_COMMANDS = ("serve",)


def fail(message: str, code: int = 2) -> int:
    print(f"blockemu: {message}", file=sys.stderr)
    return code


def default_run_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"blockemu-{os.getuid()}"


def plugin_environment() -> dict[str, str]:
    """PYTHONPATH for nbdkit's embedded python: our site-packages and this checkout.

    ``.pth`` files (an editable install) are not processed for PYTHONPATH
    entries, so the package root is added explicitly.
    """
    paths = [str(PACKAGE_ROOT), *site.getsitepackages()]
    existing = os.environ.get("PYTHONPATH")
    if existing:
        paths.append(existing)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _wait_ready(process: subprocess.Popen[bytes], unix: Path | None, port: tuple[str, int] | None,
                http: tuple[str, int] | None, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        ready = True
        if unix is not None:
            ready &= unix.exists()
        if port is not None:
            ready &= _connects(port)
        if http is not None:
            ready &= _connects(http)
        if ready:
            return True
        time.sleep(0.05)
    return False


def _connects(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


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
    psk_user = None
    if args.tls_psk:
        if args.ublk:
            return fail("--tls-psk encrypts NBD; a ublk device is local and has no network data path")
        try:
            psk_user = check_psk_file(args.tls_psk)
        except TokenError as err:
            return fail(f"--tls-psk: {err}")
    if args.ublk:
        return _serve_ublk(args, config, http, token)
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        return fail("nbdkit not found; run 'make setup' (installs nbdkit and nbdkit-plugin-python)")
    unix: Path | None = None
    if args.port is None:
        unix = Path(args.unix) if args.unix else default_run_dir() / f"{config.device.name}-{os.getpid()}.sock"
        unix.parent.mkdir(parents=True, exist_ok=True)
        if unix.exists():
            return fail(f"--unix {unix}: a file is already there; is another server running?")
    argv = [nbdkit, "--foreground", "--exit-with-parent", "--threads", str(args.threads)]
    if unix is not None:
        argv += ["--unix", str(unix)]
    else:
        argv += ["--ipaddr", args.listen, "--port", str(args.port)]
    if args.tls_psk:
        # nbdkit's own TLS: clients must negotiate it and know a key of the file.
        argv += ["--tls=require", f"--tls-psk={Path(args.tls_psk).resolve()}"]
    if args.verbose:
        argv.append("--verbose")
    argv += ["python", str(PLUGIN), f"config={Path(args.config).resolve()}"]
    argv += [f"set={item}" for item in args.set or []]
    argv.append(f"http={args.http or ''}")
    if args.trace:
        trace = Path(args.trace).resolve()
        if trace.exists():
            return fail(f"--trace {args.trace}: the file exists; traces never overwrite files")
        argv.append(f"trace={trace}")
    env = plugin_environment()
    # The token reaches the plugin in its environment, never in argv (ps shows argv to everyone).
    env.pop(TOKEN_ENV, None)
    if token is not None:
        env[TOKEN_ENV] = token
    process = subprocess.Popen(argv, env=env)

    def stop(signum: int, frame: Any) -> None:
        if process.poll() is None:
            process.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        tcp = (args.listen, args.port) if args.port is not None else None
        if not _wait_ready(process, unix, tcp, http, args.ready_timeout):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
                return fail(f"nbdkit did not become ready within {args.ready_timeout:g} s (--ready-timeout)", 1)
            return fail(f"nbdkit exited with status {process.returncode} before serving", 1)
        scheme, user = ("nbds", f"{psk_user}@") if psk_user else ("nbd", "")
        host = "127.0.0.1" if args.listen in ("0.0.0.0", "::") else args.listen
        host = f"[{host}]" if ":" in host else host
        uri = (f"{scheme}+unix://{user}/?socket={unix}" if unix is not None
               else f"{scheme}://{user}{host}:{args.port}")
        if psk_user:
            uri += ("&" if unix is not None else "/?") + f"tls-psk-file={Path(args.tls_psk).resolve()}"
        print(f"blockemu: serving {config.device.name} ({config.device.type}, {config.device.capacity_mib} MiB, "
              f"{config.timing.mode} timing)")
        print(f"  NBD:     {uri}")
        if http is not None:
            base = f"http://{args.http}"
            print(f"  metrics: {base}/metrics")
            print(f"  control: {base}/api/v1/device")
        print("  stop with Ctrl-C", flush=True)
        code = process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if unix is not None and unix.exists():
            unix.unlink()
    # nbdkit exits 0 on SIGTERM/SIGINT; a signal-killed child is a clean stop too.
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


def _serve_ublk(args: argparse.Namespace, config: Any, http: tuple[str, int] | None, token: str | None) -> int:
    """`serve --ublk`: the device as /dev/ublkbN, served in this process (blockemu/frontends/ublk)."""
    import threading

    from blockemu.control import ControlServer
    from blockemu.frontends.ublk.server import UblkError, serve
    from blockemu.runtime import DeviceRuntime

    if args.trace and Path(args.trace).exists():
        return fail(f"--trace {args.trace}: the file exists; traces never overwrite files")
    runtime = DeviceRuntime(config)
    control = ControlServer(runtime, *http, token) if http is not None else None
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    def ready(path: str) -> None:
        print(f"blockemu: serving {config.device.name} ({config.device.type}, {config.device.capacity_mib} MiB, "
              f"{config.timing.mode} timing)")
        print(f"  ublk:    {path}")
        if http is not None:
            print(f"  metrics: http://{args.http}/metrics")
            print(f"  control: http://{args.http}/api/v1/device")
        print("  stop with Ctrl-C", flush=True)

    try:
        if args.trace:
            runtime.start_trace(Path(args.trace).resolve())
        runtime.start()
        if control is not None:
            control.start()
        return serve(runtime, ready, stop, args.ublk_queue_depth)
    except UblkError as err:
        return fail(str(err), 1)
    finally:
        if control is not None:
            control.stop()
        runtime.close()


def cmd_replay(args: argparse.Namespace) -> int:
    from blockemu.replay import format_summary, print_progress, replay
    from blockemu.trace import TraceError, read_trace

    try:
        config = load_config(args.config, args.set or [])
        trace = read_trace(args.trace)
        result = replay(config, trace, engine=args.engine, closed_loop=args.closed_loop, progress=print_progress)
    except (ConfigError, TraceError, ValueError) as err:
        return fail(str(err))
    summary = result.summary()
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


def _ctl_timing(args: argparse.Namespace, base: str) -> int:
    change: dict[str, Any] = {}
    if args.mode is not None:
        change["mode"] = args.mode
    if args.time_scale is not None:
        change["time_scale"] = args.time_scale
    url = base + "/api/v1/timing"
    print_result(http_request(url, "PUT", json.dumps(change).encode()) if change else http_request(url))
    return 0


def _ctl_trace(args: argparse.Namespace, base: str) -> int:
    api = base + "/api/v1/trace"
    if args.trace_action == "start":
        body = json.dumps({"path": str(Path(args.path).resolve())}).encode()
        print_result(http_request(api + "/start", "POST", body))
    elif args.trace_action == "stop":
        print_result(http_request(api + "/stop", "POST", b""))
    else:
        print_result(http_request(api))
    return 0


# ---------------------------------------------------------------------- ctl
class ControlClientError(Exception):
    pass


def http_request(url: str, method: str = "GET", body: bytes | None = None, timeout_s: float = 30.0,
                 token: str | None = None) -> Any:
    """One control API request; ``token`` (default $BLOCKEMU_HTTP_TOKEN) is sent as a bearer token."""
    request = urllib.request.Request(url, data=body, method=method)
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
            ctype = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            message = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            message = text.strip()
        raise ControlClientError(f"{method} {url}: {err.code} {message}") from None
    except urllib.error.URLError as err:
        raise ControlClientError(
            f"{method} {url}: cannot connect ({err.reason}); is 'blockemu serve' running?"
        ) from None
    if ctype.startswith("application/json"):
        return json.loads(payload)
    return payload.decode()


def print_result(result: Any) -> None:
    if isinstance(result, str):
        print(result, end="" if result.endswith("\n") else "\n")
    else:
        print(json.dumps(result, indent=1))


def cmd_ctl(args: argparse.Namespace) -> int:
    """Run the ``ctl`` subcommand chosen; each sets ``ctl_func(args, base_url)``."""
    if args.token_file:
        try:
            # Every request of this process carries it (http_request reads the variable).
            os.environ[TOKEN_ENV] = read_token_file(args.token_file)
        except TokenError as err:
            return fail(f"--token-file: {err}")
    try:
        return int(args.ctl_func(args, args.url.rstrip("/")) or 0)
    except ControlClientError as err:
        return fail(str(err), 1)


def _ctl_get(path: str) -> Any:
    def run(args: argparse.Namespace, base: str) -> int:
        print_result(http_request(base + path))
        return 0

    return run


def _ctl_age(args: argparse.Namespace, base: str) -> int:
    body: dict[str, Any] = {"fragmentation_percent": args.fragmentation, "fragment_kib": args.fragment_kib,
                            "seed": args.seed, "span_percent": args.span_percent, "mapped_only": not args.all}
    print_result(http_request(base + "/api/v1/age", "POST", json.dumps(body).encode()))
    return 0


def _ctl_hid(args: argparse.Namespace, base: str) -> int:
    api = base + "/api/v1"
    if args.hid == "show":
        print_result(http_request(api + "/hid"))
    elif args.hid == "get":
        print_result(http_request(f"{api}/hid/{args.attribute}"))
    elif args.hid == "set":
        print_result(http_request(f"{api}/hid/{args.attribute}", "PUT", args.value.encode()))
    elif args.hid == "wait":
        deadline = time.monotonic() + args.timeout
        last = None
        while True:
            state = http_request(f"{api}/hid").get("state")
            if state != last and args.progress:
                print(f"hid: {state}", file=sys.stderr, flush=True)
            last = state
            if state in args.states:
                print(state)
                return 0
            if time.monotonic() > deadline:
                return fail(f"hid state is still {state!r} after {args.timeout} s", 1)
            time.sleep(args.interval)
    return 0


# --------------------------------------------------------------------- main
def build_parser(load_extensions: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blockemu", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a device over NBD (nbdkit) with a control API")
    serve.add_argument("config", help="device configuration (TOML), e.g. configs/ufs41.toml")
    serve.add_argument("--unix", help="unix socket path (default: under $XDG_RUNTIME_DIR or /tmp)")
    serve.add_argument("--port", type=int, help="serve NBD on TCP port PORT (see --listen) instead of a unix socket")
    serve.add_argument("--listen", default="127.0.0.1", metavar="ADDR",
                       help="address --port listens on (default 127.0.0.1); off loopback consider --tls-psk")
    serve.add_argument("--tls-psk", metavar="FILE",
                       help="require TLS on NBD with these pre-shared keys (username:hexkey lines, see psktool)")
    serve.add_argument("--http", default=DEFAULT_HTTP,
                       help=f"control API and /metrics address (default {DEFAULT_HTTP}; '' disables)")
    serve.add_argument("--http-allow-remote", action="store_true",
                       help="allow --http on a non-loopback address (needs --http-token-file)")
    serve.add_argument("--http-token-file", metavar="FILE",
                       help="a bearer token every control API request but GET must carry (see blockemu/auth.py)")
    serve.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    serve.add_argument("--threads", type=int, default=16, help="nbdkit worker threads (queue depth the device sees)")
    serve.add_argument("--verbose", action="store_true", help="nbdkit debug output")
    serve.add_argument("--trace", metavar="FILE", help="record every request to FILE (see blockemu replay)")
    serve.add_argument("--ready-timeout", type=float, default=120.0, metavar="S",
                       help="how long nbdkit may take to start serving (default 120; slow under emulation)")
    serve.add_argument("--ublk", action="store_true",
                       help="serve as a Linux block device /dev/ublkbN (ublk_drv, root) instead of NBD")
    serve.add_argument("--ublk-queue-depth", type=int, default=64, metavar="N",
                       help="ublk tags (requests in flight) on its one queue (default 64)")
    serve.set_defaults(func=cmd_serve)

    replay = sub.add_parser("replay", help="run a recorded trace or fio iolog through a device model in virtual time")
    replay.add_argument("config", help="device configuration (TOML)")
    replay.add_argument("trace", help="a 'blockemu serve --trace' file or a fio version 2/3 iolog")
    replay.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    replay.add_argument("--engine", choices=("auto", "scalar", "vector"), default="auto",
                        help="vector (UFS, fast) or scalar (any device, the reference); default auto")
    loop = replay.add_mutually_exclusive_group()
    loop.add_argument("--closed-loop", dest="closed_loop", action="store_true", default=None,
                      help="issue each request when the previous completes (default for fio v2 iologs)")
    loop.add_argument("--open-loop", dest="closed_loop", action="store_false",
                      help="issue requests at their recorded times (default for traces with times)")
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    replay.set_defaults(func=cmd_replay)

    ctl = sub.add_parser("ctl", help="talk to a running device's control API")
    ctl.add_argument("--url", default=os.environ.get("BLOCKEMU_URL", DEFAULT_URL),
                     help=f"control API base URL (default $BLOCKEMU_URL or {DEFAULT_URL})")
    ctl.add_argument("--token-file", metavar="FILE",
                     help=f"the server's bearer token (default ${TOKEN_ENV}), sent with every request")
    ctl.set_defaults(func=cmd_ctl)
    ctl_sub = ctl.add_subparsers(dest="ctl", required=True)
    ctl_sub.add_parser("device", help="description and live statistics").set_defaults(
        ctl_func=_ctl_get("/api/v1/device"))
    ctl_sub.add_parser("metrics", help="Prometheus metrics text").set_defaults(ctl_func=_ctl_get("/metrics"))
    ctl_sub.add_parser("fragmentation", help="fragmentation summary (UFS)").set_defaults(
        ctl_func=_ctl_get("/api/v1/fragmentation"))
    age = ctl_sub.add_parser("age", help="induce fragmentation (UFS)")
    age.set_defaults(ctl_func=_ctl_age)
    age.add_argument("--fragmentation", type=float, required=True, metavar="PERCENT",
                     help="share of the data to scatter, 0-100")
    age.add_argument("--fragment-kib", type=int, default=4, help="size of the scattered pieces (default 4)")
    age.add_argument("--span-percent", type=float, default=100.0, help="aged range from LBA 0, %% of capacity")
    age.add_argument("--seed", type=int, default=1)
    age.add_argument("--all", action="store_true", help="age unwritten sectors too (as a pre-aged device)")
    timing = ctl_sub.add_parser("timing", help="show or switch the timing mode at run time")
    timing.add_argument("--mode", choices=("virtual", "realtime"))
    timing.add_argument("--time-scale", type=float, help="real seconds per modeled second (realtime)")
    timing.set_defaults(ctl_func=_ctl_timing)
    trace = ctl_sub.add_parser("trace", help="start/stop recording requests on a running device")
    trace.set_defaults(ctl_func=_ctl_trace)
    trace_sub = trace.add_subparsers(dest="trace_action", required=True)
    trace_sub.add_parser("start", help="record to a new file").add_argument("path")
    trace_sub.add_parser("stop", help="stop recording")
    trace_sub.add_parser("status", help="where and how much is being recorded")
    hid = ctl_sub.add_parser("hid", help="Host-Initiated Defragmentation, with the kernel's attribute names")
    hid.set_defaults(ctl_func=_ctl_hid)
    hid_sub = hid.add_subparsers(dest="hid", required=True)
    hid_sub.add_parser("show", help="all readable attributes")
    get = hid_sub.add_parser("get", help="read one attribute, as its sysfs file")
    get.add_argument("attribute")
    put = hid_sub.add_parser("set", help="write one attribute, e.g. 'set defrag_trigger enable'")
    put.add_argument("attribute")
    put.add_argument("value")
    wait = hid_sub.add_parser("wait", help="wait until state is one of STATES")
    wait.add_argument("states", nargs="+", metavar="STATE")
    wait.add_argument("--timeout", type=float, default=600.0)
    wait.add_argument("--interval", type=float, default=0.2)
    wait.add_argument("--quiet", dest="progress", action="store_false", help="do not print state changes")

    experiment = sub.add_parser("experiment", help="run a study: seeded, writes CSV + PNG, prints a table")
    experiment_sub = experiment.add_subparsers(dest="experiment", required=True)

    # Features in their own modules plug in here: add_cli(subparsers) for
    # top-level commands, add_ctl(ctl_subparsers) for `ctl` commands (each
    # setting ctl_func), add_experiment(experiment_subparsers) for studies.
    for module_name in CLI_EXTENSIONS if load_extensions else ():
        module = importlib.import_module(module_name)
        for hook, target in (("add_cli", sub), ("add_ctl", ctl_sub), ("add_experiment", experiment_sub)):
            if hasattr(module, hook):
                getattr(module, hook)(target)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    light = bool(words) and words[0] in LIGHT_COMMANDS
    args = build_parser(load_extensions=not light).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
