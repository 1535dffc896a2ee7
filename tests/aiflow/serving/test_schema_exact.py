"""Scope: the exact contract of ``aiflow.serving.schema`` (request record validation), written to kill the mutants the
request-path tests let live (issue 22): every spec type's exact 4xx message naming the field, valid values of every
type on the record-by-record path, the date/datetime range exactly on its bounds and one past them (in UTC whatever the
server's zone), which columns the batch-wide fast path accepts on its own, the message of a long problem list, and the
field list a spec gives (duplicates once, side values optional floats)."""

from __future__ import annotations

import copy
import time

import pytest

from aiflow.serving.schema import Field, RecordError, _column_fits, input_fields, validate_records
from aiflow.spec import parse_spec
from tests.aiflow.tiny import TINY

#: One field of every family of spec types, the optional ones and the required ones.
FLAG, COUNT, RATIO, DAY, AT, NAME = (Field("flag", "bool", False), Field("count", "int64", True), Field("ratio", "float32", False),
                                     Field("day", "date", False), Field("at", "datetime", True), Field("name", "string", True))  # fmt: skip
FIELDS = [FLAG, COUNT, RATIO, DAY, AT, NAME]
GOOD = {"flag": True, "count": 3, "ratio": 0.5, "day": "2013-01-01", "at": "2013-01-01T10:00:00Z", "name": "AA"}
RANGE = "between 1678-01-01 and 2261-12-31 (the range every reader of the log takes)"


def problems(records, fields=FIELDS) -> list[tuple[int, str, str]]:
    with pytest.raises(RecordError) as err:
        validate_records(records, fields)
    return err.value.problems


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("flag", 1, "expected true or false, got int 1"),
        ("flag", "true", "expected true or false, got str 'true'"),
        ("count", "3", "expected an integer, got str '3'"),
        ("count", 2.5, "expected an integer, got float 2.5"),
        ("count", True, "expected an integer, got bool True"),
        ("ratio", True, "expected a number, got bool True"),
        ("ratio", "0.5", "expected a number, got str '0.5'"),
        ("ratio", float("inf"), "expected a finite number, got inf"),
        ("day", 20130101, "expected an ISO-8601 date string, got int 20130101"),
        ("day", "2013-01-01T10:00:00", "expected an ISO-8601 date (e.g. 2013-01-01), got '2013-01-01T10:00:00'"),
        ("day", "2013-02-30", "expected an ISO-8601 date (e.g. 2013-01-01), got '2013-02-30'"),
        ("at", 1357034400, "expected an ISO-8601 datetime string, got int 1357034400"),
        ("at", "2013-02-30T00:00:00Z", "expected an ISO-8601 datetime (e.g. 2013-01-01T10:00:00Z), got '2013-02-30T00:00:00Z'"),
        ("name", 7, "expected a string, got int 7"),
        ("name", None, "null"),
        ("at", None, "null"),
    ],
)
def test_each_type_refuses_with_its_exact_message_naming_the_field(field, value, message):
    assert problems([GOOD, GOOD | {field: value}]) == [(1, field, message)]


def test_a_field_of_a_type_the_validator_does_not_know_is_refused_not_waved_through():
    assert problems([{"id": "x"}], [Field("id", "uuid", True)]) == [(0, "id", "unsupported column type uuid")]


@pytest.mark.parametrize(
    "good",
    [
        {"flag": False, "count": 4.0, "ratio": 3, "day": "1678-01-01", "at": "1678-01-01T00:00:00Z"},
        {"flag": None, "count": -(2**40), "ratio": -1.5, "day": "2261-12-31", "at": "2261-12-31T23:59:59+00:00"},
        {"day": None, "ratio": None, "at": "2261-12-31T20:00:00-03:00"},  # 23:00 UTC: still in range
        {"at": "1678-01-01T08:00:00+08:00"},  # midnight UTC: the first instant in range
    ],
)
def test_valid_values_of_every_type_pass_on_the_record_by_record_path_too(good):
    """A record with one problem elsewhere goes record by record: its valid fields are not reported."""
    assert problems([GOOD | good | {"name": 0}]) == [(0, "name", "expected a string, got int 0")]
    assert validate_records([GOOD | good], FIELDS) == [GOOD | good]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("day", "1677-12-31"), ("day", "2262-01-01"), ("at", "1677-12-31T23:59:59Z"), ("at", "2262-01-01T00:00:00Z"),
        ("at", "2261-12-31T23:00:00-12:00"),  # 2262-01-01 11:00 UTC: out, although its own date is the last day
        ("at", "1678-01-01T01:00:00+02:00"),  # 1677-12-31 23:00 UTC
    ],
)  # fmt: skip
def test_dates_and_times_one_past_the_range_are_refused_with_the_range_named(field, value):
    kind = "date" if field == "day" else "datetime"
    assert problems([GOOD | {field: value}]) == [(0, field, f"expected a {kind} {RANGE}, got {value!r}")]


@pytest.fixture
def far_east_zone(monkeypatch):
    """The process's local time zone at UTC+14 (Kiritimati), restored after the test."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_range_is_checked_in_utc_not_in_the_servers_zone(far_east_zone):
    late = "2261-12-31T20:00:00+00:00"  # 2262-01-01 10:00 at UTC+14
    assert validate_records([GOOD | {"at": late}], FIELDS) == [GOOD | {"at": late}]
    assert problems([GOOD | {"at": late, "name": 1}]) == [(0, "name", "expected a string, got int 1")]


def test_missing_and_null_are_told_apart_and_every_record_after_a_non_object_is_still_checked():
    gone = {k: v for k, v in GOOD.items() if k not in ("count", "day")}
    assert problems([[1, 2], GOOD | {"at": None}, gone, "text", GOOD | {"flag": 0}]) == [
        (0, "<record>", "expected a JSON object, got list"),
        (1, "at", "null"),
        (2, "count", "missing (required by the model's input schema)"),
        (3, "<record>", "expected a JSON object, got str"),
        (4, "flag", "expected true or false, got int 0"),
    ]


@pytest.mark.parametrize("records", [[], "abc", 7, None])
def test_a_body_that_is_not_a_list_of_objects_is_refused(records):
    assert problems(records) == [(0, "records", "expected a non-empty list of JSON objects (or one object)")]


def test_a_list_holding_no_object_is_named_per_record():
    assert problems([[1, 2]]) == [(0, "<record>", "expected a JSON object, got list")]


def test_one_object_is_a_batch_of_one_and_a_valid_batch_comes_back_as_copies():
    assert validate_records(GOOD, FIELDS) == [GOOD]
    batch = [GOOD, GOOD | {"flag": None, "ratio": 2, "extra": {"kept": [1]}}]
    out = validate_records(batch, FIELDS)
    assert out == batch and all(type(o) is dict and o is not r for o, r in zip(out, batch, strict=True))


def test_optional_fields_alone_are_still_checked():
    """Without a required field, the batch-wide check must still read each field's own values."""
    optional = [FLAG, RATIO, DAY]
    assert problems([{"flag": True}, {"ratio": "x"}], optional) == [(1, "ratio", "expected a number, got str 'x'")]
    assert problems([{"day": "2013-13-01"}], optional) == [(0, "day", "expected an ISO-8601 date (e.g. 2013-01-01), got '2013-13-01'")]


@pytest.mark.parametrize(
    ("values", "field", "fits"),
    [
        (["AA", "UA"], NAME, True), (["AA", None], NAME, False), ([True, None], FLAG, True), ([None, None], FLAG, True),
        ([1, 2**70], COUNT, True), ([1, 2.0], COUNT, False), ([1, True], COUNT, False), ([1, 2.5, None], RATIO, True),
        ([1.0, float("nan")], RATIO, False), ([float("-inf")], RATIO, False), (["2013-01-01", None, "2013-01-01"], DAY, True),
        (["2013-01-01", "2013-02-30"], DAY, False), (["2013-01-01T10:00:00Z"], AT, True), (["1677-12-31T23:59:59Z"], AT, False),
        ([1], Field("id", "uuid", False), False),
    ],
)  # fmt: skip
def test_the_batch_wide_check_accepts_exactly_the_columns_that_surely_fit(values, field, fits):
    """True: the whole column fits without a record-by-record look; False: the slow path decides (and names problems)."""
    assert _column_fits(values, field) is fits


def test_the_error_message_shows_the_first_twenty_problems_and_counts_the_rest():
    twenty, more = [{}] * 20, [{}] * 21
    err = RecordError([(i, "name", "null") for i in range(2)])
    assert str(err) == "record 0: field 'name': null; record 1: field 'name': null"
    assert err.details() == [{"record": 0, "field": "name", "problem": "null"}, {"record": 1, "field": "name", "problem": "null"}]
    with pytest.raises(RecordError) as at_twenty:
        validate_records(twenty, [NAME])
    assert str(at_twenty.value).endswith("record 19: field 'name': missing (required by the model's input schema)")
    with pytest.raises(RecordError) as past:
        validate_records(more, [NAME])
    shown = str(past.value)
    assert shown.count("record ") == 20 and "record 20:" not in shown
    assert shown.endswith("record 19: field 'name': missing (required by the model's input schema) (and 1 more)")
    assert len(past.value.problems) == len(past.value.details()) == 21


def _spec(**features):
    data = copy.deepcopy(TINY)
    data["features"] |= features
    return parse_spec(data, "tiny variant")


#: Parsed at import, on purpose: parsing runs Polars (a join's tolerance), and ``test_request_path.py`` (in the same
#: mutation selection) parses at import too, so a forked mutant child must run no Polars itself or it hangs (see
#: scripts/mutation); nothing in this module runs Polars inside a test.
PLAIN = _spec()
#: a column both categorical and numeric, and the event time used as a feature
OVERLAPPING = _spec(categorical=["carrier", "seats", "ts"], numeric=["seats", "distance"])


def test_the_fields_of_a_spec_are_its_features_once_then_side_values_then_the_event_time():
    assert input_fields(PLAIN) == [
        Field("carrier", "string", True), Field("origin", "string", True), Field("distance", "float64", True),
        Field("seats", "int32", False), Field("weather_temp", "float64", False), Field("ts", "datetime", True),
    ]  # fmt: skip
    # a column both categorical and numeric is one field; the event time used as a feature is not repeated at the end
    assert input_fields(OVERLAPPING) == [
        Field("carrier", "string", True), Field("seats", "int32", False), Field("ts", "datetime", True),
        Field("distance", "float64", True), Field("weather_temp", "float64", False),
    ]  # fmt: skip
