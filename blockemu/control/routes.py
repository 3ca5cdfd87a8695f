"""Dispatch a control request to the route that serves it.

The served stack's components declare their routes (blockemu/api.py); a
:class:`RouteTable` holds them all and answers a request: 404 with a message
for a path nobody serves (or a path parameter that names nothing), 405 with
the allowed methods for a known path and another method, 400 for a body the
route's schema refuses; otherwise the handler's answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from blockemu.api import ApiError, JsonBody, RawBody, Route, TextBody, parse_json_body


@dataclass(frozen=True)
class _Pattern:
    path: str
    segments: tuple[str, ...]

    @property
    def literals(self) -> int:
        return sum(1 for s in self.segments if not s.startswith("{"))

    def match(self, parts: list[str]) -> bool:
        return len(parts) == len(self.segments) and all(
            s.startswith("{") or s == p for s, p in zip(self.segments, parts, strict=True))


def _segments(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


class RouteTable:
    """Every route of a served stack, by path pattern and method."""

    def __init__(self, routes: Iterable[Route], absent: Mapping[str, str] | None = None) -> None:
        """``absent``: path prefixes nobody serves here on purpose (a layer configured off), with the
        hint a 404 under them gives."""
        self.absent = dict(absent or {})
        self.routes: list[Route] = []
        self._by_path: dict[str, dict[str, Route]] = {}
        patterns: dict[str, _Pattern] = {}
        for route in routes:
            methods = self._by_path.setdefault(route.path, {})
            if route.method in methods:
                raise ValueError(f"{route.method} {route.path} is declared twice")
            methods[route.method] = route
            self.routes.append(route)
            patterns.setdefault(route.path, _Pattern(route.path, tuple(_segments(route.path))))
        # Literal segments win over parameters: /zones/reset-all before /zones/{index}.
        self._patterns = sorted(patterns.values(), key=lambda p: -p.literals)

    def call(self, method: str, path: str, body: bytes = b"") -> Any:
        """Serve ``method path`` with ``body``; raise ApiError for a refused request."""
        route, kwargs = self.resolve(method, path)
        return route.handler(**kwargs, **self._body_arguments(route, body, kwargs))

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, Any]]:
        """The route for ``method path`` and its parsed path parameters."""
        parts = _segments(path.split("?", 1)[0])
        refusal: ApiError | None = None
        for pattern in self._patterns:
            if not pattern.match(parts):
                continue
            methods = self._by_path[pattern.path]
            some = next(iter(methods.values()))
            try:
                kwargs = {s[1:-1]: some.params[s[1:-1]].parse(p)
                          for s, p in zip(pattern.segments, parts, strict=True) if s.startswith("{")}
            except ApiError as err:
                refusal = refusal or err  # the most specific pattern's reason
                continue
            route = methods.get(method)
            if route is None:
                raise ApiError(405, f"{method} is not allowed on {path}; use {' or '.join(sorted(methods))}")
            return route, kwargs
        if refusal is not None:
            raise refusal
        for prefix, hint in self.absent.items():
            if parts[: len(_segments(prefix))] == _segments(prefix):
                raise ApiError(404, f"no such endpoint {path}: {hint}")
        raise ApiError(404, f"no such endpoint {path}; GET /api/v1/openapi.json lists the routes")

    @staticmethod
    def _body_arguments(route: Route, body: bytes, kwargs: dict[str, Any]) -> dict[str, Any]:
        spec = route.body
        if spec is None:
            return {}
        if isinstance(spec, JsonBody):
            return parse_json_body(spec, body)
        if isinstance(spec, TextBody):
            try:
                return {"text": body.decode("ascii")}
            except UnicodeDecodeError:
                raise ApiError(400, f"{kwargs.get('attribute', spec.what)}: value must be ASCII text") from None
        assert isinstance(spec, RawBody)
        return {"data": body}
