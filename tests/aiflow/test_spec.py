"""Dataset spec: the bundled demo spec loads, and every invalid spec raises SpecError naming the field."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml

from aiflow.spec import DatasetSpec, SpecError, demo_spec_path, load_spec, parse_spec


@pytest.fixture(scope="module")
def demo_dict() -> dict:
    return yaml.safe_load(demo_spec_path().read_text())


def test_demo_spec_loads_with_its_declared_contents():
    spec = load_spec(demo_spec_path())
    assert isinstance(spec, DatasetSpec)
    assert spec.name == "flights"
    assert spec.key == ["carrier", "flight", "origin", "time_hour"]
    assert spec.event_time == "time_hour"
    assert spec.timezone == "America/New_York"
    assert spec.problem_type == "classification"
    assert (spec.target.name, spec.target.source, spec.target.threshold) == ("is_delayed", "arr_delay", 15)
    assert [t.name for t in spec.tables] == ["flights", "weather"]
    assert spec.side("weather").key == ["origin", "time_hour"]
    assert spec.joins[0].table == "weather" and spec.joins[0].by == ["origin"]
    assert spec.split.valid_from == dt.date(2013, 10, 1)


def test_demo_spec_schema_and_required_columns():
    spec = load_spec(demo_spec_path())
    schema = spec.polars_schema()
    assert schema["time_hour"] == pl.Datetime("us", "UTC")
    assert schema["distance"] == pl.Float64
    assert schema["carrier"] == pl.String
    assert "arr_delay" not in spec.required_columns  # declared required: false
    assert "carrier" in spec.required_columns


def test_parse_spec_accepts_the_same_dict_as_the_file(demo_dict):
    assert parse_spec(copy.deepcopy(demo_dict)) == load_spec(demo_spec_path())


def _set(path: str, value) -> Callable[[dict], None]:
    """A mutation setting ``a.b[0].c`` to ``value`` (or deleting it when ``value`` is ``_DROP``)."""

    def mutate(data: dict) -> None:
        *parents, last = _parts(path)
        node = data
        for p in parents:
            node = node[p]
        if value is _DROP:
            del node[last]
        else:
            node[last] = value

    return mutate


def _parts(path: str) -> list:
    out: list = []
    for piece in path.split("."):
        name, _, index = piece.partition("[")
        out.append(name)
        if index:
            out.append(int(index.rstrip("]")))
    return out


_DROP = object()

INVALID = [
    pytest.param(_set("features.categorical[0]", "gate"), ["features.categorical[0]", "'gate'", "not declared"], id="feature-undeclared"),
    pytest.param(_set("features.numeric[1]", "dep_delay"), ["features.numeric[1]", "'dep_delay'", "leakage"], id="feature-known-after-event"),
    pytest.param(_set("features.numeric[0]", "arr_delay"), ["features.numeric[0]", "'arr_delay'", "leakage"], id="feature-is-target-source"),
    pytest.param(_set("timezone", "Mars/Olympus_Mons"), ["  - timezone: unknown timezone 'Mars/Olympus_Mons'"], id="unknown-timezone"),
    pytest.param(_set("joins[0].table", "radar"), ["joins[0].table", "no side table named 'radar'"], id="join-missing-side-table"),
    pytest.param(_set("joins[0].by", ["dest"]), ["joins[0].by", "'dest'"], id="join-by-not-in-side"),
    pytest.param(_set("joins[0].columns", ["snow"]), ["joins[0].columns", "'snow'"], id="join-column-not-in-side"),
    pytest.param(_set("joins[0].tolerance", "soon"), ["joins[0].tolerance", "'soon'"], id="bad-tolerance"),
    pytest.param(_set("target.threshold", _DROP), ["  - target: threshold is required"], id="threshold-without-threshold"),
    pytest.param(_set("target.source", "gate_delay"), ["target.source", "'gate_delay'"], id="target-source-undeclared"),
    pytest.param(_set("target.name", "carrier"), ["target.name", "'carrier'"], id="target-name-clash"),
    pytest.param(_set("problem_type", "regression"), ["target.kind", "classification"], id="threshold-needs-classification"),
    pytest.param(_set("problem_type", "clustering"), ["  - problem_type: Input should be"], id="unknown-problem-type"),
    pytest.param(_set("key[1]", "gate"), ["key[1]", "'gate'"], id="key-undeclared"),
    pytest.param(_set("key", []), ["  - key: List should have at least 1 item"], id="key-empty"),
    pytest.param(_set("event_time", "carrier"), ["event_time", "datetime or date"], id="event-time-not-a-time"),
    pytest.param(_set("columns.distance.type", "decimal"), ["  - columns.distance.type: Input should be"], id="unknown-column-type"),
    pytest.param(_set("columns._secret", {"type": "string"}), ["columns._secret", "reserved"], id="reserved-column-name"),
    pytest.param(_set("colour", "blue"), ["  - colour: Extra inputs are not permitted"], id="unknown-field"),
    pytest.param(_set("quality.not_null[0]", "gate"), ["quality.not_null[0]", "'gate'"], id="not-null-undeclared"),
    pytest.param(_set("quality.ranges.distance", {"min": 10, "max": 1}), ["quality.ranges.distance", "greater than max"], id="range-reversed"),
    pytest.param(_set("known_after_event[0]", "gate"), ["known_after_event[0]", "'gate'"], id="known-after-event-undeclared"),
    pytest.param(_set("slices[1]", "gate"), ["slices[1]", "'gate'"], id="slice-undeclared"),
    pytest.param(_set("split.test_from", "2013-09-01"), ["  - split: test_from must be after valid_from"], id="split-reversed"),
    pytest.param(_set("side_tables[0].name", "flights"), ["side_tables", "main table's name"], id="side-table-named-like-main"),
    pytest.param(_set("side_tables[0].key[0]", "station"), ["side_tables[0]", "key[0]", "'station'"], id="side-table-key-undeclared"),
    pytest.param(_set("columns.time_hour.type", "date"), ["features.calendar", "'hour' needs a datetime event_time"], id="hour-of-a-date"),
    pytest.param(_set("name", "Flights!"), ["  - name: String should match pattern"], id="bad-table-name"),
]


@pytest.mark.parametrize(("mutate", "expected"), INVALID)
def test_invalid_spec_raises_spec_error_naming_the_field(demo_dict, mutate, expected):
    data = copy.deepcopy(demo_dict)
    mutate(data)
    with pytest.raises(SpecError) as exc:
        parse_spec(data, "my.yaml")
    message = str(exc.value)
    assert message.startswith("invalid dataset spec my.yaml:")
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_every_problem_is_reported_at_once(demo_dict):
    data = copy.deepcopy(demo_dict)
    data["features"]["categorical"][0] = "gate"
    data["slices"][0] = "terminal"
    with pytest.raises(SpecError) as exc:
        parse_spec(data)
    assert "features.categorical[0]" in str(exc.value)
    assert "slices[0]" in str(exc.value)


def test_identity_target_cannot_label_nulls(demo_dict):
    data = copy.deepcopy(demo_dict)
    data["problem_type"] = "regression"
    data["target"] = {"name": "delay", "source": "arr_delay", "kind": "identity", "when_null": "positive"}
    with pytest.raises(SpecError, match=r"target: when_null must be 'quarantine'"):
        parse_spec(data)
    data["target"]["when_null"] = "quarantine"
    assert parse_spec(data).target.kind == "identity"


def test_load_spec_names_the_file_in_validation_errors(tmp_path: Path, demo_dict):
    data = copy.deepcopy(demo_dict)
    data["timezone"] = "Nowhere/Special"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert str(path) in str(exc.value)
    assert "timezone: unknown timezone 'Nowhere/Special'" in str(exc.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("name: [unclosed\n", "is not valid YAML", id="bad-yaml"),
        pytest.param("name: a\n  bad: indent\n", "is not valid YAML", id="bad-indent"),
        pytest.param("- just\n- a list\n", "must be a YAML mapping", id="list-at-top"),
        pytest.param("", "must be a YAML mapping", id="empty-file"),
    ],
)
def test_load_spec_rejects_unreadable_yaml(tmp_path: Path, content: str, expected: str):
    path = tmp_path / "spec.yaml"
    path.write_text(content)
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert expected in str(exc.value)
    assert str(path) in str(exc.value)


def test_load_spec_missing_file(tmp_path: Path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(SpecError, match="does not exist") as exc:
        load_spec(path)
    assert str(path) in str(exc.value)


def test_spec_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_spec({"name": "x"})
