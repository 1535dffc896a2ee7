"""The Open Inference Protocol (REST) shapes: model metadata, request tensors to records, records' answers to tensors.

Spec: kserve/open-inference-protocol ``specification/protocol/inference_rest.md``. One input per feature field,
1-D (``[n]``, or ``[n, 1]``), one element per record; outputs ``probability`` (FP64) and ``label`` (INT64) for
classification, ``prediction`` (FP64) for regression. Errors are :class:`HTTPError` 400 naming the input.
"""

from __future__ import annotations

from aiflow.serving.errors import HTTPError
from aiflow.serving.holder import Served


def model_metadata(model: Served) -> dict:
    """``GET /v2/models/{name}``: one input per feature column (shape ``[-1]``), the outputs by problem type."""
    outputs = (
        [{"name": "probability", "datatype": "FP64", "shape": [-1]}, {"name": "label", "datatype": "INT64", "shape": [-1]}]
        if model.classification else [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    )  # fmt: skip
    return {
        "name": model.dataset, "versions": [str(model.version)], "platform": f"aiflow-{model.model.family}",
        "inputs": [{"name": f.name, "datatype": f.datatype, "shape": [-1]} for f in model.fields], "outputs": outputs,
    }  # fmt: skip


def output_names(model: Served) -> list[str]:
    return ["probability", "label"] if model.classification else ["prediction"]


def requested_outputs(payload: object, model: Served | None = None) -> set[str]:
    """The output names an OIP request asks for (empty: all); raises HTTPError 400 when ``outputs`` is not a list of
    ``{"name": ...}`` objects, or (given the model) names an output the model does not have: answering 200 with no
    output would hide the mistake. Checked before scoring, so a refused request is neither scored nor logged."""
    requested = payload.get("outputs") if isinstance(payload, dict) else None
    if requested is None:
        return set()
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
        raise HTTPError(400, "'outputs' must be a list of {\"name\": ...} objects (the output names), e.g. [{\"name\": \"probability\"}]")
    wanted = {o["name"] for o in requested}
    if model is not None and (unknown := sorted(wanted - set(output_names(model)))):
        raise HTTPError(400, f"unknown output(s) {', '.join(map(repr, unknown))}; the model's outputs are {', '.join(output_names(model))}")
    return wanted


def infer_response(payload: dict, model: Served, preds, probs, ids: list[str]) -> dict:
    """The inference response: the requested outputs (all by default), the request ``id`` echoed, request ids as a parameter."""
    n = len(ids)
    if model.classification:
        outputs = [
            {"name": "probability", "datatype": "FP64", "shape": [n], "data": [float(p) for p in probs]},
            {"name": "label", "datatype": "INT64", "shape": [n], "data": [int(p) for p in preds]},
        ]
    else:
        outputs = [{"name": "prediction", "datatype": "FP64", "shape": [n], "data": [float(p) for p in preds]}]
    wanted = requested_outputs(payload)
    if wanted:
        outputs = [o for o in outputs if o["name"] in wanted]
    out = {"model_name": model.dataset, "model_version": str(model.version), "outputs": outputs, "parameters": {"request_ids": ",".join(ids)}}
    if payload.get("id") is not None:
        out["id"] = payload["id"]
    return out


def check_version(model: Served, version: str | None) -> None:
    if version is not None and version != str(model.version):
        raise HTTPError(400, f"model {model.dataset!r} version {version} is not served (serving version {model.version})")


def oip_records(payload: object, model: Served) -> list[dict]:
    """OIP ``inputs`` (one 1-D tensor per field) → records; raises HTTPError 400 naming the input."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise HTTPError(400, "the body must hold 'inputs': a list of {name, shape, datatype, data} tensors")
    fields = {f.name: f for f in model.fields}
    columns: dict[str, list] = {}
    for tensor in payload["inputs"]:
        name = tensor.get("name") if isinstance(tensor, dict) else None
        if not isinstance(name, str) or name not in fields:
            raise HTTPError(400, f"unknown input {name!r}; the model's inputs are {', '.join(fields)}")
        if name in columns:
            raise HTTPError(400, f"input {name!r} is given twice; give each input once")
        shape, data = tensor.get("shape"), tensor.get("data")
        if isinstance(shape, list) and not all(type(d) is int and d >= 0 for d in shape):
            raise HTTPError(400, f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
        if not isinstance(shape, list) or not isinstance(data, list) or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise HTTPError(400, f"input {name!r}: expected a 1-D tensor (shape [n] or [n, 1]) with a flat 'data' list")
        nested = [row for row in data if isinstance(row, list)]
        if nested and (len(nested) != len(data) or any(len(row) != 1 for row in nested)):
            raise HTTPError(400, f"input {name!r}: 'data' is flat, or rows of exactly one element each (shape [n, 1])")
        flat = [row[0] for row in data] if nested else data
        if len(flat) != shape[0]:
            raise HTTPError(400, f"input {name!r}: shape says {shape[0]} elements, data has {len(flat)}")
        if tensor.get("datatype") != fields[name].datatype:
            raise HTTPError(400, f"input {name!r}: datatype must be {fields[name].datatype}, got {tensor.get('datatype')!r}")
        columns[name] = flat
    sizes = {len(v) for v in columns.values()}
    if len(sizes) != 1:
        raise HTTPError(400, f"inputs have different lengths: {', '.join(f'{k}={len(v)}' for k, v in columns.items())}")
    n = sizes.pop()
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]
