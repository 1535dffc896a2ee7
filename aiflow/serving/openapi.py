"""The OpenAPI document the online server publishes at ``GET /openapi.json`` (behind the bearer token).

Built from what is served at the moment of the request: each dataset's record schema comes from its loaded
champion's input fields (:func:`aiflow.serving.schema.input_fields`), so the document follows a reload. The handlers
read raw bodies (no FastAPI body models: they cost a validation pass per request), hence a document written here
rather than FastAPI's generated one, which would describe no body at all. It states what the handlers accept; a
request outside it gets a 4xx naming the problem (never a 5xx), which generated-request tests check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiflow.serving.schema import OIP_TYPES, Field

#: JSON Schema of a record field by spec column type.
FIELD_SCHEMA: dict[str, dict] = {
    "string": {"type": "string"},
    "bool": {"type": "boolean"},
    "int32": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "int64": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "float32": {"type": "number"},
    "float64": {"type": "number"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
}
ERROR = {"description": "A client error; the body names the problem.", "content": {"application/json": {"schema": {
    "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "problems": {"type": "array"}}}}}}  # fmt: skip
OPEN: list = []  # no security requirement: the health probes and the signed report links


def record_schema(fields: Sequence[Field]) -> dict:
    """One raw record of a dataset: its input fields (nullable when not required); other fields are allowed and ignored."""
    properties = {f.name: FIELD_SCHEMA[f.type] if f.required else {**FIELD_SCHEMA[f.type], "nullable": True} for f in fields}
    return {"type": "object", "properties": properties, "required": [f.name for f in fields if f.required]}


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, *, body: dict | None = None, params: Sequence[dict] = (), security: list | None = None, ok: str = "OK") -> dict:
    op: dict = {"summary": summary, "responses": {"200": {"description": ok}, "4XX": ERROR}}
    if body is not None:
        op["requestBody"] = _json_body(body)
    if params:
        op["parameters"] = list(params)
    if security is not None:
        op["security"] = security
    return op


def _path_param(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def document(fields: Mapping[str, Sequence[Field] | None], title: str = "aiflow serve", version: str = "0.1.0") -> dict:
    """The OpenAPI 3.0 document of a server serving ``fields`` (dataset name → its champion's input fields, None when
    not loaded yet: its records are then any object)."""
    names = sorted(fields)
    records = {n: record_schema(f) if f is not None else {"type": "object"} for n, f in fields.items()}
    predict = {"oneOf": [
        {"type": "object", "required": ["dataset", "records"], "properties": {
            "dataset": {"type": "string", "enum": [n]}, "records": {"type": "array", "minItems": 1, "items": records[n]}}}
        for n in names
    ]}  # fmt: skip
    feedback = {"type": "object", "required": ["dataset", "labels"], "properties": {
        "dataset": {"type": "string", "enum": names},
        "labels": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["request_id", "label"], "properties": {
            "request_id": {"type": "string", "minLength": 1}, "label": {"type": "number"}}}},
    }}  # fmt: skip
    datatypes = sorted(set(OIP_TYPES.values()))
    tensor = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
        "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": datatypes}, "data": {"type": "array"}}}  # fmt: skip
    infer = {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"}, "inputs": {"type": "array", "items": tensor},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}}  # fmt: skip
    name = _path_param("name", {"type": "string", "enum": names})
    version_param = _path_param("version", {"type": "string"})
    paths: dict[str, dict] = {
        "/v2/health/live": {"get": _op("Liveness: the process answers.", security=OPEN)},
        "/v2/health/ready": {"get": _op("Readiness: every champion loaded and the inference log's writer running (503 if not).", security=OPEN)},
        "/reports/{dataset}/{name}": {"get": _op(
            "A monitoring report, from a signed link.", security=OPEN,
            params=[_path_param("dataset", {"type": "string"}), _path_param("name", {"type": "string"}),
                    {"name": "sig", "in": "query", "required": False, "schema": {"type": "string"}}],
        )},  # fmt: skip
        "/v1/predict": {"post": _op("Score raw records with a dataset's champion (or its canary).", body=predict)},
        "/v1/feedback": {"post": _op("Ground-truth labels for earlier request ids.", body=feedback)},
        "/v1/models": {"get": _op("What is loaded.")},
        "/metrics": {"get": _op("Prometheus metrics.")},
        "/openapi.json": {"get": _op("This document.")},
        "/v2": {"get": _op("OIP server metadata.")},
        "/v2/models/{name}": {"get": _op("OIP model metadata.", params=[name])},
        "/v2/models/{name}/versions/{version}": {"get": _op("OIP model metadata of a version.", params=[name, version_param])},
        "/v2/models/{name}/ready": {"get": _op("OIP model readiness.", params=[name])},
        "/v2/models/{name}/versions/{version}/ready": {"get": _op("OIP readiness of a version.", params=[name, version_param])},
        "/v2/models/{name}/infer": {"post": _op("OIP inference: one 1-D tensor per input field.", body=infer, params=[name])},
        "/v2/models/{name}/versions/{version}/infer": {"post": _op("OIP inference by a version.", body=infer, params=[name, version_param])},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
