"""Scope: the per-request fast paths of the online server — batch-wide record validation (falls back to the record-by-record
check, which names every problem), request ids (prefix + counter, unique), and column-wise inference-log batches
(JSON text made at flush, same rows as the row-dict path) — on the tiny spec (New York, classification) and a
regression variant (Tokyo)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from aiflow.serving.inference_log import InferenceLog, LogBatch, log_rows, log_table
from aiflow.serving.online import RequestIds
from aiflow.serving.schema import RecordError, input_fields, validate_records
from aiflow.storage.lake import Lake
from tests.aiflow.serving.conftest import record, tiny_spec

SPECS = [tiny_spec(), tiny_spec("fares", "regression", "Asia/Tokyo")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_a_valid_batch_passes_as_copies_and_integral_floats_still_fit_integer_fields(spec):
    fields = input_fields(spec)
    records = [record(i % 9) for i in range(50)] + [record(3, seats=120.0, weather_temp=None)]
    out = validate_records(records, fields)
    assert out == records and all(a is not b for a, b in zip(out, records, strict=True))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        ({"seats": True}, "seats", "expected an integer, got bool"),
        ({"seats": 1.5}, "seats", "expected an integer, got float"),
        ({"distance": float("nan")}, "distance", "expected a finite number"),
        ({"distance": "12"}, "distance", "expected a number, got str"),
        ({"carrier": 7}, "carrier", "expected a string, got int"),
        ({"ts": "2013-13-01T00:00:00Z"}, "ts", "expected an ISO-8601 datetime"),
        ({"ts": None}, "ts", "null"),
    ],
)
def test_one_bad_value_in_a_batch_is_named_by_record_index_and_field(spec, bad, field, words):
    records = [record(i % 9) for i in range(40)]
    records[17] = record(17 % 9, **bad)
    with pytest.raises(RecordError) as err:
        validate_records(records, input_fields(spec))
    assert [(i, f) for i, f, _ in err.value.problems] == [(17, field)]
    assert words in err.value.problems[0][2]


def test_missing_fields_and_non_objects_are_all_reported():
    fields = input_fields(SPECS[0])
    gone = record(2)
    del gone["ts"]
    with pytest.raises(RecordError) as err:
        validate_records([record(1), gone, ["not", "an", "object"]], fields)
    assert [(i, f) for i, f, _ in err.value.problems] == [(1, "ts"), (2, "<record>")]


def test_request_ids_are_unique_across_requests_and_apps_and_keep_uuid4s_shape():
    a, b = RequestIds(), RequestIds()
    ids = a.take(100) + a.take(1) + a.take(57) + b.take(100)
    assert len(set(ids)) == len(ids) == 258
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_column_wise_batches_land_the_same_rows_as_row_dicts(tmp_path):
    lake = Lake(tmp_path / "lake")
    now = dt.datetime(2024, 3, 10, 23, 59, 30, tzinfo=dt.UTC)
    records = [record(1), record(2, note={"nested": [1, 2]}, when=dt.date(2024, 3, 10))]
    log = InferenceLog(lake, interval=60, batch_rows=10_000)
    log.add(log_rows(request_ids=["r0"], inputs=['{"x": 1}'], dataset="trips", version=1, variant="champion",
                     predictions=[1.0], probabilities=[0.9], latency_ms=1.0, now=now))  # fmt: skip
    log.add_batch(LogBatch(request_ids=["r1", "r2"], records=records, dataset="trips", version=2, variant="canary",
                           predictions=[0.0, 1.0], probabilities=[0.2, 0.7], latency_ms=3.5, time=now))  # fmt: skip
    log.add_batch(LogBatch(request_ids=["f1"], records=[record(4)], dataset="fares", version=5, variant="shadow",
                           predictions=[12.5], probabilities=[None], latency_ms=2.0, time=now))  # fmt: skip
    assert log.pending() == 4
    assert log.close() == 4 and log.pending() == 0
    trips = lake.scan(log_table("trips")).collect().sort("request_id")
    assert trips["request_id"].to_list() == ["r0", "r1", "r2"]
    assert [json.loads(t) for t in trips["input"].to_list()[1:]] == [json.loads(json.dumps(r, default=str)) for r in records]  # same values
    assert trips["model_version"].to_list() == [1, 2, 2] and trips["variant"].to_list() == ["champion", "canary", "canary"]
    assert trips["probability"].to_list() == [0.9, 0.2, 0.7] and trips["latency_ms"].to_list() == [1.0, 3.5, 3.5]
    assert trips["date"].to_list() == [now.date()] * 3 and trips["status"].to_list() == ["ok"] * 3
    fares = lake.scan(log_table("fares")).collect()
    assert fares.select("request_id", "prediction", "probability", "variant").rows() == [("f1", 12.5, None, "shadow")]
