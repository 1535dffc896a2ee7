"""Dataset spec: the bundled demo spec loads, and every invalid spec raises SpecError naming the field."""

from __future__ import annotations

import copy
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
    assert (spec.split.kind, spec.split.train_days, spec.split.valid_days, spec.split.test_days) == ("relative", 62, 14, 14)
    assert spec.monitoring.window == "weekly" and spec.monitoring.retrain.signals == ["drift", "estimated", "realized", "age"]


def test_demo_spec_schema_and_required_columns():
    spec = load_spec(demo_spec_path())
    schema = spec.polars_schema()
    assert schema["time_hour"] == pl.Datetime("us", "UTC")
    assert schema["distance"] == pl.Float64
    assert schema["carrier"] == pl.String
    assert "dep_delay" not in spec.required_columns  # declared required: false
    assert "carrier" in spec.required_columns
    # the target's source is required whatever the spec says: when_null is for null values, not a missing column
    assert spec.columns["arr_delay"].required is False
    assert "arr_delay" in spec.required_columns


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
    pytest.param(_set("key", []), ["  - key: list the columns", "row_identity"], id="key-empty"),
    pytest.param(_set("key", _DROP), ["  - key: list the columns", "row_identity"], id="key-missing"),
    pytest.param(_set("quality.ranges.carrier", {"min": 0}), ["quality.ranges.carrier", "is string", "numeric"], id="range-on-text"),
    pytest.param(_set("quality.max_null_rate.dep_delay", 0.1), ["quality.max_null_rate.dep_delay", "not carried into the features"],
                 id="null-rate-on-dropped-column"),
    pytest.param(_set("quality.max_null_rate.origin", 1.5), ["quality.max_null_rate.origin", "between 0 and 1"], id="null-rate-over-one"),
    pytest.param(_set("target.source", "carrier"), ["target.source: column 'carrier' is string; a threshold target needs a numeric or bool column"],
                 id="threshold-on-text"),
    pytest.param(_set("features.numeric[0]", "carrier"), ["features.numeric[0]", "'carrier' is string"], id="numeric-feature-text"),
    pytest.param(_set("columns.event_date", {"type": "date"}), ["columns.event_date", "reserved", "source: 'event_date'"], id="reserved-event-date"),
    pytest.param(_set("columns.dest.source", "origin"), ["columns.dest.source: the file column 'origin' is already read as column 'origin'"], id="source-read-twice"),
    pytest.param(_set("row_identity", "content_hash"), ["  - key: a table with row_identity"], id="row-identity-with-a-key"),
    pytest.param(_set("row_identity", "row_number"), ["  - row_identity: Input should be 'source_row' or 'content_hash'"], id="unknown-row-identity"),
    pytest.param(_set("event_time", "carrier"), ["event_time", "datetime or date"], id="event-time-not-a-time"),
    pytest.param(_set("columns.distance.type", "decimal"), ["  - columns.distance.type: Input should be"], id="unknown-column-type"),
    pytest.param(_set("columns._secret", {"type": "string"}), ["columns._secret", "reserved"], id="reserved-column-name"),
    pytest.param(_set("colour", "blue"), ["  - colour: Extra inputs are not permitted"], id="unknown-field"),
    pytest.param(_set("quality.not_null[0]", "gate"), ["quality.not_null[0]", "'gate'"], id="not-null-undeclared"),
    pytest.param(_set("quality.ranges.distance", {"min": 10, "max": 1}), ["quality.ranges.distance", "greater than max"], id="range-reversed"),
    pytest.param(_set("known_after_event[0]", "gate"), ["known_after_event[0]", "'gate'"], id="known-after-event-undeclared"),
    pytest.param(_set("slices[1]", "gate"), ["slices[1]", "'gate'"], id="slice-undeclared"),
    pytest.param(
        _set("split", {"kind": "fixed", "valid_from": "2013-10-01", "test_from": "2013-09-01"}),
        ["  - split: test_from must be after valid_from"],
        id="split-reversed",
    ),
    pytest.param(_set("split.valid_from", "2013-10-01"), ["  - split: valid_from: dates belong to kind 'fixed'"], id="split-relative-with-dates"),
    pytest.param(
        _set("monitoring", {"drift": {"stattests": {"arr_delay": "psi"}}}), ["monitoring.drift.stattests.arr_delay", "not a model feature"],
        id="stattest-on-a-non-feature",
    ),
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


def test_field_errors_and_rule_problems_are_reported_together(demo_dict):
    """A wrong field type stops pydantic before the cross-field checks: they are run anyway, in the same error."""
    data = copy.deepcopy(demo_dict)
    data["quality"]["max_null_rate"]["dep_delay"] = 0.05  # dep_delay is dropped before the features table
    data["timezone"] = "Nowhere/Special"  # a field error, unrelated
    data["columns"]["distance"]["type"] = "decimal"  # another field error
    with pytest.raises(SpecError) as exc:
        parse_spec(data, "three.yaml")
    lines = str(exc.value).splitlines()
    assert lines[0] == "invalid dataset spec three.yaml:"
    assert any(line.startswith("  - quality.max_null_rate.dep_delay: column 'dep_delay' is not carried") for line in lines)
    assert "  - timezone: unknown timezone 'Nowhere/Special'" in lines
    assert any(line.startswith("  - columns.distance.type: Input should be") for line in lines)
    # an invalid type is reported once, not again by every rule that uses the column
    assert sum("distance" in line for line in lines) == 1
    assert len(lines) == len(set(lines))


def test_every_cross_field_problem_on_its_own_line_without_a_root_marker(demo_dict):
    data = copy.deepcopy(demo_dict)
    data["key"][0] = "gate"
    data["features"]["numeric"][0] = "terminal"
    data["side_tables"][0]["key"][0] = "station"
    with pytest.raises(SpecError) as exc:
        parse_spec(data, "x.yaml")
    lines = str(exc.value).splitlines()
    assert "  - key[0]: column 'gate' is not declared in columns" in lines
    assert "  - features.numeric[0]: column 'terminal' is not declared in columns" in lines
    assert "  - side_tables[0]: key[0]: column 'station' is not declared in columns" in lines
    assert not any("(root)" in line for line in lines)


def test_null_rate_limit_on_a_slice_or_key_column_is_accepted(demo_dict):
    data = copy.deepcopy(demo_dict)
    data["quality"]["max_null_rate"].update({"origin": 0.0, "flight": 0.0})
    assert parse_spec(data).quality.max_null_rate["origin"] == 0.0


def test_target_source_required_on_another_spec(tiny_dict):
    spec = parse_spec(tiny_dict)
    assert tiny_dict["columns"]["delay"]["required"] is False
    assert "delay" in spec.required_columns
    assert "seats" not in spec.required_columns


def test_source_mapping_renames(tiny_dict):
    tiny_dict["columns"]["event_day"] = {"type": "date", "required": False, "source": "event_date"}
    tiny_dict["columns"]["speed_mph"] = {"type": "float64", "required": False, "source": "Speed (mph)"}
    spec = parse_spec(tiny_dict)
    assert spec.renames == {"event_date": "event_day", "Speed (mph)": "speed_mph"}


@pytest.mark.parametrize("identity", ["source_row", "content_hash"])
def test_row_identity_adds_a_generated_key_and_survives_a_round_trip(tiny_dict, identity):
    del tiny_dict["key"]
    tiny_dict["row_identity"] = identity
    spec = parse_spec(tiny_dict)
    assert spec.key == ["row_id"]
    assert spec.columns["row_id"].type == "string" and not spec.columns["row_id"].required
    # the spec travels as JSON to training and back: the generated column must validate again
    assert parse_spec(spec.model_dump(mode="json")) == spec


def test_row_id_is_reserved_when_the_engine_generates_it(tiny_dict):
    del tiny_dict["key"]
    tiny_dict["row_identity"] = "source_row"
    tiny_dict["columns"]["row_id"] = {"type": "int64"}
    with pytest.raises(SpecError, match=r"columns.row_id: the name is reserved for the row identity"):
        parse_spec(tiny_dict)


def test_every_invalid_spec_of_a_folder_is_reported_at_once(tmp_path: Path, demo_dict):
    from aiflow.spec import load_specs

    for name, broken in (("a.yaml", "timezone"), ("b.yaml", "problem_type")):
        data = copy.deepcopy(demo_dict)
        data["name"] = name[0]
        data["side_tables"] = []
        data["joins"] = []
        data[broken] = "nonsense"
        (tmp_path / name).write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as exc:
        load_specs([tmp_path])
    message = str(exc.value)
    assert f"invalid dataset spec {tmp_path / 'a.yaml'}:" in message and "timezone: unknown timezone 'nonsense'" in message
    assert f"invalid dataset spec {tmp_path / 'b.yaml'}:" in message and "problem_type: Input should be" in message


def test_a_bool_label_column_can_be_a_threshold_target(tiny_dict):
    tiny_dict["columns"]["delay"]["type"] = "bool"
    tiny_dict["target"]["threshold"] = 0.5
    assert parse_spec(tiny_dict).target.source == "delay"
    tiny_dict["problem_type"] = "regression"
    tiny_dict["target"] = {"name": "late", "source": "delay", "kind": "identity"}
    with pytest.raises(SpecError, match="target.source: column 'delay' is bool; an identity target needs a numeric column"):
        parse_spec(tiny_dict)
