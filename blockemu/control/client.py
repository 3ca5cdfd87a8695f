"""Python access to served devices: start ``blockemu serve``, call its control API, do I/O.

    with ServedDevice("configs/ufs41.toml") as dev:
        nbd = dev.connect()                  # a libnbd handle
        nbd.pwrite(b"x" * 4096, 0)
        dev.control.put("hid/defrag_trigger", "enable")
        dev.control.wait_hid("defrag_completed")

Experiments and tests use this instead of hand-written HTTP and subprocess code;
``blockemu ctl`` sends its requests with :func:`http_request` and prints the
answers with :func:`print_result`.  Only the standard library is imported, so
a client needs none of the device models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any

from blockemu.control.auth import TOKEN_ENV


class ControlClientError(Exception):
    """A control API request failed: refused (4xx/5xx, with the server's message) or no server there."""


class ServerUnreachableError(ControlClientError):
    """No server answered at the URL; ``reason`` is the socket's (connection refused, timed out...)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# UFS HID's states (blockemu/devices/ufs/hid.py HidState), and those it stays
# in until the host writes a trigger (FINAL_STATES): tests/unit/test_cli.py pins both.
HID_STATES = ("idle", "analysis_in_progress", "defrag_required", "defrag_in_progress", "defrag_completed",
              "defrag_not_required")
HID_FINAL_STATES = ("idle", "defrag_required", "defrag_completed", "defrag_not_required")


class HidStateError(RuntimeError):
    """HID reached a final state other than the one awaited: it will not move on by itself."""

    def __init__(self, state: str, wanted: tuple[str, ...]) -> None:
        super().__init__(f"HID state is {state!r}, a final state, not {' or '.join(wanted)}" + _hid_hint(state))
        self.state = state


def _hid_hint(state: str) -> str:
    if state == "defrag_not_required":
        return ("; analysis found no fragmented data: write data and age it first "
                "('blockemu ctl age --fragmentation 60', or --all on an empty device)")
    if state == "idle":
        return "; nothing runs: write 'enable' to hid/analysis_trigger or hid/defrag_trigger first"
    return ""


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
        raise ServerUnreachableError(
            f"{method} {url}: cannot connect ({err.reason}); is 'blockemu serve' running?", str(err.reason)
        ) from None
    if ctype.startswith("application/json"):
        return json.loads(payload)
    return payload.decode()


def print_result(result: Any) -> None:
    """An answer on stdout: text as the sysfs file reads, anything else as indented JSON."""
    if isinstance(result, str):
        print(result, end="" if result.endswith("\n") else "\n")
    else:
        print(json.dumps(result, indent=1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ControlClient:
    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token  # None: $BLOCKEMU_HTTP_TOKEN, if set

    def get(self, path: str) -> Any:
        return http_request(f"{self.url}/api/v1/{path}", token=self.token)

    def put(self, path: str, value: str) -> Any:
        return http_request(f"{self.url}/api/v1/{path}", "PUT", value.encode(), token=self.token)

    def post(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else b""
        return http_request(f"{self.url}/api/v1/{path}", "POST", data, token=self.token)

    def device(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("device")
        return result

    def metrics_text(self) -> str:
        return str(http_request(f"{self.url}/metrics"))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        found = False
        for line in self.metrics_text().splitlines():
            match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
                found = True
        if not found:
            raise KeyError(f"no sample of {name} with labels {labels}")
        return total

    def wait_hid(self, *states: str, timeout_s: float = 120.0) -> str:
        """Wait until HID's state is one of ``states``; HidStateError at another final state."""
        unknown = [s for s in states if s not in HID_STATES]
        if unknown:
            raise ValueError(f"not HID states: {', '.join(unknown)}; the states are {', '.join(HID_STATES)}")
        deadline = time.monotonic() + timeout_s
        while True:
            state = str(self.get("hid")["state"])
            if state in states:
                return state
            if state in HID_FINAL_STATES:
                raise HidStateError(state, states)
            if time.monotonic() > deadline:
                raise TimeoutError(f"HID state still {state!r} after {timeout_s} s, wanted {states}")
            time.sleep(0.05)


    # ---------------------------------------------------------------- ZNS zones
    def zones(self) -> list[dict[str, Any]]:
        """The zone report: index, start, length, capacity, wp, type, condition (bytes)."""
        result: list[dict[str, Any]] = self.get("zones")
        return result

    def zone(self, index: int) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"zones/{index}")
        return result

    def zone_action(self, index: int, action: str) -> dict[str, Any]:
        """open, close, finish, reset or offline zone ``index``; returns its new report."""
        result: dict[str, Any] = self.post(f"zones/{index}/{action}")
        return result

    def reset_all_zones(self) -> dict[str, Any]:
        result: dict[str, Any] = self.post("zones/reset-all")
        return result

    def zone_append(self, index: int, data: bytes) -> int:
        """Zone Append ``data``; returns the byte offset the device wrote it at."""
        answer = http_request(f"{self.url}/api/v1/zones/{index}/append", "POST", bytes(data), token=self.token)
        return int(answer["offset"])

    def copy(self, sources: list[tuple[int, int]], dest_zone: int) -> int:
        """Simple Copy (offset, length) byte ranges to ``dest_zone``'s write pointer; returns where."""
        body = {"sources": [{"offset": o, "length": n} for o, n in sources], "dest_zone": dest_zone}
        return int(self.post("copy", body)["offset"])


class ServedDevice:
    """A ``blockemu serve`` process on a private unix socket and a free loopback port."""

    def __init__(self, config: str | Path, overrides: list[str] | None = None, *,
                 run_dir: str | Path | None = None, startup_timeout_s: float = 60.0,
                 extra_args: list[str] | None = None) -> None:
        self.config = Path(config)
        self.overrides = overrides or []
        self.extra_args = extra_args or []
        self._own_dir = run_dir is None
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="blockemu-"))
        self.socket = self.run_dir / "nbd.sock"
        self.port = free_port()
        self.http = f"127.0.0.1:{self.port}"
        self.control = ControlClient(f"http://{self.http}")
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[str] | None = None
        # The server's output, last lines kept: a long hostile run logs a lot.
        self.output: deque[str] = deque(maxlen=5000)
        self._drainer: threading.Thread | None = None
        self.socket_left_behind = False

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"

    def start(self) -> ServedDevice:
        argv = [sys.executable, "-m", "blockemu", "serve", str(self.config), "--unix", str(self.socket),
                "--http", self.http]
        for item in self.overrides:
            argv += ["--set", item]
        argv += self.extra_args
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_s
        os.set_blocking(self.process.stdout.fileno(), False)
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line:
                self.output.append(line.rstrip("\n"))
                if "stop with Ctrl-C" in line:
                    self._start_output_drain()
                    return self
                continue
            if self.process.poll() is not None:
                self.output.extend(self._drain_output())
                raise RuntimeError("blockemu serve exited early:\n" + "\n".join(self.output))
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("blockemu serve did not become ready:\n" + "\n".join(self.output))

    def _start_output_drain(self) -> None:
        """Keep reading the server's output while it runs.

        nbdkit logs every invalid request to stderr; an undrained pipe fills
        after 64 KiB and the thread writing the log blocks for good, holding
        the connection it serves (a hostile client could wedge the server).
        """
        assert self.process is not None and self.process.stdout is not None
        stream = self.process.stdout
        os.set_blocking(stream.fileno(), True)

        def drain() -> None:
            try:
                for line in stream:
                    self.output.append(line.rstrip("\n"))
            except (OSError, ValueError):  # the pipe was closed by stop()
                pass

        self._drainer = threading.Thread(target=drain, name="served-device-output", daemon=True)
        self._drainer.start()

    def _drain_output(self) -> list[str]:
        """What the exited server printed last (its pipe is non-blocking while it runs)."""
        assert self.process is not None and self.process.stdout is not None
        stream = self.process.stdout
        if stream.closed:
            return []
        # The writer is gone, so a blocking read ends at EOF; a non-blocking
        # text read can fail on an empty pipe instead of returning.
        os.set_blocking(stream.fileno(), True)
        return stream.read().splitlines()

    def connect(self) -> Any:
        import nbd  # libnbd's python binding (Debian: python3-libnbd)

        handle = nbd.NBD()
        handle.connect_uri(self.uri)
        return handle

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=5)  # the writer is gone: the drain ends at EOF
            self._drainer = None
        elif self.process.stdout is not None and not self.process.stdout.closed:
            self.output.extend(self._drain_output())
        if self.process.stdout is not None:
            self.process.stdout.close()
        code = self.process.returncode
        # Recorded before cleaning up, so tests can check the server removed it.
        self.socket_left_behind = self.socket.exists()
        if self._own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return code

    def __enter__(self) -> ServedDevice:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["HID_FINAL_STATES", "HID_STATES", "ControlClient", "ControlClientError", "HidStateError",
           "ServedDevice", "ServerUnreachableError", "free_port", "http_request", "print_result"]
