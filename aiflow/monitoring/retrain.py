"""The retraining policy applied to the monitored windows: signals from the history tables, one decision per window.

The retrain sensor (``sensors/retrain.py``) calls :func:`evaluate_pending`. Every window that has drift
and performance rows and no decision yet is decided in data-time order (so hysteresis, cooldown and the
budget see the earlier ones), with the thresholds calibrated on the serving version's reference. The
decisions table is the state: no wall clock, no sensor cursor, so the same data gives the same decisions
(and a sensor that crashed after deciding re-decides identically; the run key keeps the run single).
"""

from __future__ import annotations

import dataclasses

import polars as pl

from aiflow.evaluation.metrics import PRIMARY
from aiflow.monitoring import history
from aiflow.monitoring.monitor import ONLINE, policy_of
from aiflow.monitoring.policy import Decision, Thresholds, WindowSignals, decide, fallback_thresholds
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Lake


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """A decision with what the sensor needs to act on it."""

    decision: Decision
    run_key: str | None  # set when the decision is to retrain

    def __getattr__(self, name: str):  # window_start, action, reason, signals… of the decision
        return getattr(self.decision, name)


def run_key(dataset: str, decision: Decision) -> str:
    return f"{dataset}-retrain-{decision.window_start.isoformat()}"


def window_signals(lake: Lake, spec: DatasetSpec) -> list[WindowSignals]:
    """One signal set per monitored window (online), oldest first: weighted drift share, estimated and realized metric."""
    drift = history.drift_summary(lake, spec.name).filter(pl.col("source") == ONLINE)
    if not drift.height:
        return []
    metric = PRIMARY[spec.problem_type][0]
    perf = history.read_performance(lake, spec.name)
    keys = ["window_start", "model_version"]
    if perf.height:
        cols = [c for c in (metric, f"estimated_{metric}", "labelled") if c in perf.columns]
        drift = drift.join(perf.select(*keys, *cols), on=keys, how="left")
    # one row per window: the version that served most of it (a window computed again under another version keeps both)
    drift = drift.sort("window_start", "rows", "model_version").unique("window_start", keep="last")
    out = []
    for row in drift.sort("window_start").iter_rows(named=True):
        out.append(
            WindowSignals(
                window_start=row["window_start"], window_end=row["window_end"], model_version=int(row["model_version"]),
                rows=int(row["rows"] or 0), labelled=int(row.get("labelled") or 0), drift_share=row["weighted_drift_share"],
                estimated_metric=row.get(f"estimated_{metric}"), realized_metric=row.get(metric),
            )  # fmt: skip
        )
    return out


def _thresholds(lake: Lake, spec: DatasetSpec, version: int) -> Thresholds:
    saved = history.read_thresholds(lake, spec.name, version)
    if saved is not None:
        return Thresholds.from_dict(saved)
    return fallback_thresholds(policy_of(spec), PRIMARY[spec.problem_type][0])


def evaluate_pending(lake: Lake, spec: DatasetSpec, *, running: bool, evaluator: str) -> list[Evaluated]:
    """Decide every monitored window without a decision (oldest first), record the decisions, return them."""
    signals = window_signals(lake, spec)
    done = history.read_decisions(lake, spec.name)
    decided = set(done["window_start"].to_list())
    past = [Decision.from_row(r) for r in done.iter_rows(named=True)]
    policy = policy_of(spec)
    out: list[Evaluated] = []
    for i, window in enumerate(signals):
        if window.window_start in decided:
            continue
        # the history of the serving version only: a new champion starts its hysteresis afresh
        own = [s for s in signals[: i + 1] if s.model_version == window.model_version]
        decision = decide(policy, _thresholds(lake, spec, window.model_version), own, past, running=running)
        key = run_key(spec.name, decision) if decision.action == "retrain" else None
        out.append(Evaluated(decision, key))
        past.append(decision)
        decided.add(window.window_start)
        if decision.action == "retrain":
            running = True  # the run this decision requests is now in flight
    history.append_decisions(lake, spec.name, [e.decision.to_row() | {"run_key": e.run_key, "evaluator": evaluator} for e in out])
    return out
