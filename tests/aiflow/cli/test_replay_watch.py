"""What the replay reads of the daemon's progress: which windows it owes a decision after a step (the monitoring
sensor's view), how many answered requests the server logged, and the failed gates' details of a refused candidate,
from real hand-off and inference-log records."""

from __future__ import annotations

import datetime as dt

import polars as pl

from aiflow.cli.replay_watch import gate_message, logged, windows_to_decide
from aiflow.evaluation.gates import LatencyReading, latency_gate
from aiflow.models.candidates import Handoffs
from aiflow.storage.lake import Lake

W = [dt.date(2013, 4, 1) + dt.timedelta(days=7 * i) for i in range(4)]


def status(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"window_start": pl.Date, "rows": pl.UInt32, "labelled": pl.UInt32, "complete": pl.Boolean}, orient="row")


def test_the_windows_owed_a_decision_are_the_newly_complete_and_the_changed_ones():
    before = status([(W[0], 100, 100, True), (W[1], 100, 0, True), (W[2], 50, 0, False)])
    after = status([(W[0], 100, 100, True), (W[1], 100, 90, True), (W[2], 100, 0, True), (W[3], 10, 0, False)])
    assert windows_to_decide(before, after) == [W[1], W[2]]  # W0 unchanged, W3 not complete
    assert windows_to_decide(after, after) == []


def test_the_gate_message_names_each_failed_gate_with_its_detail(tmp_path):
    from tests.aiflow.models.test_candidates import record

    handoffs = Handoffs(Lake(tmp_path / "lake"))
    assert gate_message(handoffs.lake, "trips") == "no evaluation"
    failed = latency_gate(LatencyReading(300.0, (290.0, 310.0)), budget=250.0)
    passed = latency_gate(LatencyReading(100.0, (90.0, 110.0)), budget=250.0)
    handoffs.record_evaluation(
        record(handoffs, 1, "run-1"), run_id="run-1", test_metrics={"rmse": 12.0}, champion_version=None, champion_metrics=None,
        rows=100, latency_ms_per_1k=300.0, gate_results={"latency": failed.as_dict(), "schema": {**passed.as_dict(), "gate": "schema"}},
        slices=[], plot_uri=None, notes=[],
    )  # fmt: skip
    assert gate_message(handoffs.lake, "trips") == f"latency: {failed.detail}"


def test_a_challenger_in_shadow_does_not_count_as_answered_requests(tmp_path):
    """A challenger in shadow logs a second row per request. Counted as answered, the replay took half a week's records
    (their shadow rows) for the whole week, read the windows before the champion's rows were flushed, owed no decision
    and ran ahead of the daemon: the real loop then looked 4 windows late on a world whose concept flipped."""
    from aiflow.serving.inference_log import InferenceLog, log_rows

    lake = Lake(tmp_path / "lake")
    assert logged(lake, "trips") == 0
    log = InferenceLog(lake)
    ids = [f"r{i}" for i in range(5)]
    common = {"request_ids": ids, "inputs": ["{}"] * 5, "dataset": "trips", "predictions": [0.5] * 5, "probabilities": [0.5] * 5,
              "latency_ms": 1.0}  # fmt: skip
    log.add(log_rows(**common, version=2, variant="shadow"))
    log.add(log_rows(**common, version=1, variant="champion")[:2])  # three answered rows not flushed yet
    log.flush()
    assert logged(lake, "trips") == 2
    log.add(log_rows(**common, version=1, variant="champion")[2:])
    log.flush()
    assert logged(lake, "trips") == 5


def test_the_replay_reads_a_retrain_s_outcome_of_its_window_recorded_after_its_decision(tmp_path):
    """A reinstated earlier champion leaves the retrain without an alias: the replay waited for one to appear (seen on
    the seasonal world under the daemon: stuck after 'earlier champion v1 reinstated'); it reads the outcome instead."""
    import time

    from aiflow.cli.replay_watch import outcome_after
    from aiflow.monitoring import history

    lake = Lake(tmp_path / "lake")
    before = dt.datetime.now(dt.UTC)
    assert outcome_after(lake, "trips", W[1], before) is None  # no table yet
    history.record_outcome(lake, "trips", W[1], run_id="old", registered_version=2, alias="champion", served_version=2,
                           outcome="promoted", reason="earlier run")  # fmt: skip
    time.sleep(0.01)
    decided_at = dt.datetime.now(dt.UTC)
    assert outcome_after(lake, "trips", W[1], decided_at) is None  # recorded before this decision: not this retrain's
    history.record_outcome(lake, "trips", W[0], run_id="other", registered_version=3, alias="challenger", served_version=2,
                           outcome="challenger", reason="another window")  # fmt: skip
    assert outcome_after(lake, "trips", W[1], decided_at) is None
    history.record_outcome(lake, "trips", W[1], run_id="r", registered_version=4, alias="champion", served_version=1,
                           outcome="reinstated", reason="earlier champion v1 reinstated")  # fmt: skip
    got = outcome_after(lake, "trips", W[1], decided_at)
    assert (got["outcome"], got["registered_version"], got["served_version"], got["run_id"]) == ("reinstated", 4, 1, "r")
