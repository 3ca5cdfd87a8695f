"""Control-API routes as components declare them: the ground floor of the control plane.

A component (the runtime, a layer, a device model) says what it serves with
a list of :class:`Route`: method, path pattern, handler, and the schema of
the request.  It parses no path and no body: the dispatcher
(blockemu/control/routes.py) matches the path, parses each path parameter
with its :class:`Param`, checks the body against the route's schema, and
calls the handler with typed keyword arguments.  The OpenAPI document
(blockemu/control/openapi.py) is generated from the same routes.

:class:`AttributeGroup` is the kernel-named attribute files (UFS ``hid/``,
zram's sysfs, devfreq): each attribute declared once in a table, as
null_blk's ``NULLB_DEVICE_ATTR`` does, and the group's three routes made
from it.

This module sits beside the models: it imports nothing of blockemu, so that
devices and layers declare routes without importing the control package.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

API_PREFIX = "/api/v1"

Handler = Callable[..., Any]
Wrapper = Callable[[Handler], Handler]


class ApiError(Exception):
    """A control-API request that is refused, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------ path parameters
@dataclass(frozen=True)
class Param:
    """A path parameter: ``parse`` turns the segment into the handler's value or raises ApiError (404)."""

    parse: Callable[[str], Any]
    schema: Mapping[str, Any]


def enum_param(values: Iterable[str], what: str) -> Param:
    """A segment that must be one of ``values`` (an attribute, an action)."""
    allowed = tuple(values)

    def parse(text: str) -> str:
        if text not in allowed:
            raise ApiError(404, f"no {what} {text!r}; allowed: {', '.join(allowed)}")
        return text

    return Param(parse, {"type": "string", "enum": list(allowed)})


def index_param(count: Callable[[], int], what: str) -> Param:
    """A decimal index below ``count()`` (a zone number)."""

    def parse(text: str) -> int:
        # "²".isdigit() is true and int("²") fails: ASCII digits only.
        if not (text.isascii() and text.isdigit()) or int(text) >= count():
            raise ApiError(404, f"no {what} {text!r}; {what}s are 0..{count() - 1}")
        return int(text)

    return Param(parse, {"type": "integer", "minimum": 0})


# ------------------------------------------------------------------ request bodies
@dataclass(frozen=True)
class JsonBody:
    """A JSON body checked against ``schema`` (a small subset of JSON Schema, see :func:`check`).

    An object body's keys become the handler's keyword arguments.  With
    ``checked=False`` the schema only documents the body, and the handler
    gets the decoded value as ``request`` and validates it itself (the fault
    settings, whose own validation names nested keys).  ``empty`` is what an
    empty body means; ``usage`` is the message for a body that is not JSON.
    """

    schema: Mapping[str, Any]
    usage: str
    empty: Any = None
    checked: bool = True


@dataclass(frozen=True)
class TextBody:
    """An ASCII text body (an attribute value), passed as ``text``; ``what`` names it in errors."""

    what: str = "value"


@dataclass(frozen=True)
class RawBody:
    """Bytes as sent (Zone Append's data), passed as ``data``."""

    description: str


Body = JsonBody | TextBody | RawBody
Answer = Literal["json", "text", "metrics", "asset"]


@dataclass(frozen=True)
class Route:
    """One operation: ``method`` on ``path`` (``/api/v1/zones/{index}/{action}``) is served by ``handler``.

    ``params`` parses each ``{name}`` of the path; ``body`` says what the
    request carries; ``answer`` what the handler returns (JSON-ready data,
    text as a sysfs file reads, the metrics exposition, or a file of the live
    page with its content type); ``errors`` the
    4xx statuses the route can answer besides the dispatcher's own.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    params: Mapping[str, Param] = field(default_factory=dict)
    body: Body | None = None
    answer: Answer = "json"
    errors: tuple[int, ...] = (400,)

    def wrapped(self, wrapper: Wrapper) -> Route:
        """The same route, its handler run inside ``wrapper`` (a layer's or the runtime's bookkeeping)."""
        return replace(self, handler=wrapper(self.handler))


def wrap_all(routes: Iterable[Route], wrapper: Wrapper, changing_only: bool = False) -> list[Route]:
    """``routes`` with ``wrapper`` around each handler (only the non-GET ones if ``changing_only``)."""
    return [r if changing_only and r.method == "GET" else r.wrapped(wrapper) for r in routes]


# ------------------------------------------------------------------ JSON checking
def check(schema: Mapping[str, Any], value: Any, where: str) -> None:
    """Refuse ``value`` with a one-line 400 naming ``where`` if ``schema`` does not allow it.

    The subset blockemu's bodies use: type (object, array, integer, number,
    boolean, string), enum, minimum, maximum, exclusiveMinimum, properties,
    required, additionalProperties (false), minProperties, items, minItems.
    Numbers must be finite (Python's json reads Infinity); booleans are not
    numbers.
    """
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        raise ApiError(400, f"{where} must be one of {', '.join(map(str, schema['enum']))}, got {value!r}")
    if kind in ("integer", "number"):
        _check_number(schema, value, where, kind)
    elif kind == "boolean" and not isinstance(value, bool):
        raise ApiError(400, f"{where} must be true or false, got {value!r}")
    elif kind == "string" and not isinstance(value, str):
        raise ApiError(400, f"{where} must be a string, got {value!r}")
    elif kind == "array":
        if not isinstance(value, list) or len(value) < schema.get("minItems", 0):
            least = schema.get("minItems", 0)
            raise ApiError(400, f"{where} must be a list" + (f" of at least {least}" if least else "")
                           + f", got {value!r}")
        for i, item in enumerate(value):
            check(schema["items"], item, f"{where}[{i}]")
    elif kind == "object":
        _check_object(schema, value, where)


def _check_number(schema: Mapping[str, Any], value: Any, where: str, kind: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind == "integer"
                                                                         and not isinstance(value, int)):
        raise ApiError(400, f"{where} must be {'an integer' if kind == 'integer' else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ApiError(400, f"{where} must be a finite number, got {value!r}")
    if "minimum" in schema and value < schema["minimum"]:
        raise ApiError(400, f"{where} must be >= {schema['minimum']}, got {value!r}")
    if "maximum" in schema and value > schema["maximum"]:
        raise ApiError(400, f"{where} must be <= {schema['maximum']}, got {value!r}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        raise ApiError(400, f"{where} must be > {schema['exclusiveMinimum']}, got {value!r}")


def _check_object(schema: Mapping[str, Any], value: Any, where: str) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    if not isinstance(value, dict):
        raise ApiError(400, f"{where} must be a JSON object with keys {', '.join(properties)}")
    if schema.get("additionalProperties") is False:
        unknown = [k for k in value if k not in properties]
        if unknown:
            raise ApiError(400, f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(properties)}")
    missing = [k for k in schema.get("required", ()) if k not in value]
    if missing:
        raise ApiError(400, f"{where}: {missing[0]} is required")
    if len(value) < schema.get("minProperties", 0):
        raise ApiError(400, f"{where} must give at least one of {', '.join(properties)}")
    for key, item in value.items():
        if key in properties:
            check(properties[key], item, key if where == "body" else f"{where}.{key}")


def parse_json_body(body: JsonBody, data: bytes) -> dict[str, Any]:
    """The handler's keyword arguments from a JSON body, or ApiError 400."""
    if not data:
        value = body.empty
    else:
        try:
            value = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, body.usage) from None
    if not body.checked:
        return {"request": value}
    if value is None and body.schema.get("type") == "object":
        raise ApiError(400, body.usage)
    check(body.schema, value, "body")
    return dict(value) if isinstance(value, dict) else {"request": value}


def obj(properties: Mapping[str, Any], *required: str, **extra: Any) -> dict[str, Any]:
    """An object schema that refuses unknown keys."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


# ------------------------------------------------------------------ attribute groups
T = TypeVar("T")


@dataclass(frozen=True)
class Attribute(Generic[T]):
    """One attribute file: ``show`` gives its text as the file reads (None: write-only),
    ``store`` applies a write of the stripped text (None: read-only)."""

    name: str
    show: Callable[[T], str] | None = None
    store: Callable[[T, str], Any] | None = None


@dataclass(frozen=True)
class AttributeGroup(Generic[T]):
    """Kernel-named attribute files under ``/api/v1/<name>/``, declared once.

    Routes: ``GET <name>`` (``snapshot``: every readable value, as JSON),
    ``GET <name>/{attribute}`` (the text, as the file reads) and
    ``PUT <name>/{attribute}`` (a text write, answered with the snapshot).
    ``errors`` maps the group's exceptions to HTTP statuses; ``mode_status``
    is the status for reading a write-only or writing a read-only file (zram
    answers 405, as its files' modes refuse; HID and devfreq 400, as they
    always have).
    """

    name: str
    title: str
    attributes: tuple[Attribute[T], ...]
    snapshot: Callable[[T], dict[str, Any]]
    errors: Mapping[type[Exception], int] = field(default_factory=dict)
    mode_status: int = 400

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def readable(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes if a.show is not None)

    @property
    def writable(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes if a.store is not None)

    def find(self, name: str) -> Attribute[T] | None:
        return next((a for a in self.attributes if a.name == name), None)

    def attribute(self, name: str) -> Attribute[T]:
        attribute = self.find(name)
        if attribute is not None:
            return attribute
        raise ApiError(404, f"no {self.title} attribute {name!r}; allowed: {', '.join(self.names)}")

    def read(self, owner: T, name: str) -> str:
        show = self.attribute(name).show
        if show is None:
            raise ApiError(self.mode_status, f"{name} is write-only, as in sysfs")
        return self._mapped(show, owner)

    def write(self, owner: T, name: str, text: str) -> None:
        """Apply a write; a malformed or refused one raises ApiError and changes nothing."""
        store = self.attribute(name).store
        if store is None:
            raise ApiError(self.mode_status, f"{name} is read-only, as in sysfs; writable: "
                                             f"{', '.join(self.writable)}")
        self._mapped(store, owner, text.strip())

    def _mapped(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except tuple(self.errors) as err:
            status = next(s for kind, s in self.errors.items() if isinstance(err, kind))
            raise ApiError(status, str(err)) from None

    def routes(self, owner: T) -> list[Route]:
        base = f"{API_PREFIX}/{self.name}"
        params = {"attribute": enum_param(self.names, f"{self.title} attribute")}

        def put(attribute: str, text: str) -> dict[str, Any]:
            self.write(owner, attribute, text)
            return self.snapshot(owner)

        return [
            Route("GET", base, lambda: self.snapshot(owner), f"{self.title} attributes and state"),
            Route("GET", base + "/{attribute}", lambda attribute: self.read(owner, attribute),
                  f"One {self.title} attribute, as its sysfs file reads", params, answer="text",
                  errors=(self.mode_status,)),
            Route("PUT", base + "/{attribute}", put, f"Write one {self.title} attribute", params,
                  TextBody(), errors=tuple(sorted({400, self.mode_status, *self.errors.values()}))),
        ]
