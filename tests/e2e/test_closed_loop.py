"""The main job end to end on the reduced scenario (three weeks after the first quarter): the real script, the real
server over HTTP with its token, Dagster runs on a real instance, the real sensor, the history tables and the chart.
The full year is the README's first command (./scripts/demo); its wall time is in benchmarks/README.md."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]


def test_the_closed_loop_runs_three_weeks_through_server_monitoring_and_sensor(tmp_path):
    home = tmp_path / "loop"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFLOW_", "DAGSTER_"))}
    done = subprocess.run(
        [sys.executable, "scripts/closed_loop.py", "--home", str(home), "--until", "2013-04-21"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "champion v1 serves" in out and "week 2013-04-15" in out and "dagster dev" in out
    lake = home / "lake"
    # every flight of the three weeks went through the server and into its inference log; labels came back a week late
    scored = pl.read_delta(str(lake / "inference_log" / "flights"))
    silver = pl.read_delta(str(lake / "silver" / "flights")).filter(pl.col("event_date").is_between(dt.date(2013, 4, 1), dt.date(2013, 4, 21)))
    assert scored.height == silver.height > 15_000
    labels = pl.read_delta(str(lake / "labels" / "flights"))
    assert 0 < labels.height < scored.height and labels["known"].all()
    # two complete windows were monitored, each decided once by the sensor
    drift = pl.read_delta(str(lake / "monitoring" / "flights" / "drift"))
    online = drift.filter(pl.col("source") == "online")
    assert sorted(online["window_start"].unique()) == [dt.date(2013, 4, 1), dt.date(2013, 4, 8)]
    # the first quarter's batch scores were compared with the first model's reference too, week by week
    assert drift.filter(pl.col("source") == "batch")["window_start"].n_unique() >= 12
    decisions = pl.read_delta(str(lake / "monitoring" / "flights" / "decisions")).sort("window_start")
    assert decisions["window_start"].to_list() == [dt.date(2013, 4, 1), dt.date(2013, 4, 8)]
    assert set(decisions["evaluator"]) == {"sensor"} and decisions["reason"].str.len_chars().min() > 20
    perf = pl.read_delta(str(lake / "monitoring" / "flights" / "performance"))
    assert perf.filter(pl.col("window_start") == dt.date(2013, 4, 1))["labelled"][0] > 5_000
    assert (home / "closed_loop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the runs are in the Dagster instance the README points `dagster dev` at
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        jobs = [r.dagster_run.job_name for r in instance.get_run_records(RunsFilter())]
    assert jobs.count("flights_monitoring_job") == 3 and jobs.count("flights_data_plane_job") == 3 and "flights_lifecycle_job" in jobs
