"""Canary analysis: compare the canary with the champion on the logged traffic and promote, roll back or wait.

The window is the traffic since the current ``canary`` alias was set (its latest event in the registry's
alias log). Per variant (``champion``, ``canary``; ``shadow`` rows are left out, they were never answered):
requests (scored records), error rate (``status != "ok"``), latency p50/p99, and, on the ok records whose
label arrived (``labels/<dataset>`` joined on ``request_id``), accuracy and ROC AUC (classification) or RMSE
(regression). The canary's rows are those of the canary's model version.

The policy (:class:`CanaryPolicy`) decides:

* ``wait`` while the canary (or the champion, the reference) has fewer than ``min_requests`` records, or
  fewer than ``min_labels`` labelled records when the quality metric is required, and nothing is failing;
* ``rollback`` (the canary alias is removed, the champion stays) when, on enough records, the canary's error
  rate exceeds the champion's by more than ``error_rate_tolerance``, its p99 latency exceeds
  ``latency_p99_factor`` times the champion's, or, on enough labels, its quality metric is worse by more
  than ``quality_tolerance`` (absolute for accuracy/AUC, relative for RMSE);
* ``promote`` (the canary becomes the champion and the canary alias is removed) when every check passes.

Pure functions on Polars frames (:func:`variant_stats`, :func:`decide`), a reader (:func:`analyse`) and
:func:`apply_decision`, which changes the aliases with the decision's reason in the alias log.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

import polars as pl
from sklearn.metrics import roc_auc_score

from aiflow.models.registry import AliasEvent, Registry
from aiflow.serving.feedback import SCHEMA as LABELS_SCHEMA
from aiflow.serving.feedback import labels_table
from aiflow.serving.holder import CANARY, CHAMPION
from aiflow.serving.inference_log import SCHEMA as LOG_SCHEMA
from aiflow.serving.inference_log import log_table
from aiflow.storage.lake import Lake

Action = Literal["promote", "rollback", "wait", "none"]
VARIANTS = (CHAMPION, CANARY)
#: The quality metric per problem type and whether higher is better.
QUALITY = {"classification": ("roc_auc", True), "regression": ("rmse", False)}


@dataclass(frozen=True)
class CanaryPolicy:
    """Thresholds of the canary decision (see the module docstring)."""

    min_requests: int = 200
    min_labels: int = 50
    require_quality: bool = True
    error_rate_tolerance: float = 0.01
    latency_p99_factor: float = 1.5
    quality_tolerance: float = 0.02

    def __post_init__(self) -> None:
        if self.min_requests < 1 or self.min_labels < 0:
            raise ValueError(f"min_requests must be >= 1 and min_labels >= 0, got {self.min_requests} and {self.min_labels}")
        if self.error_rate_tolerance < 0 or self.quality_tolerance < 0 or self.latency_p99_factor < 1:
            raise ValueError("error_rate_tolerance and quality_tolerance must be >= 0 and latency_p99_factor >= 1")


@dataclass(frozen=True)
class CanaryDecision:
    """What the analysis concluded: the action, why, the per-variant figures and each check."""

    action: Action
    reason: str
    stats: pl.DataFrame
    checks: dict[str, bool] = field(default_factory=dict)
    canary_version: int | None = None
    champion_version: int | None = None
    since: dt.datetime | None = None


STATS_SCHEMA = {
    "variant": pl.String, "requests": pl.Int64, "errors": pl.Int64, "error_rate": pl.Float64,
    "latency_p50_ms": pl.Float64, "latency_p99_ms": pl.Float64, "labels": pl.Int64,
    "accuracy": pl.Float64, "roc_auc": pl.Float64, "rmse": pl.Float64,
}  # fmt: skip


def variant_stats(log: pl.DataFrame, labels: pl.DataFrame, problem_type: str) -> pl.DataFrame:
    """One row per variant present in ``log`` (champion, canary order): the figures of the module docstring.

    Args:
        log: inference-log rows (already restricted to the window and versions to compare).
        labels: ``labels/<dataset>`` rows (``request_id``, ``label``).
        problem_type: ``classification`` (accuracy, ROC AUC from ``probability``) or ``regression`` (RMSE).
    """
    if problem_type not in QUALITY:
        raise ValueError(f"problem_type must be classification or regression, got {problem_type!r}")
    rows = []
    for variant in VARIANTS:
        part = log.filter(pl.col("variant") == variant)
        if not part.height:
            continue
        errors = part.filter(pl.col("status") != "ok").height
        ok = part.filter(pl.col("status") == "ok")
        joined = ok.join(labels.select("request_id", "label"), on="request_id", how="inner")
        row = {
            "variant": variant, "requests": part.height, "errors": errors, "error_rate": errors / part.height,
            "latency_p50_ms": part["latency_ms"].quantile(0.5, "linear"), "latency_p99_ms": part["latency_ms"].quantile(0.99, "linear"),
            "labels": joined.height, "accuracy": None, "roc_auc": None, "rmse": None,
        }  # fmt: skip
        if joined.height:
            y, pred = joined["label"].to_numpy(), joined["prediction"].to_numpy()
            if problem_type == "classification":
                row["accuracy"] = float((y == pred).mean())
                probs = joined["probability"]
                if len(set(y.tolist())) == 2 and probs.null_count() == 0:
                    row["roc_auc"] = float(roc_auc_score(y, probs.to_numpy()))
            else:
                row["rmse"] = float(((y - pred) ** 2).mean() ** 0.5)
        rows.append(row)
    return pl.DataFrame(rows, schema=STATS_SCHEMA)


def quality_metric(stats: pl.DataFrame, problem_type: str) -> tuple[str, bool]:
    """The metric the decision compares and whether higher is better: ROC AUC, or accuracy when AUC is undefined."""
    name, higher = QUALITY[problem_type]
    if name == "roc_auc" and stats["roc_auc"].null_count() > 0:
        return "accuracy", True
    return name, higher


def decide(stats: pl.DataFrame, policy: CanaryPolicy, problem_type: str) -> tuple[Action, str, dict[str, bool]]:
    """The action, its reason and the outcome of each check, from :func:`variant_stats` rows."""
    by = {r["variant"]: r for r in stats.iter_rows(named=True)}
    canary, champion = by.get(CANARY), by.get(CHAMPION)
    if canary is None or champion is None:
        missing = " and ".join(v for v in VARIANTS if v not in by)
        return "wait", f"no {missing} traffic logged since the canary was set", {}
    n = min(canary["requests"], champion["requests"])
    if n < policy.min_requests:
        return "wait", (f"too few records: canary {canary['requests']}, champion {champion['requests']} "
                        f"(at least {policy.min_requests} each)"), {}  # fmt: skip
    checks, failures = {}, []
    limit = champion["error_rate"] + policy.error_rate_tolerance
    checks["error_rate"] = canary["error_rate"] <= limit
    if not checks["error_rate"]:
        failures.append(f"error rate {canary['error_rate']:.4f} > champion {champion['error_rate']:.4f} + {policy.error_rate_tolerance}")
    limit = champion["latency_p99_ms"] * policy.latency_p99_factor
    checks["latency_p99"] = canary["latency_p99_ms"] <= limit
    if not checks["latency_p99"]:
        failures.append(
            f"p99 latency {canary['latency_p99_ms']:.1f} ms > {policy.latency_p99_factor} x champion {champion['latency_p99_ms']:.1f} ms"
        )
    labelled = min(canary["labels"], champion["labels"])
    metric, higher = quality_metric(stats, problem_type)
    quality_known = labelled >= max(policy.min_labels, 1) and canary[metric] is not None and champion[metric] is not None
    if quality_known:
        c, b = canary[metric], champion[metric]
        if higher:
            checks[metric] = c >= b - policy.quality_tolerance
            bound = f"{b:.4f} - {policy.quality_tolerance}"
        else:
            checks[metric] = c <= b * (1 + policy.quality_tolerance)
            bound = f"{b:.4f} x (1 + {policy.quality_tolerance})"
        if not checks[metric]:
            failures.append(f"{metric} {c:.4f} worse than champion's bound {bound} on {labelled} labels")
    if failures:
        return "rollback", "canary worse than champion: " + "; ".join(failures), checks
    if policy.require_quality and not quality_known:
        return "wait", (f"too few labels: canary {canary['labels']}, champion {champion['labels']} "
                        f"(at least {policy.min_labels} each for {metric})"), checks  # fmt: skip
    summary = (f"error rate {canary['error_rate']:.4f} vs {champion['error_rate']:.4f}, p99 {canary['latency_p99_ms']:.1f} "
               f"vs {champion['latency_p99_ms']:.1f} ms")  # fmt: skip
    if quality_known:
        summary += f", {metric} {canary[metric]:.4f} vs {champion[metric]:.4f} on {labelled} labels"
    return "promote", f"canary as good as champion on {n} records: {summary}", checks


def canary_since(registry: Registry, name: str) -> tuple[int | None, dt.datetime | None]:
    """The current canary version of ``name`` and when it was set (None, None without a canary)."""
    version = registry.alias(name, CANARY)
    if version is None:
        return None, None
    events = registry.history(name, CANARY)
    return version, events["set_at"][0]


def analyse(lake: Lake, dataset: str, problem_type: str, policy: CanaryPolicy, *, now: dt.datetime | None = None) -> CanaryDecision:
    """Read the window's traffic and labels of ``dataset`` (model name = dataset) and decide.

    Returns action ``none`` when no canary is set.
    """
    registry = Registry(lake)
    canary, since = canary_since(registry, dataset)
    champion = registry.alias(dataset, CHAMPION)
    if canary is None or since is None:
        return CanaryDecision(
            "none", f"{dataset} has no canary: nothing to analyse", pl.DataFrame(schema=STATS_SCHEMA), champion_version=champion
        )
    window = (pl.col("time") >= since) & (
        (pl.col("variant") == CHAMPION) | ((pl.col("variant") == CANARY) & (pl.col("model_version") == canary))
    )
    if now is not None:
        window &= pl.col("time") <= now
    log = lake.scan_or_empty(log_table(dataset), LOG_SCHEMA).filter(window).collect()
    labels = lake.scan_or_empty(labels_table(dataset), LABELS_SCHEMA).select("request_id", "label").collect()
    stats = variant_stats(log, labels, problem_type)
    action, reason, checks = decide(stats, policy, problem_type)
    return CanaryDecision(action, reason, stats, checks, canary_version=canary, champion_version=champion, since=since)


def apply_decision(registry: Registry, dataset: str, decision: CanaryDecision, *, actor: str) -> list[AliasEvent]:
    """Carry out a ``promote`` or ``rollback`` in the registry, the decision's reason in the alias log.

    ``promote`` makes the canary version the champion, then removes the canary alias; ``rollback`` removes
    the canary alias (the champion is untouched). ``wait`` and ``none`` change nothing.

    Raises:
        RuntimeError: the canary alias moved since the analysis (another canary was set or removed).
    """
    if decision.action not in ("promote", "rollback"):
        return []
    current = registry.alias(dataset, CANARY)
    if current != decision.canary_version:
        raise RuntimeError(
            f"{dataset}: the canary alias points at {current} but the analysis was of v{decision.canary_version}; "
            "nothing changed, run the analysis again"
        )
    events = []
    if decision.action == "promote":
        events.append(registry.promote(dataset, decision.canary_version, reason=f"canary analysis: {decision.reason}", actor=actor))
        events.append(registry.remove_alias(dataset, CANARY, reason=f"canary v{decision.canary_version} promoted to champion", actor=actor))
    else:
        events.append(registry.remove_alias(dataset, CANARY, reason=f"canary analysis rollback: {decision.reason}", actor=actor))
    return [e for e in events if e is not None]
