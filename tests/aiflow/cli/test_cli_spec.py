"""Scope: `aiflow spec check` and `aiflow spec schema` run as real subprocesses: every problem of a bad spec at once with exit 1 and no traceback, the columns read from a sample landing file, and a JSON Schema that validates the demo spec and refuses bad values; demo spec and a mapped, keyless spec."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from aiflow.spec import demo_spec_path
from tests.aiflow.tiny import TINY, TRIPS_HEADER, TRIPS_ROWS, csv_bytes

AIFLOW = str(Path(sys.executable).with_name("aiflow"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([AIFLOW, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _json_ready(data):
    """YAML dates as the strings an editor's YAML language server sees."""
    return json.loads(json.dumps(data, default=str))


def test_check_of_a_bad_spec_prints_every_problem_and_exits_1_without_a_traceback(tmp_path: Path):
    data = yaml.safe_load(demo_spec_path().read_text())
    data["quality"]["max_null_rate"]["dep_delay"] = 0.1  # a rule that cannot run on the features table
    data["columns"]["distance"]["type"] = "decimal"  # a field error, unrelated
    data["features"]["categorical"][0] = "gate"  # a cross-field error
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run("spec", "check", str(path), cwd=tmp_path)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    assert f"invalid dataset spec {path}:" in result.stderr
    for fragment in ("quality.max_null_rate.dep_delay", "columns.distance.type", "features.categorical[0]: column 'gate'"):
        assert fragment in result.stderr, result.stderr


def test_a_bad_spec_given_to_another_command_is_an_error_not_a_traceback(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\n")
    result = run("--home", str(tmp_path / "home"), "--spec", str(path), "status", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "aiflow: error: invalid dataset spec" in result.stderr and "  - columns: Field required" in result.stderr


def test_check_of_the_demo_spec_passes(tmp_path: Path):
    result = run("spec", "check", str(demo_spec_path()), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid dataset spec 'flights'" in result.stdout


def test_check_with_a_sample_lists_the_columns_it_would_read(tmp_path: Path):
    spec = copy.deepcopy(TINY)
    del spec["key"], spec["columns"]["trip_id"]
    spec["row_identity"] = "source_row"
    spec["columns"]["speed_mph"] = {"type": "float64", "required": False, "source": "Speed (mph)"}
    (tmp_path / "trips.yaml").write_text(yaml.safe_dump(_json_ready(spec)))
    header = TRIPS_HEADER.replace("trip_id,", "").replace(",booked", "") + ",Speed (mph),gate"
    rows = [",".join(v for i, v in enumerate(r.split(",")) if i not in (0, 6)) + ",31,A1" for r in TRIPS_ROWS]
    rows.append("AA,JFK,1")  # a short row
    (tmp_path / "sample.csv").write_bytes(csv_bytes(rows, header))
    result = run("spec", "check", "trips.yaml", "--sample", "sample.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert lines["speed_mph"].endswith("read from 'Speed (mph)'")
    assert lines["booked"].endswith("absent: null on every row")
    assert lines["row_id"].endswith("generated (source_row)")
    assert lines["gate"].endswith("not in the spec: kept as text")
    assert "rows: 3 kept, 1 quarantined" in result.stdout
    assert "row 4: line 5: 3 fields, expected 9" in result.stdout


def test_check_with_a_sample_that_would_be_rejected_exits_1(tmp_path: Path):
    (tmp_path / "no-delay.csv").write_bytes(csv_bytes(["1,AA,JFK,1,2013-01-01T00:00:00Z"], "trip_id,carrier,origin,distance,ts"))
    (tmp_path / "trips.yaml").write_text(yaml.safe_dump(_json_ready(TINY)))
    result = run("spec", "check", "trips.yaml", "--sample", "no-delay.csv", cwd=tmp_path)
    assert result.returncode == 1
    assert "would be rejected" in result.stderr and "missing required column 'delay'" in result.stderr


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("schema")
    result = run("spec", "schema", "-o", "spec.schema.json", cwd=folder)
    assert result.returncode == 0, result.stderr
    return json.loads((folder / "spec.schema.json").read_text())


def test_json_schema_validates_the_demo_spec_and_a_keyless_mapped_one(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_json_ready(yaml.safe_load(demo_spec_path().read_text())), schema)
    keyless = copy.deepcopy(TINY)
    del keyless["key"]
    keyless["row_identity"] = "content_hash"
    keyless["columns"]["speed_mph"] = {"type": "float64", "source": "Speed (mph)"}
    jsonschema.validate(keyless, schema)


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        pytest.param(("columns", "distance", "type"), "decimal", "'decimal' is not one of", id="column-type"),
        pytest.param(("target", "kind"), "ranking", "'ranking' is not one of", id="target-kind"),
        pytest.param(("row_identity",), "row_number", "'row_number' is not one of", id="row-identity"),
        pytest.param(("colour",), "blue", "Additional properties are not allowed", id="unknown-field"),
    ],
)
def test_json_schema_refuses_values_outside_the_allowed_ones(schema, path, value, fragment):
    data = _json_ready(yaml.safe_load(demo_spec_path().read_text()))
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=fragment):
        jsonschema.validate(data, schema)
