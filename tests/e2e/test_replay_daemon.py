"""The loop runs itself: ``aiflow replay`` with a real ``dagster-daemon run`` process, on the bundled demo (what
./scripts/demo runs, shortened to two weeks after the first quarter) and on two datasets that are not the demo.

The replay only lands files, sends requests and labels through the real server; every run must come from the daemon
(landing sensor, automation, monitoring sensor, retrain sensor), tagged with what started it and the window it is for.
The classification replay has its daemon killed with ``kill -9`` in the middle (the replay restarts it, as a
supervisor would): nothing is decided twice, no window is skipped, no retrain starts twice. The three replays wait on
daemons most of the time, so they run at once (one module fixture), each in its own home and instance. A fourth, the
seasonal world of benchmarks/worlds.py shortened to 10 windows, reaches a reinstatement under the daemon.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from benchmarks.loop_matrix import TRAIN_WINDOWS
from benchmarks.loop_worlds_replay import write_world
from benchmarks.worlds import make_world
from tests.aiflow.monitoring.world import REFERENCE_DAYS, START
from tests.e2e.replay_data import prices_history, rides_history

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@dataclass
class Replay:
    home: Path
    process: subprocess.Popen
    dataset: str
    kill_after_decisions: int | None = None
    killed: int = 0
    out: str = ""


def start(home: Path, dataset: str, *args: str, kill_after_decisions: int | None = None) -> Replay:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFLOW_", "DAGSTER_"))}
    cmd = [sys.executable, "-m", "aiflow.cli.main", "replay", "--home", str(home), "--tick", "1", *args]
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Replay(home, process, dataset, kill_after_decisions)


@pytest.fixture(scope="module")
def replays(tmp_path_factory) -> dict[str, Replay]:
    root = tmp_path_factory.mktemp("replays")
    rides = rides_history(root / "rides", "classification", shifted=[False, True, False])
    prices = prices_history(root / "prices", months=7, shift_from=5)
    # the seasonal world of benchmarks/worlds.py (its concept alternates every 4 weekly windows), 10 windows
    seasonal, seasonal_data = write_world(make_world("seasonal", windows=10, rows=1000), 0, root / "seasonal")
    runs = {
        "rides": start(root / "rides" / "home", "rides", "--spec", str(rides), "--data", str(root / "rides" / "data"),
                       "--first-train", f"{REFERENCE_DAYS}d", kill_after_decisions=1),
        "prices": start(root / "prices" / "home", "prices", "--spec", str(prices), "--data", str(root / "prices" / "data"),
                        "--first-train", "120d", "--step", "31d", "--label-delay", "20d"),
        "flights": start(root / "demo", "flights", "--until", "2013-04-14"),
        "seasonal": start(root / "seasonal" / "home", "world_seasonal", "--spec", str(seasonal), "--data", str(seasonal_data),
                          "--first-train", f"{7 * TRAIN_WINDOWS}d", "--label-delay", "7d"),
    }  # fmt: skip
    deadline = time.monotonic() + 1800
    while any(r.process.poll() is None for r in runs.values()) and time.monotonic() < deadline:
        for r in runs.values():
            decisions = r.home / "lake" / "monitoring" / r.dataset / "decisions"
            if r.kill_after_decisions and not r.killed and r.process.poll() is None and decisions.exists():
                if pl.read_delta(str(decisions)).height >= r.kill_after_decisions:
                    os.kill(int((r.home / "daemon.pid").read_text()), signal.SIGKILL)
                    r.killed += 1
        time.sleep(0.5)
    for r in runs.values():
        if r.process.poll() is None:
            r.process.send_signal(signal.SIGTERM)
        out, err = r.process.communicate(timeout=120)
        r.out = out
        assert r.process.returncode == 0, out[-4000:] + err[-2000:] + (r.home / "dagster.log").read_text()[-3000:]
        assert err.strip() == "", err[-2000:]  # progress on stdout only; Dagster's logs go to <home>/dagster.log
    return runs


def progress_and_table(out: str) -> list[str]:
    """The lines that must fit a terminal: progress ("[mm:ss] …") and the table (its header and one row per window);
    the closing lines name files and commands, whose paths are as long as they are."""
    return [line for line in out.splitlines() if line.startswith(("[", "window ")) or re.match(r"\d{4}-\d{2}-\d{2} ", line)]


def runs_of(home: Path):
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        return [r.dagster_run for r in instance.get_run_records(RunsFilter())]


def decisions_of(r: Replay) -> pl.DataFrame:
    return pl.read_delta(str(r.home / "lake" / "monitoring" / r.dataset / "decisions")).sort("window_start")


def test_the_daemon_alone_ran_the_classification_loop_and_survived_kill_9(replays):
    r = replays["rides"]
    assert r.killed == 1 and "restarting it" in r.out
    decisions = decisions_of(r)
    served = [START + dt.timedelta(days=REFERENCE_DAYS + 7 * w) for w in range(3)]
    # nothing skipped, nothing decided twice: one decision per complete window (the last served week is not complete)
    assert decisions["window_start"].to_list()[-2:] == served[:2] and decisions["window_start"].n_unique() == decisions.height
    assert decisions.filter(pl.col("window_start") == served[0])["action"].item() == "skip"
    assert decisions.filter(pl.col("window_start") == served[1])["action"].item() == "retrain"  # the shifted week fires
    all_runs = runs_of(r.home)
    triggers = Counter(run.tags.get("aiflow/trigger") for run in all_runs)
    # the daemon started every run: nothing was launched by hand
    assert set(triggers) <= {"landing_sensor", "automation", "monitoring_sensor", "retrain_sensor"}, triggers
    assert all(run.tags.get("dagster/sensor_name") for run in all_runs)
    assert triggers["landing_sensor"] >= 4 and triggers["automation"] >= 1 and triggers["monitoring_sensor"] >= 2
    monitoring = [run for run in all_runs if run.job_name == "rides_monitoring_job"]
    assert {run.tags["aiflow/window"] for run in monitoring} == {w.isoformat() for w in decisions["window_start"]}
    assert all(run.tags["dagster/partition"] == run.tags["aiflow/window"] for run in monitoring)
    assert len({run.tags["dagster/run_key"] for run in monitoring}) == len(monitoring)  # no request launched twice
    retrains = [run for run in all_runs if run.job_name == "rides_retrain_job"]
    first = [run for run in retrains if "first model" in run.tags.get("aiflow/reason", "")]
    by_window = Counter(run.tags.get("aiflow/window") for run in retrains if run not in first)
    assert len(first) == 1
    assert set(by_window) == {w.isoformat() for w in decisions.filter(pl.col("action") == "retrain")["window_start"]}
    assert all(n == 1 for n in by_window.values()), by_window  # one retrain per window, across the daemon's restart
    from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

    with DagsterInstance.from_config(str(r.home / "dagster_home")) as instance:
        for stage in ("drift", "live_performance", "decisions"):  # each decided window is a materialized partition
            done = instance.get_materialized_partitions(AssetKey(["rides", stage]))
            assert {w.isoformat() for w in decisions["window_start"]} <= done, (stage, done)
        # the window that fired has Evidently's report, linked for the browser: signed for the replay's server
        fired = decisions.filter(pl.col("action") == "retrain")["window_start"][0].isoformat()
        found = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(["rides", "decisions"]), asset_partitions=[fired]), limit=1)
    from aiflow.serving.reports import verify

    link = found.records[0].asset_materialization.metadata["report"].value
    env = dict(line.split("=", 1) for line in (r.home / "reports.env").read_text().splitlines())
    assert link.startswith(env["AIFLOW_REPORTS_URL"] + "/reports/rides/online-" + fired)
    name, sig = link.split("/reports/rides/")[1].split("?sig=")
    assert verify(env["AIFLOW_REPORT_KEY"], "rides", name, sig) and (r.home / "lake" / "monitoring" / "rides" / "reports" / name).exists()
    assert env["AIFLOW_REPORT_KEY"] not in (r.home / "dagster.log").read_text()
    assert (r.home / "replay.png").read_bytes()[:4] == b"\x89PNG"
    assert max(len(line) for line in progress_and_table(r.out)) <= 100


def test_a_monthly_regression_with_no_side_table_is_re_judged_when_its_labels_arrive(replays):
    r = replays["prices"]
    decisions = decisions_of(r)
    # May and June complete (July is the newest month served); the windows are calendar months
    assert decisions["window_start"].to_list() == [dt.date(2021, 5, 1), dt.date(2021, 6, 1)]
    assert decisions["window_end"].to_list() == [dt.date(2021, 5, 31), dt.date(2021, 6, 30)]
    june = decisions.filter(pl.col("window_start") == dt.date(2021, 6, 1)).row(0, named=True)
    # June was first decided with no label (its labels come back 20 days later), then re-judged with them: the level
    # shift raises the realized RMSE and fires
    assert june["labelled"] > 1000 and june["action"] == "retrain" and "realized rmse" in june["reason"]
    monitoring = [run for run in runs_of(r.home) if run.job_name == "prices_monitoring_job"]
    assert Counter(run.tags["dagster/partition"] for run in monitoring)["2021-06-01"] == 2
    assert {run.tags["dagster/partition"] for run in monitoring} == {"2021-05-01", "2021-06-01"}
    perf = pl.read_delta(str(r.home / "lake" / "monitoring" / "prices" / "performance"))
    assert perf.filter(pl.col("window_start") == dt.date(2021, 6, 1))["rmse"].item() > perf.filter(pl.col("window_start") == dt.date(2021, 5, 1))["rmse"].item()


def test_the_demo_runs_under_the_daemon_with_progress_lines_only(replays):
    r = replays["flights"]
    assert "champion v1 serves" in r.out and "2013-04-08 .. 2013-04-14" in r.out and "dagster dev" in r.out
    assert max(len(line) for line in progress_and_table(r.out)) <= 100, r.out
    assert "DEBUG" not in r.out and "Warning" not in r.out
    assert (r.home / "dagster.log").stat().st_size > 10_000
    lake = r.home / "lake"
    scored = pl.read_delta(str(lake / "inference_log" / "flights"))
    silver = pl.read_delta(str(lake / "silver" / "flights"))
    local = pl.col("time_hour").dt.convert_time_zone("America/New_York").dt.date()  # the demo's days are New York days
    weeks = silver.filter(local.is_between(dt.date(2013, 4, 1), dt.date(2013, 4, 14)))
    assert scored.height == weeks.height > 10_000  # every flight of the two weeks went through the server
    decisions = decisions_of(r)
    assert decisions["window_start"].to_list() == [dt.date(2013, 4, 1)]  # a New York calendar week, no partial one before
    jobs = {run.job_name for run in runs_of(r.home)}
    assert {"flights_data_plane_job", "flights_retrain_job", "flights_monitoring_job", "__ASSET_JOB"} <= jobs


def test_under_the_daemon_a_concept_that_comes_back_brings_its_earlier_champion_back(replays):
    """The seasonal world: v1 learnt concept A (windows 0-2); the flip to B at window 4 retrained (v2, then its
    follow-up v3); the flip back to A at window 8 fired a retrain whose validation found v1 decisive against v3 and surer
    than the retrain: v1 serves again, the retrain is registered without an alias, the window shows the outcome, and the
    replay (which waited for the retrain's alias before) carries on to its end."""
    from aiflow.models.registry import Registry
    from aiflow.monitoring import history
    from aiflow.storage.lake import Lake

    r = replays["seasonal"]
    lake = Lake(str(r.home / "lake"))
    ended = history.read_outcomes(lake, r.dataset)
    back = ended.filter(pl.col("outcome") == "reinstated")
    assert back.height >= 1, (ended, r.out[-3000:])
    first = back.row(0, named=True)
    assert first["served_version"] == 1 and first["alias"] == "champion", first  # the concept A model
    registry = Registry(lake)
    assert first["registered_version"] not in registry.aliases(r.dataset).values()
    assert any("earlier champion v1 reinstated" in (reason or "") for reason in registry.history(r.dataset, "champion")["reason"].to_list())
    decided = history.read_decisions(lake, r.dataset).filter(pl.col("window_start") == first["window_start"]).row(0, named=True)
    assert decided["action"] == "retrain" and decided["retrain_outcome"] == "reinstated" and decided["retrain_served_version"] == 1
    assert "earlier champion v1 reinstated and serving" in r.out  # the replay saw it and went on
    retrains = [run for run in runs_of(r.home) if run.job_name == f"{r.dataset}_retrain_job"]
    assert first["run_id"] in {run.run_id for run in retrains}
    assert all(run.tags.get("aiflow/trigger") == "retrain_sensor" for run in retrains if run.run_id == first["run_id"])
