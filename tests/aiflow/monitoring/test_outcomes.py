"""Scope: the outcome of each retrain a window asked for, beside the window's decision (aiflow.monitoring.history):
recorded by the retrain run, the latest per window shown by ``read_decisions``, a decision without one left null, a
decisions table written before outcomes existed read as before. Real Delta tables in a temporary lake."""

from __future__ import annotations

import datetime as dt

import polars as pl

from aiflow.monitoring import history
from aiflow.monitoring.policy import Decision
from aiflow.storage.lake import Lake

W0, W1, W2 = dt.date(2024, 3, 4), dt.date(2024, 3, 11), dt.date(2024, 3, 18)


def decided(lake: Lake, start: dt.date, action: str) -> None:
    d = Decision(start, start + dt.timedelta(days=7), 2, action, f"{action}: because")
    history.replace_decision(lake, "trips", d.to_row() | {"run_key": f"trips-retrain-{start}" if action == "retrain" else None})


def test_each_window_shows_the_latest_outcome_of_the_retrain_it_asked_for(tmp_path):
    lake = Lake(tmp_path / "lake")
    for start, action in ((W0, "skip"), (W1, "retrain"), (W2, "retrain")):
        decided(lake, start, action)
    before = history.read_decisions(lake, "trips")  # no outcome recorded yet: the columns are there, null
    assert before.height == 3 and all(before[c].null_count() == 3 for c in history.OUTCOME_COLUMNS)
    history.record_outcome(lake, "trips", W1, run_id="r1", registered_version=3, alias="challenger", served_version=2,
                           outcome="challenger", reason="challenger in shadow: not decisive")  # fmt: skip
    # the same window's retrain run again (a re-execution): the newer outcome is the one shown
    history.record_outcome(lake, "trips", W1, run_id="r2", registered_version=4, alias="champion", served_version=1,
                           outcome="reinstated", reason="earlier champion v1 reinstated")  # fmt: skip
    history.record_outcome(lake, "trips", dt.date(2024, 1, 1), run_id="r0", registered_version=9, alias="champion", served_version=9,
                           outcome="promoted", reason="a window with no decision row")  # fmt: skip
    got = history.read_decisions(lake, "trips")
    assert got["window_start"].to_list() == [W0, W1, W2]  # outcomes never add windows
    rows = {r["window_start"]: r for r in got.iter_rows(named=True)}
    assert (rows[W1]["retrain_outcome"], rows[W1]["retrain_version"], rows[W1]["retrain_served_version"]) == ("reinstated", 4, 1)
    assert rows[W1]["retrain_outcome_reason"] == "earlier champion v1 reinstated" and rows[W1]["action"] == "retrain"
    assert all(rows[w][c] is None for w in (W0, W2) for c in history.OUTCOME_COLUMNS)  # asked, not ended yet / never asked
    assert history.read_outcomes(lake, "trips")["run_id"].to_list() == ["r0", "r1", "r2"]  # every run kept, append-only
    # re-judging the window (late labels) rewrites its decision, never its outcome
    decided(lake, W1, "retrain")
    assert history.read_decisions(lake, "trips").filter(pl.col("window_start") == W1)["retrain_outcome"].to_list() == ["reinstated"]


def test_aiflow_status_says_what_a_window_s_retrain_ended_in(tmp_path):
    from aiflow.cli.main import _loop_status
    from tests.aiflow.monitoring.world import rides_spec

    lake = Lake(tmp_path / "lake")
    spec = rides_spec()
    for start, action in ((W0, "skip"), (W1, "retrain")):
        history.replace_decision(lake, spec.name, Decision(start, start + dt.timedelta(days=7), 2, action, f"{action}: because").to_row())
    history.record_outcome(lake, spec.name, W1, run_id="r", registered_version=3, alias="champion", served_version=3,
                           outcome="promoted", reason="retrain; decisive offline: gain +0.03")  # fmt: skip
    lines = _loop_status(lake, spec)
    assert f"  {W0} (v2): skip: because" in lines
    assert f"  {W1} (v2): retrain: because -> retrain; decisive offline: gain +0.03" in lines
