"""The main job end to end on the bundled demo, shortened to two weeks after the first quarter: `aiflow replay` (what
./scripts/demo runs) with a real dagster-daemon, the real server over HTTP with its token, the lake's history tables and
the chart. The replay launches no run itself: every run in the instance came from a sensor or from automation. The full
default period (to the end of June) is the README's first command; its wall time is in benchmarks/README.md."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_demo_runs_two_weeks_of_the_loop_under_the_daemon(tmp_path):
    home = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFLOW_", "DAGSTER_"))}
    done = subprocess.run(
        [sys.executable, "-m", "aiflow.cli.main", "replay", "--home", str(home), "--until", "2013-04-14"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "champion v1 serves" in out and "2013-04-08 .. 2013-04-14" in out and "dagster dev" in out
    assert "DEBUG" not in out and "Warning" not in out and done.stderr.strip() == ""  # progress lines only: Dagster logs to a file
    assert all(len(line) <= 100 for line in out.splitlines() if line[:4] in ("2013", "wind")), out
    assert (home / "dagster.log").stat().st_size > 10_000
    lake = home / "lake"
    scored = pl.read_delta(str(lake / "inference_log" / "flights"))
    silver = pl.read_delta(str(lake / "silver" / "flights")).filter(pl.col("event_date").is_between(dt.date(2013, 4, 1), dt.date(2013, 4, 14)))
    assert scored.height == silver.height > 10_000  # every flight of the two weeks went through the server
    labels = pl.read_delta(str(lake / "labels" / "flights"))
    assert 0 < labels.height < scored.height and labels["known"].all()  # the first week's labels came back a week late
    decisions = pl.read_delta(str(lake / "monitoring" / "flights" / "decisions"))
    assert dt.date(2013, 4, 1) in decisions["window_start"].to_list() and decisions["window_start"].n_unique() == decisions.height
    assert (home / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        runs = [r.dagster_run for r in instance.get_run_records(RunsFilter())]
    jobs = {r.job_name for r in runs}
    assert {"flights_data_plane_job", "flights_retrain_job", "flights_monitoring_job"} <= jobs
    assert all(r.tags.get("dagster/sensor_name") for r in runs)  # none launched by hand
