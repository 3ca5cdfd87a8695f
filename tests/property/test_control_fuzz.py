"""Control API fuzz: malformed requests always get a 4xx with a message, never a 5xx, and change nothing.

The server runs in this process (ControlServer over a DeviceRuntime), so the
fuzzer can send thousands of requests in seconds.  Requests are drawn from the
published OpenAPI description: its paths with wrong methods, its JSON bodies
broken in every way (not JSON, wrong types, unknown keys, values out of
range), its path parameters replaced by junk, plus unknown paths, made-up
methods and bodies over the size limit.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockemu.config import config_from_mapping
from blockemu.control.server import MAX_BODY_BYTES, ControlServer
from blockemu.runtime import DeviceRuntime
from tests.conftest import small_ufs_config

ZNS_RAW = {"device": {"type": "zns", "name": "zns_test", "capacity_mib": 16},
           "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 2, "max_open_zones": 2,
                   "max_active_zones": 3},
           "power": {"enabled": True}}
# Keys of GET /api/v1/device that move on their own (time, request counts), not state a request changed.
MOVING = ("timing", "io", "queue_depth", "power")


class Server:
    def __init__(self, runtime: DeviceRuntime) -> None:
        self.runtime = runtime
        self.control = ControlServer(runtime, "127.0.0.1", 0)
        self.control.start()
        self.host, self.port = self.control.address
        self.spec: dict[str, Any] = json.loads(self.request("GET", "/api/v1/openapi.json")[1])

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        # Written by hand: http.client refuses non-ASCII paths, and hostile clients do not.
        target = "".join(c if ord(c) < 256 else f"%{ord(c) & 0xFF:02X}" for c in path).encode("latin-1")
        lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: fuzz", b"Connection: close"]
        lines += [f"{name}: {value}".encode() for name, value in
                  (headers or {"Content-Length": str(len(body))}).items()]
        with socket.create_connection((self.host, self.port), timeout=30) as sock:
            sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
            if body:
                try:
                    sock.sendall(body)
                except (BrokenPipeError, ConnectionResetError):  # refused before the body was read (413)
                    pass
            response = http.client.HTTPResponse(sock, method=method)
            response.begin()
            return response.status, response.read()

    def state(self) -> dict[str, Any]:
        status, payload = self.request("GET", "/api/v1/device")
        assert status == 200
        description: dict[str, Any] = json.loads(payload)
        for key in MOVING:
            description.pop(key, None)
        description["faults"].pop("injected", None)
        return description

    def close(self) -> None:
        self.control.stop()
        self.runtime.close()


@pytest.fixture(scope="module", params=["ufs", "zns"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    config = small_ufs_config() if request.param == "ufs" else config_from_mapping(ZNS_RAW, "<test>")
    runtime = DeviceRuntime(config)
    runtime.write(0, memoryview(b"s" * 65536))  # some data, so that aging and HID have work
    served = Server(runtime)
    yield served
    served.close()


# ---------------------------------------------------------------- strategies
junk_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
not_json = st.one_of(st.binary(min_size=1, max_size=60).filter(lambda b: not _is_json(b)),
                     st.sampled_from([b"{", b"[", b'{"mode": }', b"\xff\xfe", b"nul\x00l", b"{'a': 1}", b"NaN]"]))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), junk_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(junk_text, inner, max_size=3)),
    max_leaves=8)


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def wrong_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A JSON value that ``schema`` refuses."""
    kind = schema.get("type")
    if "enum" in schema:
        return json_values.filter(lambda v: v not in schema["enum"])
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        out_of_range = []
        if low is not None:
            out_of_range.append(st.integers(max_value=int(low) - 1) | st.just(low - 0.5))
        if high is not None:
            out_of_range.append(st.integers(min_value=int(high) + 1))
        # No setting takes an infinite number (JSON's Infinity, which Python's json reads).
        wrong_type: list[st.SearchStrategy[Any]] = [
            st.none(), st.booleans(), junk_text, st.lists(st.integers(), max_size=2),
            st.sampled_from([float("inf"), float("-inf")])]
        if kind == "integer":
            wrong_type.append(st.floats(allow_nan=False))  # 3.0 is not an integer in these APIs either
        return st.one_of(*wrong_type, *out_of_range)
    if kind == "boolean":
        return json_values.filter(lambda v: not isinstance(v, bool))
    if kind == "string":
        return json_values.filter(lambda v: not isinstance(v, str))
    if kind == "array":
        return json_values.filter(lambda v: not isinstance(v, list)) | st.lists(
            wrong_value(schema["items"]), min_size=1, max_size=2)
    if kind == "object":
        return wrong_body(schema)
    return st.nothing()


def _single(key: str) -> Any:
    return lambda value: {key: value}


def wrong_body(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A JSON body that an object ``schema`` (additionalProperties false) refuses."""
    properties: dict[str, Any] = schema.get("properties", {})
    choices: list[st.SearchStrategy[Any]] = [
        json_values.filter(lambda v: not isinstance(v, dict)),
        st.dictionaries(junk_text.filter(lambda k: k not in properties), json_values, min_size=1, max_size=2),
    ]
    for key, sub in properties.items():
        choices.append(wrong_value(sub).map(_single(key)))
    return st.one_of(choices)


@st.composite
def hostile_request(draw: st.DrawFn, spec: dict[str, Any]) -> tuple[str, str, bytes]:
    paths: dict[str, Any] = spec["paths"]
    template = draw(st.sampled_from(sorted(paths)))
    item = paths[template]
    concrete = template
    for parameter in item.get("parameters", []):
        value = draw(st.one_of(
            junk_text.map(lambda t: "zz" + "".join(c if c.isalnum() else f"%{ord(c) & 0xFF:02X}" for c in t)),
            st.sampled_from(["-1", "99999", "²", "%00", "..", "1e3", " 1"]),
        ))
        allowed = parameter["schema"].get("enum")
        if allowed is not None and value in allowed:
            value = "zz" + value
        concrete = concrete.replace("{" + parameter["name"] + "}", value)
    methods = [m.upper() for m in item if m != "parameters"]
    kind = draw(st.sampled_from(["wrong_method", "bad_body", "unknown_path", "huge", "weird_method"]))
    if kind == "unknown_path":
        junk = draw(junk_text.map(lambda t: "".join(c if c.isalnum() else "_" for c in t)))
        return draw(st.sampled_from(["GET", "PUT", "POST", "DELETE"])), f"/api/v1/zz{junk}/x", b""
    if kind == "weird_method":
        return draw(st.sampled_from(["PATCH", "OPTIONS", "TRACE", "FOO", "HEAD"])), concrete, b""
    if kind == "huge":
        return draw(st.sampled_from(methods)), concrete, b"{" * (MAX_BODY_BYTES + 1)
    writing = [m for m in methods if m in ("PUT", "POST")]
    if kind == "wrong_method" or not writing or concrete != template:
        wrong = [m for m in ("GET", "PUT", "POST", "DELETE") if m not in methods]
        if wrong and (kind == "wrong_method" or concrete == template):
            return draw(st.sampled_from(wrong)), concrete, b""
        if concrete != template:  # a junk parameter: any method, any body
            return draw(st.sampled_from(methods)), concrete, draw(st.binary(max_size=20))
        return draw(st.sampled_from(["PATCH", "FOO"])), concrete, b""
    method = draw(st.sampled_from(writing))
    operation = item[method.lower()]
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body = draw(st.one_of(not_json, wrong_body(content["application/json"]["schema"]).map(
            lambda v: json.dumps(v).encode())))
    elif "text/plain" in content:
        # Attribute values: never one of the words the attributes accept.
        body = draw(st.one_of(st.binary(min_size=1, max_size=20).filter(lambda b: not b.strip().isalnum()),
                              junk_text.map(lambda t: ("~" + t).encode())))
    else:
        return draw(st.sampled_from(["PUT", "DELETE"])) if method == "POST" else "DELETE", concrete, b""
    return method, concrete, body


def check_answer(status: int, payload: bytes, request: tuple[str, str, bytes]) -> None:
    assert 400 <= status < 500, (status, payload[:300], request[:2], request[2][:80])
    if request[0] != "HEAD":
        message = json.loads(payload)["error"]
        assert isinstance(message, str) and message, request


def test_openapi_is_published_and_lists_the_device_routes(server: Server) -> None:
    spec = server.spec
    assert spec["openapi"].startswith("3.")
    assert {"/api/v1/device", "/api/v1/faults", "/api/v1/powercut", "/api/v1/timing"} <= set(spec["paths"])
    kind = server.state()["type"]
    assert ("/api/v1/hid/{attribute}" in spec["paths"]) is (kind == "ufs")
    assert ("/api/v1/zones/{index}/{action}" in spec["paths"]) is (kind == "zns")
    assert ("/api/v1/power" in spec["paths"]) is (kind == "zns")  # only that fixture enables [power]
    status, _ = server.request("POST", "/api/v1/openapi.json")
    assert status == 405


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_requests_get_4xx_and_change_nothing(server: Server, data: st.DataObject) -> None:
    before = server.state()
    request = data.draw(hostile_request(server.spec))
    status, payload = server.request(*request)
    check_answer(status, payload, request)
    assert server.state() == before, request


@pytest.mark.parametrize("headers", [{"Content-Length": "-1"}, {"Content-Length": "²"}, {"Content-Length": "abc"},
                                     {"Content-Length": str(MAX_BODY_BYTES + 1)}])
def test_bad_content_length_is_refused(server: Server, headers: dict[str, str]) -> None:
    before = server.state()
    status, payload = server.request("PUT", "/api/v1/faults", headers=headers)
    check_answer(status, payload, ("PUT", "/api/v1/faults", b""))
    assert server.state() == before


@pytest.mark.parametrize("line", [b"\x16\x03\x01 garbage", b"GET /api/v1/device HTTP/9.9", b"GET / HTTP/1.1 extra",
                                  b"\x00" * 100])
def test_request_lines_that_are_not_http_get_a_json_error(server: Server, line: bytes) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as raw:
        raw.sendall(line + b"\r\n\r\n")
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    # HTTP/0.9-style lines are answered without a status line; the body is still the JSON error.
    assert not answer.startswith((b"HTTP/1.0 5", b"HTTP/1.1 5")), answer
    assert answer.startswith((b"HTTP/1.0 4", b"HTTP/1.1 4")) or answer.startswith(b"{"), answer
    assert json.loads(answer[answer.index(b"{"):])["error"]


def test_unicode_digits_are_not_zone_numbers(server: Server) -> None:
    # "²".isdigit() is true but int("²") fails: this used to drop the connection.
    status, payload = server.request("GET", "/api/v1/zones/\u00b2")
    assert status == 404
    error = json.loads(payload)["error"]
    # ZNS says which zone is unknown; other devices have no zones at all.
    assert ("no zone" if server.state()["type"] == "zns" else "no such endpoint") in error


def test_infinite_time_scale_is_refused(server: Server) -> None:
    # Python's json reads Infinity; an infinite time scale used to be accepted.
    before = server.state()
    status, payload = server.request("PUT", "/api/v1/timing", b'{"mode": "realtime", "time_scale": Infinity}')
    assert status == 400 and "finite" in json.loads(payload)["error"]
    assert server.state() == before
