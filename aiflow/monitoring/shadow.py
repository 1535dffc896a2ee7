"""The challenger in shadow, per monitoring window: its live evidence against the champion, and the verdict applied.

The server scores every request with the ``challenger`` alias in shadow (inference-log variant ``shadow``, never
answered) beside the ``champion``. The evidence of a window is every labelled record *both* scored — joined on the
request id — in that window and the windows before it since the challenger first scored (cumulative, at most
``challenger_windows`` windows). :func:`judge_window` returns the verdict of :mod:`aiflow.monitoring.challenger`
and applies it: ``promote`` makes the challenger the champion and removes the challenger alias, ``retire`` removes
the challenger alias (the champion keeps serving), each with the verdict's sentence as the reason in the alias log.
A window in which the current challenger scored nothing (a re-judged old window) judges nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from aiflow.evaluation.paired import paired_evidence
from aiflow.models.registry import Registry
from aiflow.monitoring import windows
from aiflow.monitoring.challenger import Verdict, challenger_policy_of, judge
from aiflow.monitoring.performance import scored_with_labels
from aiflow.spec import DatasetSpec, window_start_of
from aiflow.storage.lake import Lake

CHAMPION, CHALLENGER = "champion", "challenger"
#: The decisions table's columns about the challenger (``ShadowOutcome.row``).
COLUMNS = ("challenger_version", "challenger_action", "challenger_reason", "challenger_gain", "challenger_gain_low",
           "challenger_gain_high", "challenger_rows", "challenger_windows")  # fmt: skip


@dataclass(frozen=True)
class ShadowOutcome:
    """The verdict on the challenger after one window, and what was applied."""

    challenger: int
    champion: int
    windows: int
    verdict: Verdict
    applied: bool

    def row(self) -> dict:
        e = self.verdict.evidence
        return {
            "challenger_version": self.challenger, "challenger_action": self.verdict.action, "challenger_reason": self.verdict.reason,
            "challenger_gain": e.gain, "challenger_gain_low": e.low, "challenger_gain_high": e.high, "challenger_rows": e.rows,
            "challenger_windows": self.windows,
        }  # fmt: skip


def paired_rows(lake: Lake, spec: DatasetSpec, start: dt.date, *, champion: int, challenger: int) -> pl.DataFrame:
    """The window's records scored by both champion v``champion`` (answered) and challenger v``challenger`` (shadow),
    one row per request id: ``label`` (null while not back), ``champion_score`` and ``challenger_score``."""
    log = windows.scored_log(lake, spec, variants=(CHAMPION, "shadow"), window=start)
    score = "probability" if spec.problem_type == "classification" else "prediction"
    champ = log.filter((pl.col("variant") == CHAMPION) & (pl.col("model_version") == champion))
    shadow = log.filter((pl.col("variant") == "shadow") & (pl.col("model_version") == challenger))
    if not champ.height or not shadow.height:
        return pl.DataFrame(schema={"request_id": pl.String, "label": pl.Float64, "champion_score": pl.Float64, "challenger_score": pl.Float64})
    labelled = scored_with_labels(champ, windows.labels_frame(lake, spec, champ["request_id"]))
    return (
        labelled.select("request_id", "label", pl.col(score).alias("champion_score"))
        .unique("request_id", keep="first")
        .join(shadow.select("request_id", pl.col(score).alias("challenger_score")).unique("request_id", keep="first"), on="request_id")
    )


def judge_window(lake: Lake, spec: DatasetSpec, start: dt.date, *, actor: str, apply: bool = True) -> ShadowOutcome | None:
    """The challenger's verdict after the window starting ``start`` (None: no challenger, or it scored nothing in that
    window), applied to the aliases unless ``apply`` is False."""
    registry = Registry(lake)
    challenger, champion = registry.alias(spec.name, CHALLENGER), registry.alias(spec.name, CHAMPION)
    if challenger is None or champion is None or challenger == champion:
        return None
    policy = challenger_policy_of(spec)
    frames, day = [], start
    for _ in range(policy.max_windows):  # this window and the ones before it, newest first, while the challenger scored
        rows = paired_rows(lake, spec, day, champion=champion, challenger=challenger)
        if not rows.height:
            break
        frames.append(rows)
        day = window_start_of(day - dt.timedelta(days=1), spec.monitoring.window)
    if not frames:
        return None
    rows = pl.concat(frames).filter(pl.col("label").is_not_null())
    metric = "roc_auc" if spec.problem_type == "classification" else "rmse"
    evidence = paired_evidence(rows["label"], rows["champion_score"], rows["challenger_score"], metric, confidence=policy.live_confidence)
    verdict = judge(policy, evidence, windows=len(frames), challenger=challenger, champion=champion)
    applied = False
    if apply and verdict.action == "promote":
        registry.promote(spec.name, challenger, reason=verdict.reason, actor=actor)
        registry.remove_alias(spec.name, CHALLENGER, reason=f"promoted to champion: {verdict.reason}", actor=actor)
        applied = True
    elif apply and verdict.action == "retire":
        registry.remove_alias(spec.name, CHALLENGER, reason=verdict.reason, actor=actor)
        applied = True
    return ShadowOutcome(challenger, champion, len(frames), verdict, applied)


def supersede(lake: Lake, spec: DatasetSpec, outcome: ShadowOutcome, why: str, *, actor: str) -> ShadowOutcome:
    """Retire the challenger of ``outcome`` (kept waiting in shadow) because the world moved past its training data: a
    decisive drop on a window after the one its retrain was decided on (``why`` says which). The champion keeps
    serving; the retrain this window asks for replaces the challenger."""
    reason = f"retire challenger v{outcome.challenger} vs champion v{outcome.champion}: superseded by {why}"
    Registry(lake).remove_alias(spec.name, CHALLENGER, reason=reason, actor=actor)
    return ShadowOutcome(outcome.challenger, outcome.champion, outcome.windows, Verdict("retire", reason, outcome.verdict.evidence), True)
