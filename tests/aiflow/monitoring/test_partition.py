"""One monitoring window computed whole (what a partition run does) on a real world: window_status in data time, the
window's rows replaced when computed again (never doubled), its decision re-judged when labels arrive without losing a
retrain it already asked for, and an old window re-judged after a later retrain never asks for another."""

from __future__ import annotations

import datetime as dt

import polars as pl

from aiflow.monitoring import history
from aiflow.monitoring.monitor import References
from aiflow.monitoring.partition import decide_window, window_drift, window_performance, window_status
from tests.aiflow.monitoring.world import ROWS_PER_DAY, SERVED, World, serve_week

WEEK = dt.timedelta(days=7)


def monitor(world: World, window: dt.date, *, running: bool = False):
    refs = References(world.lake, world.spec.name, str(world.artifacts))
    window_drift(world.lake, world.spec, refs, window)
    window_performance(world.lake, world.spec, refs, window)
    return decide_window(world.lake, world.spec, window, running=running, evaluator="test")


def test_window_status_counts_rows_and_labels_per_window_and_knows_which_are_complete(world: World):
    serve_week(world, 0, shifted=False)
    serve_week(world, 1, shifted=True, labels=False)
    status = window_status(world.lake, world.spec)
    assert status.rows() == [(SERVED, 7 * ROWS_PER_DAY, 7 * ROWS_PER_DAY, True), (SERVED + WEEK, 7 * ROWS_PER_DAY, 0, False)]


def test_a_window_computed_again_keeps_one_set_of_rows_and_one_decision(world: World):
    serve_week(world, 0, shifted=False)
    serve_week(world, 1, shifted=False)
    first = monitor(world, SERVED)
    again = monitor(world, SERVED)
    assert first.decision.action == again.decision.action == "skip"
    drift = pl.read_delta(world.lake.uri(history.drift_table("rides")))
    assert drift.filter(pl.col("source") == "online").group_by("column").len()["len"].unique().to_list() == [1]
    perf = history.read_performance(world.lake, "rides")
    assert perf.filter(pl.col("window_start") == SERVED).height == 1
    daily = history.read_performance(world.lake, "rides", daily=True)
    assert daily.group_by("event_date", "model_version").len()["len"].unique().to_list() == [1] and daily.height == 7
    assert history.read_decisions(world.lake, "rides").height == 1


def test_a_window_that_asked_for_a_retrain_keeps_its_verdict_when_re_judged(world: World):
    serve_week(world, 0, shifted=True)
    serve_week(world, 1, shifted=True)
    fired = monitor(world, SERVED)
    assert fired.decision.action == "retrain" and fired.run_key == f"rides-retrain-{SERVED}"
    # labels arrive later and the window is judged again while its own retrain runs: the verdict stands
    rejudged = monitor(world, SERVED, running=True)
    assert rejudged.decision.action == "retrain" and rejudged.run_key == fired.run_key
    assert "Re-judged with" in rejudged.decision.reason
    assert history.read_decisions(world.lake, "rides")["action"].to_list() == ["retrain"]


def test_an_old_window_re_judged_after_a_later_retrain_does_not_ask_for_another(world: World):
    serve_week(world, 0, shifted=True)
    serve_week(world, 1, shifted=True, rows_per_day=20)  # too few rows to judge, or to be the next week's recent range
    serve_week(world, 2, shifted=True)
    serve_week(world, 3, shifted=False)
    assert "already running" in monitor(world, SERVED, running=True).decision.reason  # drift fired, but a retrain ran
    assert "too few rows" in monitor(world, SERVED + WEEK).decision.reason
    # the third week is compared with the reference's newest rows (its week before is too small): it fires
    assert monitor(world, SERVED + 2 * WEEK).decision.action == "retrain"
    # the first window is judged again (its labels came back, say) with nothing running: it fires, but a later window
    # already retrained, so it is superseded, never a second retrain
    rejudged = monitor(world, SERVED)
    assert rejudged.decision.action == "skip" and rejudged.run_key is None
    assert f"superseded: the later window {SERVED + 2 * WEEK} already retrained" in rejudged.decision.reason
    decisions = history.read_decisions(world.lake, "rides")
    assert decisions.filter(pl.col("action") == "retrain")["window_start"].to_list() == [SERVED + 2 * WEEK]
    assert decisions.height == 3


def test_drift_is_news_once_a_shift_that_stays_is_not_a_new_alarm(world: World):
    serve_week(world, 0, shifted=False)
    serve_week(world, 1, shifted=True)
    serve_week(world, 2, shifted=True)
    serve_week(world, 3, shifted=True)
    verdicts = [monitor(world, SERVED + k * WEEK).decision for k in range(3)]
    assert [d.fired for d in verdicts] == [(), ("drift",), ()]  # the week the data moved; not the weeks it stayed
    drift = pl.read_delta(world.lake.uri(history.drift_table("rides"))).filter(pl.col("source") == "online")
    inputs = drift.filter(~pl.col("column").is_in(["prediction", "label"]))
    second, third = (inputs.filter(pl.col("window_start") == SERVED + k * WEEK) for k in (1, 2))
    # the third week is still far from the training months (drifted against the reference) but inside its recent
    # range (the second week): not news
    assert third["drifted_reference"].sum() >= 2 and third["drifted"].sum() == 0 and not third["recent_drifted"].any()
    assert second["drifted"].sum() >= 2 and third["recent_rows"].unique().to_list() == [7 * ROWS_PER_DAY]


def test_aiflow_status_shows_the_registry_serving_and_the_newest_decisions(world: World):
    import subprocess
    import sys

    import yaml

    serve_week(world, 0, shifted=False)
    serve_week(world, 1, shifted=True)
    serve_week(world, 2, shifted=False)
    monitor(world, SERVED)
    monitor(world, SERVED + WEEK)
    spec_path = world.home / "rides.yaml"
    spec_path.write_text(yaml.safe_dump(world.spec.model_dump(mode="json", exclude_none=True)))
    env = {"AIFLOW_HOME": str(world.home), "AIFLOW_PROFILE": "local", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "aiflow.cli.main", "--spec", str(spec_path), "status"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"registry: rides: champion v{world.version}" in out
    assert f"serving: {3 * 7 * ROWS_PER_DAY:,} records in the inference log, {3 * 7 * ROWS_PER_DAY:,} labels back" in out
    assert f"monitoring: 2 weekly windows decided ({SERVED} .. {SERVED + WEEK}), 1 retrain(s)" in out
    assert f"{SERVED + WEEK} (v{world.version}): retrain: weighted drift share" in out
