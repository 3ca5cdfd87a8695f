"""The control API's OpenAPI 3.1 description, served at ``GET /api/v1/openapi.json``.

Written by hand next to the routes it describes (runtime.py, control/server.py,
write_cache.py, faults.py, power.py and each device's ``api``); only the
routes of the device being served are listed.  Tests fuzz the API from it.
"""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_ANY = {"type": "object", "additionalProperties": True}


def _op(summary: str, body: dict[str, Any] | None = None, text_body: bool = False, answer: str = "json",
        errors: tuple[int, ...] = (400, 404, 405)) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {
            "text/plain" if answer == "text" else "application/json": {"schema": {"type": "string"}
                                                                       if answer == "text" else JSON_ANY}}},
    }
    for status in errors:
        responses[str(status)] = {"description": "refused", "content": {"application/json": {"schema": ERROR}}}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    elif text_body:
        operation["requestBody"] = {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}}
    return operation


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def _attribute_path(name: str, enum: tuple[str, ...]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "enum": list(enum)}}


def openapi_document(device_kind: str, power: bool, token_required: bool = False) -> dict[str, Any]:
    """The description for a served device of ``device_kind`` (with the power layer or not).

    ``token_required``: the server was given a bearer token (blockemu/control/auth.py),
    which every operation but GET needs.
    """
    from blockemu.layers.faults import FAULT_ERRNOS, FAULT_OPS
    from blockemu.layers.write_cache import POWERCUT_MODES

    errno_schema = {"type": "string", "enum": list(FAULT_ERRNOS)}
    op_fault = _object({"error_rate": {"type": "number", "minimum": 0, "maximum": 1}, "errno": errno_schema})
    faults_body = _object({
        "seed": {"type": "integer", "minimum": 0},
        "offline": {"type": "boolean"},
        "read_only": {"type": "boolean"},
        "ops": _object({op: op_fault for op in FAULT_OPS}),
        "bad_ranges": {"type": "array", "items": _object({
            "offset": {"type": "integer", "minimum": 0}, "length": {"type": "integer", "minimum": 1},
            "ops": {"type": "array", "minItems": 1, "items": {"type": "string",
                                                              "enum": ["read", "write", "trim", "zero"]}},
            "errno": errno_schema}, required=("offset", "length"))},
        "latency_spike": _object({"probability": {"type": "number", "minimum": 0, "maximum": 1},
                                  "extra_us": {"type": "number", "minimum": 0}}),
    })
    paths: dict[str, Any] = {
        "/metrics": {"get": _op("Prometheus metrics", answer="text", errors=(405,))},
        "/api/v1/device": {"get": _op("Description and live statistics", errors=(405,))},
        "/api/v1/openapi.json": {"get": _op("This description", errors=(405,))},
        "/api/v1/timing": {
            "get": _op("Timing mode and modeled time"),
            "put": _op("Switch timing at run time", _object({
                "mode": {"type": "string", "enum": ["virtual", "realtime"]},
                "time_scale": {"type": "number", "exclusiveMinimum": 0}})),
        },
        "/api/v1/trace": {"get": _op("Tracing status")},
        "/api/v1/trace/start": {"post": _op("Record every request to a new file", _object(
            {"path": {"type": "string"}}, required=("path",)), errors=(400, 404, 409))},
        "/api/v1/trace/stop": {"post": _op("Stop recording", errors=(404, 409))},
        "/api/v1/faults": {
            "get": _op("Injected faults and counts"),
            "put": _op("Change faults (keys given are replaced; ops per operation)", faults_body),
            "delete": _op("Remove every fault"),
        },
    }
    if device_kind in ("ufs", "zns", "zns_ftl"):
        paths["/api/v1/powercut"] = {
            "get": _op("Write cache state"),
            "post": _op("Lose the writes since the last completed flush, then serve on", _object({
                "mode": {"type": "string", "enum": list(POWERCUT_MODES)}, "seed": {"type": "integer"}}),
                errors=(400, 405, 409)),
        }
    if device_kind == "ufs":
        from blockemu.devices.ufs.hid import HID_ATTRIBUTES

        paths["/api/v1/hid"] = {"get": _op("HID attributes and state")}
        paths["/api/v1/hid/{attribute}"] = {
            "parameters": [_attribute_path("attribute", HID_ATTRIBUTES)],
            "get": _op("One HID attribute, as its sysfs file reads", answer="text"),
            "put": _op("Write one HID attribute", text_body=True, errors=(400, 404, 405, 409)),
        }
        paths["/api/v1/age"] = {"post": _op("Induce fragmentation", _object({
            "fragmentation_percent": {"type": "number", "minimum": 0, "maximum": 100},
            "fragment_kib": {"type": "integer"}, "seed": {"type": "integer"},
            "span_percent": {"type": "number"}, "mapped_only": {"type": "boolean"}},
            required=("fragmentation_percent",)), errors=(400, 404, 405, 409))}
        paths["/api/v1/fragmentation"] = {"get": _op("Fragmentation summary")}
    if device_kind == "zns":
        from blockemu.devices.zns.device import ZONE_ACTIONS

        index = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
        paths["/api/v1/zones"] = {"get": _op("Zone report")}
        paths["/api/v1/zones/reset-all"] = {"post": _op("Reset every zone", errors=(400, 405, 409))}
        paths["/api/v1/zones/{index}"] = {"parameters": [index], "get": _op("One zone's report")}
        paths["/api/v1/zones/{index}/{action}"] = {
            "parameters": [index, _attribute_path("action", ZONE_ACTIONS)],
            "post": _op("Zone management; append takes the data as the body", errors=(400, 404, 405, 409)),
        }
        paths["/api/v1/copy"] = {"post": _op("Simple Copy", _object({
            "sources": {"type": "array", "items": _object({"offset": {"type": "integer"},
                                                           "length": {"type": "integer"}})},
            "dest_zone": {"type": "integer"}}, required=("sources", "dest_zone")), errors=(400, 405, 409))}
    if device_kind == "zram":
        from blockemu.devices.zram.sysfs import ATTRIBUTES

        paths["/api/v1/zram"] = {"get": _op("zram attributes and statistics")}
        paths["/api/v1/zram/{attribute}"] = {
            "parameters": [_attribute_path("attribute", ATTRIBUTES)],
            "get": _op("One zram attribute, as its sysfs file reads", answer="text"),
            "put": _op("Write one zram attribute", text_body=True),
        }
    if power:
        from blockemu.layers.power import POWER_ATTRIBUTES

        paths["/api/v1/power"] = {"get": _op("Frequency, governor and energy")}
        paths["/api/v1/power/{attribute}"] = {
            "parameters": [_attribute_path("attribute", POWER_ATTRIBUTES)],
            "get": _op("One devfreq-style attribute", answer="text"),
            "put": _op("Write one attribute", text_body=True),
        }
    components: dict[str, Any] = {"schemas": {"Error": _object({"error": {"type": "string"}}, required=("error",))}}
    if token_required:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for item in paths.values():
            for method, operation in item.items():
                if method in ("put", "post", "delete", "patch"):
                    operation["security"] = [{"bearer": []}]
                    operation["responses"]["401"] = {"description": "no or wrong bearer token",
                                                     "content": {"application/json": {"schema": ERROR}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"blockemu control API ({device_kind})", "version": "1",
                 "description": "Errors are JSON {\"error\": message} with a 4xx status; bodies over 1 MiB are "
                                "refused with 413."},
        "paths": paths,
        "components": components,
    }
