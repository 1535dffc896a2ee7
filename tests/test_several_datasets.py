"""Scope: one code location holding several datasets (the demo and a second, differently shaped spec) side by side."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from aiflow.spec import SpecError, demo_spec_path, load_specs
from aiflow.storage.lake import Lake, Tables
from definitions import build_definitions
from resources.profiles import local_resources
from tests.aiflow.tiny import TINY, TRIPS_HEADER, csv_bytes, write_file

REPO = Path(__file__).resolve().parents[1]

#: Trips rows over two January days (other column names, America/New_York, int key, bool and date columns).
TRIPS = [
    "1,AA,JFK,100.5,120,yes,2012-12-01,3.0,2013-01-01T10:00:00Z",
    "2,UA,EWR,2000,180,no,2012-12-02,NA,2013-01-01T23:30:00Z",
    "3,AA,LGA,733,,,,45.5,2013-01-02T01:15:00Z",
    "4,DL,JFK,950,160,yes,2012-12-20,-5,2013-01-02T14:00:00Z",
]
AIRPORT_WEATHER = "origin,temp,ts\nJFK,30.5,2013-01-01T09:00:00Z\nEWR,28.0,2013-01-01T22:00:00Z\nLGA,25.1,2013-01-02T00:00:00Z\n"


def trips_spec() -> dict:
    """The tiny spec as a second dataset; its side table renamed so no lake table is shared with the demo."""
    spec = copy.deepcopy(TINY)
    spec["side_tables"][0]["name"] = "airport_weather"
    spec["side_tables"][0]["landing"]["uri"] = "landing/airport_weather"
    spec["joins"][0]["table"] = "airport_weather"
    return spec


@pytest.fixture
def two_datasets(tmp_path: Path, demo_landing: Path) -> tuple[Path, Path]:
    """An aiflow home with the demo's landing files and the trips dataset's, and the trips spec file."""
    home = tmp_path / "home"
    shutil.copytree(demo_landing, home / "landing")
    write_file(home / "landing" / "trips", "trips-1.csv", csv_bytes(TRIPS, TRIPS_HEADER))
    write_file(home / "landing" / "airport_weather", "w-1.csv", AIRPORT_WEATHER.encode())
    spec_file = tmp_path / "specs" / "trips.yaml"
    spec_file.parent.mkdir()
    spec_file.write_text(yaml.safe_dump(trips_spec()))
    return home, spec_file


def test_both_datasets_have_their_own_assets_jobs_sensors_and_schedules(two_datasets):
    home, trips_file = two_datasets
    defs = build_definitions([demo_spec_path(), trips_file], resources=local_resources(str(home)))
    keys = set(defs.resolve_asset_graph().get_all_asset_keys())
    for dataset, tables in [("flights", ["flights", "weather"]), ("trips", ["trips", "airport_weather"])]:
        for stage in ("features", "candidate", "evaluation", "registered_model", "champion", "predictions"):
            assert AssetKey([dataset, stage]) in keys
        for table in tables:
            assert {AssetKey([dataset, f"bronze_{table}"]), AssetKey([dataset, f"silver_{table}"])} <= keys
        for job in ("data_plane_job", "lifecycle_job", "maintenance_job", "sweep_job", "rollback_job"):
            assert defs.resolve_job_def(f"{dataset}_{job}").name == f"{dataset}_{job}"
        assert defs.resolve_sensor_def(f"{dataset}_landing_sensor").job_name == f"{dataset}_data_plane_job"
        assert defs.resolve_schedule_def(f"{dataset}_maintenance_nightly").job_name == f"{dataset}_maintenance_job"
    # the per-dataset job selects only its dataset's assets
    trips_job = defs.resolve_job_def("trips_data_plane_job")
    selected = {key for key in trips_job.asset_layer.selected_asset_keys}
    assert selected and all(key.path[0] == "trips" for key in selected)
    # graph labels (the last key component) are distinct within each dataset
    for dataset in ("flights", "trips"):
        labels = [k.path[-1] for k in keys if k.path[0] == dataset]
        assert len(labels) == len(set(labels))


def test_the_data_plane_job_materializes_both_datasets_into_one_lake(two_datasets):
    home, trips_file = two_datasets
    defs = build_definitions([demo_spec_path(), trips_file], resources=local_resources(str(home)))
    result = defs.resolve_job_def("data_plane_job").execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {AssetKey(["flights", "features"]), AssetKey(["trips", "features"])} <= materialized
    lake = Lake(home / "lake")
    trips = lake.scan(Tables.features("trips")).collect()
    assert sorted(trips["trip_id"].to_list()) == [1, 2, 3, 4]
    assert "num_airport_weather_temp" in trips.columns  # the trips dataset's own side table was joined
    flights = lake.scan(Tables.features("flights")).select(pl.len()).collect().item()
    assert flights > 1000  # five demo days
    # each dataset's checks ran on its own tables
    checked = {c.asset_key for c in result.get_asset_check_evaluations()}
    assert {AssetKey(["trips", "features"]), AssetKey(["flights", "features"])} <= checked


def test_a_folder_of_specs_loads_every_spec_and_refuses_clashes(tmp_path: Path):
    folder = tmp_path / "specs"
    folder.mkdir()
    shutil.copy(demo_spec_path(), folder / "flights.yaml")
    (folder / "trips.yml").write_text(yaml.safe_dump(trips_spec()))
    assert [s.name for s in load_specs([folder])] == ["flights", "trips"]

    clash = trips_spec()
    clash["name"] = "flights"
    (folder / "trips.yml").write_text(yaml.safe_dump(clash))
    with pytest.raises(SpecError, match="both named 'flights'"):
        load_specs([folder])

    shared = trips_spec()
    shared["side_tables"][0]["name"] = "weather"  # the demo's side table: same lake tables
    shared["joins"][0]["table"] = "weather"
    (folder / "trips.yml").write_text(yaml.safe_dump(shared))
    with pytest.raises(SpecError, match="table named 'weather'"):
        load_specs([folder])

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SpecError, match="holds no"):
        load_specs([empty])


def test_dg_lists_every_dataset_of_the_code_location(two_datasets):
    """``dg list defs`` (Dagster's newer CLI) loads the same code location as ``dagster``, with AIFLOW_DATASETS."""
    home, trips_file = two_datasets
    env = {**os.environ, "AIFLOW_HOME": str(home), "AIFLOW_DATASETS": os.pathsep.join([str(demo_spec_path()), str(trips_file)])}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "list", "defs", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = json.loads(proc.stdout)
    keys = {a["asset_key"] for a in listed["assets"]}
    assert {"flights/features", "trips/features", "trips/bronze_airport_weather"} <= keys
