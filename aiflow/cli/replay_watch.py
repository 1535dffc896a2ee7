"""What ``aiflow replay`` reads from the lake to know that the daemon has done its part of a step: the server logged the
records, the monitoring decided the windows it owes, a retrain was evaluated and registered, and why a gate refused.

Read-only: nothing here starts a run or changes a table.
"""

from __future__ import annotations

import datetime as dt
import time

import polars as pl

from aiflow.models.candidates import Handoffs
from aiflow.monitoring import history
from aiflow.serving.inference_log import log_table
from aiflow.storage.lake import Lake

#: How long one hop of the daemon may take before the replay gives up (a training run is the longest).
HOP_TIMEOUT = 900.0


def logged(lake: Lake, name: str) -> int:
    """Answered requests in the server's inference log of ``name``: its rows but a shadow's (a challenger in shadow
    logs a second row per request, which must not count as the answered request's own row)."""
    table = log_table(name)
    if not lake.exists(table):
        return 0
    return lake.scan(table).filter(pl.col("variant") != "shadow").select(pl.len()).collect().item()


def windows_to_decide(before: pl.DataFrame, after: pl.DataFrame) -> list[dt.date]:
    """The windows whose decision the daemon owes after this step, as the monitoring sensor sees them: those data time
    just moved past, and the complete ones whose served rows or labels changed (from ``window_status`` before and
    after the step's requests and labels)."""
    held = {r["window_start"]: (r["rows"], r["labelled"], r["complete"]) for r in before.iter_rows(named=True)}
    return [
        r["window_start"]
        for r in after.filter(pl.col("complete")).iter_rows(named=True)
        if held.get(r["window_start"]) != (r["rows"], r["labelled"], True)
    ]


def decided(lake: Lake, name: str, windows: list[dt.date], since: dt.datetime) -> bool:
    """Whether every window of ``windows`` has a decision made since ``since``."""
    if not windows:
        return True
    decided = history.read_decisions(lake, name).filter(pl.col("window_start").is_in(windows) & (pl.col("evaluated_at") >= since))
    return decided["window_start"].n_unique() == len(windows)


def retrain_windows(lake: Lake, name: str) -> dict[dt.date, str]:
    decided = history.read_decisions(lake, name).filter(pl.col("action") == "retrain")
    return dict(zip(decided["window_start"].to_list(), decided["reason"].to_list(), strict=True))


def decision_time(lake: Lake, name: str, window: dt.date) -> dt.datetime:
    return history.read_decisions(lake, name).filter(pl.col("window_start") == window)["evaluated_at"][-1]


def evaluated_after(lake: Lake, name: str, when: dt.datetime) -> bool:
    return any(e.created_at >= when for e in Handoffs(lake).evaluations(name))


def registered_after(lake: Lake, name: str, when: dt.datetime) -> int | None:
    """The version registered for the newest evaluation since ``when`` when it passed its gates (None when it did not)."""
    done = [e for e in Handoffs(lake).evaluations(name) if e.created_at >= when]
    if not done or not done[-1].gates_passed:
        return None
    for _ in range(int(HOP_TIMEOUT)):
        found = [r for r in Handoffs(lake).registrations(name) if r.created_at >= when]
        if found:
            return found[-1].version
        time.sleep(1)
    return None


def outcome_after(lake: Lake, name: str, window: dt.date, when: dt.datetime) -> dict | None:
    """What the retrain of ``window`` ended in, recorded since ``when`` by its champion step (``history.record_outcome``:
    outcome, registered and served versions, alias), or None while the run has not got there."""
    ended = history.read_outcomes(lake, name).filter((pl.col("window_start") == window) & (pl.col("recorded_at") >= when))
    return ended.row(-1, named=True) if ended.height else None


def first_rejected(lake: Lake, name: str) -> bool:
    """Whether a first candidate was evaluated and failed its gates (no champion will come)."""
    evaluations = Handoffs(lake).evaluations(name)
    return bool(evaluations) and not any(e.gates_passed for e in evaluations)


def gate_message(lake: Lake, name: str) -> str:
    """The newest evaluation's failed gates, each with its detail (``latency: 626.6 ms per 1,000 rows …``)."""
    evaluations = Handoffs(lake).evaluations(name)
    if not evaluations:
        return "no evaluation"
    failed = [f"{gate}: {r.get('detail')}" for gate, r in evaluations[-1].gate_results.items() if r.get("state") == "failed"]
    return "; ".join(failed) or "gates failed"
