"""The control API's OpenAPI 3.1 description, served at ``GET /api/v1/openapi.json``.

Generated from the route table of the served stack (blockemu/control/routes.py),
so it lists exactly what that stack serves: a device kind's own routes, the
power routes only with the power layer.  Tests fuzz the API from it.
"""

from __future__ import annotations

from typing import Any

from blockemu.api import JsonBody, RawBody, Route, TextBody
from blockemu.control.routes import RouteTable

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_ANY = {"type": "object", "additionalProperties": True}
# Every route can be asked with another method (405); a path parameter can name nothing (404).
DISPATCH_ERRORS = (405,)


def _operation(route: Route) -> dict[str, Any]:
    if route.answer == "json":
        content = {"application/json": {"schema": JSON_ANY}}
    elif route.answer == "asset":  # the live page: HTML, scripts, styles
        content = {"text/*": {"schema": {"type": "string"}}}
    else:
        content = {"text/plain": {"schema": {"type": "string"}}}
    statuses = set(route.errors) | set(DISPATCH_ERRORS) | ({404} if route.params else set())
    if isinstance(route.body, JsonBody):
        statuses.add(400)
    responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
    for status in sorted(statuses):
        responses[str(status)] = {"description": "refused", "content": {"application/json": {"schema": ERROR}}}
    operation: dict[str, Any] = {"summary": route.summary, "responses": responses}
    if isinstance(route.body, JsonBody):
        operation["requestBody"] = {"required": False,
                                    "content": {"application/json": {"schema": dict(route.body.schema)}}}
    elif isinstance(route.body, TextBody):
        operation["requestBody"] = {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}}
    elif isinstance(route.body, RawBody):
        operation["requestBody"] = {"required": False, "description": route.body.description,
                                    "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                        "format": "binary"}}}}
    return operation


def openapi_document(table: RouteTable, device_kind: str, token_required: bool = False) -> dict[str, Any]:
    """The description of every route in ``table`` (a served device of ``device_kind``).

    ``token_required``: the server was given a bearer token (blockemu/control/auth.py),
    which every operation but GET needs.
    """
    paths: dict[str, Any] = {}
    for route in table.routes:
        item = paths.setdefault(route.path, {})
        if route.params and "parameters" not in item:
            item["parameters"] = [{"name": name, "in": "path", "required": True, "schema": dict(param.schema)}
                                  for name, param in route.params.items()]
        operation = _operation(route)
        if token_required and route.method != "GET":
            operation["security"] = [{"bearer": []}]
            operation["responses"]["401"] = {"description": "no or wrong bearer token",
                                             "content": {"application/json": {"schema": ERROR}}}
        item[route.method.lower()] = operation
    components: dict[str, Any] = {"schemas": {"Error": {
        "type": "object", "properties": {"error": {"type": "string"}}, "additionalProperties": False,
        "required": ["error"]}}}
    if token_required:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"blockemu control API ({device_kind})", "version": "1",
                 "description": "Errors are JSON {\"error\": message} with a 4xx status; bodies over 1 MiB are "
                                "refused with 413."},
        "paths": paths,
        "components": components,
    }
