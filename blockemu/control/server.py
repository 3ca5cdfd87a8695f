"""The control API and /metrics, on one loopback HTTP server.

Routes: the server's own (``GET /metrics``, Prometheus text format;
``GET /api/v1/openapi.json``, the OpenAPI description generated from the
routes, blockemu/control/openapi.py; the live page at ``GET /`` with its
files under ``/static/`` and the JSON views it polls under ``/api/v1/live``,
blockemu/control/live.py), then those the runtime, each layer and the model
declare (blockemu/api.py), dispatched by one
:class:`~blockemu.control.routes.RouteTable`.  The page is read-only: it
only ever sends ``GET``, so it works without the token, and changes still
go through the API with it.

Answers are JSON, except attribute reads that mirror a sysfs file, which are
``text/plain`` exactly as the file would read.  Errors are JSON
``{"error": "..."}`` with a 4xx status; nothing a client sends causes a 5xx
unless the model itself is broken.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from blockemu.api import API_PREFIX, ApiError, Route, enum_param
from blockemu.control import web
from blockemu.control.auth import authorized
from blockemu.control.live import LIVE, LiveViews
from blockemu.control.metrics import make_registry
from blockemu.control.openapi import openapi_document
from blockemu.control.routes import RouteTable
from blockemu.runtime import DeviceRuntime

MAX_BODY_BYTES = 1024 * 1024


class ControlServer:
    def __init__(self, runtime: DeviceRuntime, host: str, port: int, token: str | None = None) -> None:
        self.runtime = runtime
        # When set, every request but GET/HEAD must carry it (blockemu/control/auth.py).
        self.token = token or None
        self.registry = make_registry(runtime)
        self.live = LiveViews(runtime)
        self.routes = RouteTable([
            Route("GET", "/metrics", lambda: generate_latest(self.registry), "Prometheus metrics",
                  answer="metrics", errors=()),
            Route("GET", f"{API_PREFIX}/openapi.json", self.openapi, "This description", errors=()),
            Route("GET", "/", web.page, "The live page (read-only; polls /api/v1/live)", answer="asset",
                  errors=()),
            Route("GET", "/static/{name}", web.static, "The live page's scripts and styles, uPlot vendored",
                  {"name": enum_param(web.STATIC_TYPES, "file")}, answer="asset", errors=()),
            *self.live.routes(),
            *runtime.routes(),
        ], runtime.stack.absent)
        handler = type("Handler", (_Handler,), {"control": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def openapi(self) -> dict[str, Any]:
        return openapi_document(self.routes, self.runtime.device.kind, token_required=self.token is not None)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="blockemu-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        # shutdown() waits for serve_forever to return: forever, if it never ran.
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread = None
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    control: ControlServer
    protocol_version = "HTTP/1.1"
    server_version = "blockemu"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it
        """Requests are not logged: the metrics are the record."""

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if isinstance(payload, web.Asset):
            body, ctype = payload.body, payload.content_type
            headers["Content-Security-Policy"] = web.CONTENT_SECURITY_POLICY
        elif isinstance(payload, bytes):
            body, ctype = payload, CONTENT_TYPE_LATEST
        elif isinstance(payload, str):
            body, ctype = payload.encode(), "text/plain; charset=utf-8"
        else:
            # The live views are polled every second or two and can be long lists: sent compact.
            indent = None if getattr(self, "path", "").startswith(LIVE) else 1  # no path: a malformed request line
            body, ctype = (json.dumps(payload, indent=indent) + "\n").encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, bad headers) as JSON too."""
        self.close_connection = True
        self._error(code, message or HTTPStatus(code).phrase)

    def _body(self) -> bytes | None:
        length_text = self.headers.get("Content-Length", "0")
        if not (length_text.isascii() and length_text.isdigit()):
            self._error(HTTPStatus.BAD_REQUEST, "Content-Length must be a non-negative integer")
            return None
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body larger than {MAX_BODY_BYTES} bytes")
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def _dispatch(self) -> None:
        body = self._body()
        if body is None:
            return
        if not authorized(self.command, self.headers.get("Authorization"), self.control.token):
            self._send(HTTPStatus.UNAUTHORIZED,
                       {"error": f"{self.command} needs 'Authorization: Bearer <token>' with the token given to "
                                 "blockemu serve --http-token-file; GET needs none"},
                       {"WWW-Authenticate": 'Bearer realm="blockemu"'})
            return
        try:
            self._send(200, self.control.routes.call(self.command, self.path, body))
        except ApiError as err:
            self._error(err.status, str(err))
        except Exception as err:  # a broken model: answer, rather than drop the connection
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(err).__name__}: {err}")

    def handle_one_request(self) -> None:
        """Every method goes to the routes, so that HEAD, OPTIONS or a made-up one gets their 404/405 with a
        message rather than http.server's 501 (which looks up ``do_<METHOD>``)."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._dispatch()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True
