"""Scope: the landing-zone sensor on real files: batching, cursor, re-dropped files, and the runs it requests."""

from __future__ import annotations

import json
import os
import time

import polars as pl
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

from aiflow.spec import demo_spec_path, load_spec
from aiflow.storage.lake import Lake, Tables
from sensors.landing import landing_sensor
from tests.dagster_helpers import local_defs, local_home


def _evaluate(defs, home, cursor=None, sensor=None):
    spec_sensor = sensor or defs.resolve_sensor_def("flights_landing_sensor")
    context = build_sensor_context(instance=DagsterInstance.ephemeral(), cursor=cursor, resources={"landing": defs.resources["landing"]})
    items = list(spec_sensor(context))
    requests = [i for i in items if isinstance(i, RunRequest)]
    skipped = [i for i in items if isinstance(i, SkipReason)]
    return requests, context.cursor, skipped


def _files(request, op="flights__bronze_flights"):
    return request.run_config["ops"][op]["config"]["files"]


def test_new_files_are_requested_once_and_replaced_files_again(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    requests, cursor, _ = _evaluate(defs, home)
    assert len(requests) == 1
    assert _files(requests[0]) == [f"2013-01-0{d}.csv" for d in range(1, 6)]
    assert _files(requests[0], "flights__bronze_weather") == ["weather-2013.csv"]

    again, cursor2, skipped = _evaluate(defs, home, cursor)
    assert again == [] and len(skipped) == 1

    # a new day and a replaced file (new content, later mtime) are requested; the rest are not
    (home / "landing" / "flights" / "2013-01-06.csv").write_text((home / "landing" / "flights" / "2013-01-01.csv").read_text())
    replaced = home / "landing" / "flights" / "2013-01-02.csv"
    replaced.write_text(replaced.read_text() + "\n")
    os.utime(replaced, (time.time() + 5, time.time() + 5))
    third, _, _ = _evaluate(defs, home, cursor2)
    assert len(third) == 1
    assert _files(third[0]) == ["2013-01-02.csv", "2013-01-06.csv"]
    assert _files(third[0], "flights__bronze_weather") == []
    assert third[0].run_key != requests[0].run_key


def test_batches_respect_the_limit_and_put_side_tables_first(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    sensor = landing_sensor(load_spec(demo_spec_path()), max_files_per_run=2)
    requests, cursor, _ = _evaluate(defs, home, sensor=sensor)
    assert [(_files(r, "flights__bronze_weather"), _files(r)) for r in requests] == [
        (["weather-2013.csv"], ["2013-01-01.csv"]),
        ([], ["2013-01-02.csv", "2013-01-03.csv"]),
        ([], ["2013-01-04.csv", "2013-01-05.csv"]),
    ]
    assert len({r.run_key for r in requests}) == 3
    assert set(json.loads(cursor)["flights"]) == {f"2013-01-0{d}.csv" for d in range(1, 6)}


def test_removed_files_leave_the_cursor(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    _, cursor, _ = _evaluate(defs, home)
    (home / "landing" / "flights" / "2013-01-03.csv").unlink()
    _, cursor2, _ = _evaluate(defs, home, cursor)
    assert "2013-01-03.csv" not in json.loads(cursor2)["flights"]
    assert len(json.loads(cursor2)["flights"]) == 4


def test_requested_run_ingests_exactly_the_requested_files(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    sensor = landing_sensor(load_spec(demo_spec_path()), max_files_per_run=3)
    requests, _, _ = _evaluate(defs, home, sensor=sensor)
    job = defs.resolve_job_def(sensor.job_name)
    instance = DagsterInstance.ephemeral()
    first = job.execute_in_process(run_config=requests[0].run_config, instance=instance, tags=requests[0].tags)
    assert first.success
    lake = Lake(home / "lake")
    files = lake.scan(Tables.bronze("flights")).select(pl.col("_source_file").unique()).collect().to_series().sort().to_list()
    assert files == _files(requests[0])
    assert lake.exists(Tables.features("flights"))
    second = job.execute_in_process(run_config=requests[1].run_config, instance=instance)
    assert second.success
    files = lake.scan(Tables.bronze("flights")).select(pl.col("_source_file").unique()).collect().to_series().sort().to_list()
    assert files == sorted(_files(requests[0]) + _files(requests[1]))
