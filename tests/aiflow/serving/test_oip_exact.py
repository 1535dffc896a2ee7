"""Scope: the exact contract of ``aiflow.serving.oip`` (Open Inference Protocol parsing and answers), called in process on
a served model of each problem type (issue 22: the server tests reach it only through a subprocess, which mutation testing
does not see): model metadata, the requested outputs, the inference response, the version check, and every 400 of
``inputs`` → records with its exact message naming the input, shapes exactly ``[n]`` / ``[n, 1]`` and one past them.
The model is never asked to predict here (its predictor raises)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from aiflow.data.encoding import ModelInputs
from aiflow.models.bundle import LoadedModel
from aiflow.serving.errors import HTTPError
from aiflow.serving.holder import Served
from aiflow.serving.oip import check_version, infer_response, model_metadata, oip_records, requested_outputs
from aiflow.serving.schema import Field

FIELDS = [Field("carrier", "string", True), Field("distance", "float64", True), Field("seats", "int32", False),
          Field("ratio", "float32", False), Field("flag", "bool", False), Field("ts", "datetime", True)]  # fmt: skip
NAMES = "carrier, distance, seats, ratio, flag, ts"
OUTPUTS_ERROR = '\'outputs\' must be a list of {"name": ...} objects (the output names), e.g. [{"name": "probability"}]'
INPUTS_ERROR = "the body must hold 'inputs': a list of {name, shape, datatype, data} tensors"


def _never(cat, num):
    raise AssertionError("OIP parsing never scores")


def served(problem_type: str = "classification", version: int = 3, family: str = "pytorch") -> Served:
    model = LoadedModel(uri=f"models/trips/{version}", family=family, problem_type=problem_type, model_inputs=ModelInputs([], [], []),
                        predictor=_never, preprocessing={}, spec={}, manifest={})  # fmt: skip
    return Served("trips", "champion", version, model, FIELDS, dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


def refused(fn, *args) -> str:
    with pytest.raises(HTTPError) as err:
        fn(*args)
    assert err.value.status == 400 and err.value.extra == {}
    return err.value.message


def test_model_metadata_names_every_input_with_its_datatype_and_the_outputs_of_its_problem_type():
    inputs = [{"name": "carrier", "datatype": "BYTES", "shape": [-1]}, {"name": "distance", "datatype": "FP64", "shape": [-1]},
              {"name": "seats", "datatype": "INT64", "shape": [-1]}, {"name": "ratio", "datatype": "FP32", "shape": [-1]},
              {"name": "flag", "datatype": "BOOL", "shape": [-1]}, {"name": "ts", "datatype": "BYTES", "shape": [-1]}]  # fmt: skip
    assert model_metadata(served()) == {
        "name": "trips", "versions": ["3"], "platform": "aiflow-pytorch", "inputs": inputs,
        "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}, {"name": "label", "datatype": "INT64", "shape": [-1]}],
    }  # fmt: skip
    assert model_metadata(served("regression", 12, "sklearn")) == {
        "name": "trips", "versions": ["12"], "platform": "aiflow-sklearn", "inputs": inputs,
        "outputs": [{"name": "prediction", "datatype": "FP64", "shape": [-1]}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "wanted"),
    [(None, set()), ([1], set()), ({}, set()), ({"outputs": None}, set()), ({"outputs": []}, set()),
     ({"outputs": [{"name": "label"}]}, {"label"}), ({"outputs": [{"name": "label"}, {"name": "probability", "parameters": {}}]}, {"label", "probability"})],
)  # fmt: skip
def test_requested_outputs_are_the_names_asked_for_or_none_for_all(payload, wanted):
    assert requested_outputs(payload) == wanted


@pytest.mark.parametrize("outputs", [3, True, "label", {"name": "label"}, ["label"], [{"name": 1}], [{}], [{"name": "label"}, None]])
def test_outputs_of_another_shape_are_a_400_with_an_example(outputs):
    assert refused(requested_outputs, {"outputs": outputs}) == OUTPUTS_ERROR


def test_the_classification_response_holds_both_outputs_the_request_id_and_the_request_ids():
    payload = {"id": "req-7", "inputs": []}
    out = infer_response(payload, served(), np.array([1, 0]), np.array([0.75, 0.25], dtype=np.float32), ["a1", "b2"])
    assert out == {
        "model_name": "trips", "model_version": "3", "id": "req-7", "parameters": {"request_ids": "a1,b2"},
        "outputs": [{"name": "probability", "datatype": "FP64", "shape": [2], "data": [0.75, 0.25]},
                    {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]}],
    }  # fmt: skip
    assert [type(v) for o in out["outputs"] for v in o["data"]] == [float, float, int, int]


def test_the_regression_response_and_the_outputs_asked_for():
    out = infer_response({"outputs": [{"name": "prediction"}]}, served("regression", 5), np.array([12.5]), None, ["r"])
    assert out == {"model_name": "trips", "model_version": "5", "parameters": {"request_ids": "r"},
                   "outputs": [{"name": "prediction", "datatype": "FP64", "shape": [1], "data": [12.5]}]}  # fmt: skip
    only_label = infer_response({"outputs": [{"name": "label"}], "id": 0}, served(), np.array([1]), np.array([0.9]), ["x"])
    assert only_label["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]
    assert only_label["id"] == 0  # an id that is falsy is still echoed
    assert "id" not in infer_response({"id": None}, served(), np.array([0]), np.array([0.1]), ["y"])


def test_a_version_other_than_the_one_served_is_a_400_naming_both():
    check_version(served(), None)
    check_version(served(), "3")
    for other in ("4", "03", "3.0"):
        assert refused(check_version, served(), other) == f"model 'trips' version {other} is not served (serving version 3)"


def tensor(name: str, data: list, datatype: str | None = None, shape: list | None = None) -> dict:
    types = {f.name: f.datatype for f in FIELDS}
    return {"name": name, "shape": [len(data)] if shape is None else shape, "datatype": datatype or types.get(name), "data": data}


def test_inputs_become_records_in_order_flat_or_as_rows_of_one():
    payload = {"inputs": [tensor("carrier", ["AA", "UA"]), tensor("distance", [[250.0], [341.5]], shape=[2, 1]),
                          tensor("seats", [90, None], shape=[2, 1]), tensor("ts", [["2013-01-01T05:30:00Z"], ["2013-01-02T06:30:00Z"]])]}  # fmt: skip
    assert oip_records(payload, served()) == [
        {"carrier": "AA", "distance": 250.0, "seats": 90, "ts": "2013-01-01T05:30:00Z"},
        {"carrier": "UA", "distance": 341.5, "seats": None, "ts": "2013-01-02T06:30:00Z"},
    ]
    assert oip_records({"inputs": [tensor("flag", [True])]}, served()) == [{"flag": True}]


@pytest.mark.parametrize("payload", [None, [], "inputs", {}, {"inputs": None}, {"inputs": {"name": "carrier"}}, {"inputs": []}])
def test_a_body_without_a_list_of_tensors_is_a_400(payload):
    assert refused(oip_records, payload, served()) == INPUTS_ERROR


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"name": "weather"}, f"unknown input 'weather'; the model's inputs are {NAMES}"),
        ({"name": ["carrier"]}, f"unknown input ['carrier']; the model's inputs are {NAMES}"),
        ({"name": None}, f"unknown input None; the model's inputs are {NAMES}"),
    ],
)
def test_an_unknown_input_is_named_with_the_models_inputs(bad, message):
    assert refused(oip_records, {"inputs": [tensor("carrier", ["AA"]), tensor("carrier", ["AA"]) | bad]}, served()) == message
    assert refused(oip_records, {"inputs": ["carrier"]}, served()) == f"unknown input None; the model's inputs are {NAMES}"


ONE_D = "input 'distance': expected a 1-D tensor (shape [n] or [n, 1]) with a flat 'data' list"
ROWS = "input 'distance': 'data' is flat, or rows of exactly one element each (shape [n, 1])"


@pytest.mark.parametrize(
    ("shape", "data", "message"),
    [
        ([], [1.0], ONE_D), ([1, 1, 1], [1.0], ONE_D), ([1, 2], [1.0], ONE_D), ([1, 0], [1.0], ONE_D), (2, [1.0, 2.0], ONE_D),
        ([2], (1.0, 2.0), ONE_D), ([2], None, ONE_D), ([2], [[1.0], 2.0], ROWS), ([1], [[1.0, 2.0]], ROWS), ([1], [[]], ROWS),
        ([3], [1.0, 2.0], "input 'distance': shape says 3 elements, data has 2"),
        ([1], [1.0, 2.0], "input 'distance': shape says 1 elements, data has 2"),
        ([2, 1], [[1.0], [2.0], [3.0]], "input 'distance': shape says 2 elements, data has 3"),
    ],
)  # fmt: skip
def test_a_tensor_of_another_shape_is_a_400_naming_the_input(shape, data, message):
    bad = {"name": "distance", "shape": shape, "datatype": "FP64", "data": data}
    assert refused(oip_records, {"inputs": [bad]}, served()) == message


@pytest.mark.parametrize(
    ("shape", "data"), [([2], [1.0, 2.0]), ([2, 1], [1.0, 2.0]), ([2], [[1.0], [2.0]]), ([2, 1], [[1.0], [2.0]]), ([0], [])]
)
def test_shapes_n_and_n_by_1_with_flat_data_or_rows_of_one_are_accepted(shape, data):
    records = oip_records({"inputs": [{"name": "distance", "shape": shape, "datatype": "FP64", "data": data}]}, served())
    assert records == [{"distance": v} for v in (1.0, 2.0)][: len(data)]


@pytest.mark.parametrize(
    ("name", "datatype"), [("distance", "FP32"), ("seats", "INT32"), ("carrier", "STRING"), ("flag", None), ("ts", "bytes")]
)
def test_a_datatype_other_than_the_fields_is_a_400_naming_the_one_expected(name, datatype):
    expected = {f.name: f.datatype for f in FIELDS}[name]
    payload = {"inputs": [tensor(name, ["x"], datatype) | ({} if datatype else {"datatype": None})]}
    assert refused(oip_records, payload, served()) == f"input {name!r}: datatype must be {expected}, got {datatype!r}"


def test_inputs_of_different_lengths_are_a_400_naming_each_length():
    payload = {"inputs": [tensor("carrier", ["AA", "UA"]), tensor("distance", [1.0]), tensor("ts", ["a", "b"])]}
    assert refused(oip_records, payload, served()) == "inputs have different lengths: carrier=2, distance=1, ts=2"


def test_an_input_given_twice_is_a_400_naming_it_not_the_last_one_kept():
    """Before: the second tensor silently replaced the first, even of another length."""
    body = {"inputs": [tensor("distance", [1.0, 2.0]), tensor("distance", [3.0])]}
    assert refused(oip_records, body, served()) == "input 'distance' is given twice; give each input once"


@pytest.mark.parametrize("shape", [["2"], [2.0], [True, 1], [-1], [None], [2, "1"]])
def test_a_shape_of_anything_but_non_negative_integers_is_a_400_that_says_so(shape):
    """Before: ``["2"]`` got "shape says 2 elements, data has 2", a message that contradicts itself."""
    got = refused(oip_records, {"inputs": [tensor("distance", [1.0, 2.0], shape=shape)]}, served())
    assert got == f"input 'distance': 'shape' must be a list of non-negative integers, got {shape!r}"


@pytest.mark.parametrize(
    ("problem", "outputs", "message"),
    [("classification", [{"name": "score"}], "unknown output(s) 'score'; the model's outputs are probability, label"),
     ("classification", [{"name": "label"}, {"name": "prediction"}, {"name": "a"}],
      "unknown output(s) 'a', 'prediction'; the model's outputs are probability, label"),
     ("regression", [{"name": "probability"}], "unknown output(s) 'probability'; the model's outputs are prediction")],
)  # fmt: skip
def test_outputs_the_model_does_not_have_are_a_400_naming_them_and_the_real_ones(problem, outputs, message):
    """Before: answered 200 with ``"outputs": []``, scored and logged."""
    assert refused(requested_outputs, {"outputs": outputs}, served(problem)) == message
    assert requested_outputs({"outputs": outputs[:1]}) == {outputs[0]["name"]}  # without the model: the shape only
    good = "label" if problem == "classification" else "prediction"
    assert requested_outputs({"outputs": [{"name": good}]}, served(problem)) == {good}
