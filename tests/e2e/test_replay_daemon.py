"""The loop runs itself: ``aiflow replay`` on datasets that are not the demo, with a real ``dagster-daemon run`` process.

The replay only lands files, sends requests and labels through the real server; every run must come from the daemon
(landing sensor, automation, monitoring sensor, retrain sensor), tagged with what started it and the window it is for.
One test kills the daemon with ``kill -9`` in the middle (the replay restarts it, as a supervisor would): nothing is
decided twice, no window is skipped, no retrain starts twice.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from tests.aiflow.monitoring.world import REFERENCE_DAYS, START
from tests.e2e.replay_data import prices_history, rides_history

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def replay(home: Path, spec: Path, data: Path, *extra: str, kill_after_decisions: int | None = None) -> tuple[str, int]:
    """Run ``aiflow replay`` to the end; with ``kill_after_decisions``, ``kill -9`` its daemon once that many windows are
    decided. Returns the output and how many times the daemon was killed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFLOW_", "DAGSTER_"))}
    cmd = [sys.executable, "-m", "aiflow.cli.main", "replay", "--spec", str(spec), "--data", str(data), "--home", str(home), *extra]
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = 0
    deadline = time.monotonic() + 900
    decisions = home / "lake" / "monitoring" / spec.stem / "decisions"
    while kill_after_decisions is not None and not killed and process.poll() is None and time.monotonic() < deadline:
        if decisions.exists() and pl.read_delta(str(decisions)).height >= kill_after_decisions:
            os.kill(int((home / "daemon.pid").read_text()), signal.SIGKILL)
            killed += 1
        time.sleep(0.5)
    out, _ = process.communicate(timeout=max(1, deadline - time.monotonic()))
    assert process.returncode == 0, out[-4000:] + (home / "dagster.log").read_text()[-3000:]
    return out, killed


def runs(home: Path):
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        return [r.dagster_run for r in instance.get_run_records(RunsFilter())]


def test_replay_runs_the_classification_loop_under_the_daemon_and_survives_kill_9(tmp_path):
    spec = rides_history(tmp_path, "classification", shifted=[False, True, True, False])
    home = tmp_path / "home"
    out, killed = replay(home, spec, tmp_path / "data", "--first-train", f"{REFERENCE_DAYS}d", kill_after_decisions=1)
    assert killed == 1 and "restarting it" in out
    lake = home / "lake"
    decisions = pl.read_delta(str(lake / "monitoring" / "rides" / "decisions")).sort("window_start")
    served = [START + dt.timedelta(days=REFERENCE_DAYS + 7 * w) for w in range(4)]
    # nothing skipped, nothing decided twice: one decision per complete window (the last served week is not complete)
    assert decisions["window_start"].to_list() == served[:3] or decisions["window_start"].to_list()[-3:] == served[:3]
    assert decisions["window_start"].n_unique() == decisions.height
    assert decisions.filter(pl.col("window_start") == served[1])["action"].item() == "retrain"  # the shifted week fires
    assert decisions.filter(pl.col("window_start") == served[0])["action"].item() == "skip"
    all_runs = runs(home)
    triggers = Counter(r.tags.get("aiflow/trigger") for r in all_runs)
    # the daemon started every run: nothing was launched by hand
    assert set(triggers) <= {"landing_sensor", "automation", "monitoring_sensor", "retrain_sensor"}, triggers
    assert all(r.tags.get("dagster/sensor_name") for r in all_runs), [r.tags for r in all_runs if not r.tags.get("dagster/sensor_name")]
    assert triggers["landing_sensor"] >= 5 and triggers["automation"] >= 1 and triggers["monitoring_sensor"] >= 3
    monitoring = [r for r in all_runs if r.job_name == "rides_monitoring_job"]
    assert {r.tags["aiflow/window"] for r in monitoring} == {w.isoformat() for w in decisions["window_start"]}
    assert all(r.tags["dagster/partition"] == r.tags["aiflow/window"] for r in monitoring)
    assert len({r.tags["dagster/run_key"] for r in monitoring}) == len(monitoring)  # no request launched twice
    retrains = [r for r in all_runs if r.job_name == "rides_retrain_job"]
    first = [r for r in retrains if "first model" in r.tags.get("aiflow/reason", "")]
    by_window = Counter(r.tags.get("aiflow/window") for r in retrains if r not in first)
    assert len(first) == 1
    assert set(by_window) == {w.isoformat() for w in decisions.filter(pl.col("action") == "retrain")["window_start"]}
    assert all(n == 1 for n in by_window.values()), by_window  # one retrain per window, across the daemon's restart
    # the drift, live-performance and decisions partitions of each decided window are materialized
    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        for stage in ("drift", "live_performance", "decisions"):
            done = instance.get_materialized_partitions(AssetKey(["rides", stage]))
            assert {w.isoformat() for w in decisions["window_start"]} <= done, (stage, done)
    assert "window" in out and "reason" in out and (home / "replay.png").read_bytes()[:4] == b"\x89PNG"
    assert max(len(line) for line in out.splitlines() if line.startswith("20")) <= 100


def test_replay_of_a_monthly_regression_with_no_side_table_decides_each_month(tmp_path):
    spec = prices_history(tmp_path, months=7, shift_from=5)
    home = tmp_path / "home"
    out, _ = replay(home, spec, tmp_path / "data", "--first-train", "120d", "--step", "31d", "--label-delay", "31d")
    decisions = pl.read_delta(str(home / "lake" / "monitoring" / "prices" / "decisions")).sort("window_start")
    # May, June complete (July is the newest month served); the windows are calendar months
    assert decisions["window_start"].to_list() == [dt.date(2021, 5, 1), dt.date(2021, 6, 1)]
    assert decisions["window_end"].to_list() == [dt.date(2021, 5, 31), dt.date(2021, 6, 30)]
    perf = pl.read_delta(str(home / "lake" / "monitoring" / "prices" / "performance"))
    assert perf["rmse"].drop_nulls().len() >= 1  # realized regression error from the labels that came back
    assert decisions.filter(pl.col("window_start") == dt.date(2021, 6, 1))["action"].item() == "retrain"  # the level shift
    monitoring = [r for r in runs(home) if r.job_name == "prices_monitoring_job"]
    assert {r.tags["dagster/partition"] for r in monitoring} == {"2021-05-01", "2021-06-01"}
    assert "prices" in out and "2021-06-01" in out
