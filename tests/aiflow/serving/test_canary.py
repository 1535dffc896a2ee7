"""Scope: the canary analysis engine (aiflow.serving.canary) on hand-built inference-log and labels Delta tables."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from aiflow.models.registry import Registry
from aiflow.serving.canary import CanaryPolicy, analyse, apply_decision, decide, variant_stats
from aiflow.serving.feedback import SCHEMA as LABELS_SCHEMA
from aiflow.serving.feedback import labels_table
from aiflow.serving.inference_log import SCHEMA as LOG_SCHEMA
from aiflow.serving.inference_log import log_table
from aiflow.storage.lake import Lake
from tests.aiflow.models.test_registry import register

T0 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
POLICY = CanaryPolicy(min_requests=100, min_labels=50)


def traffic(variant: str, version: int, n: int, *, quality: float, errors: float = 0.0, latency: float = 5.0,
            regression: bool = False, start: dt.datetime = T0, seed: int = 0) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Log rows and labels for ``n`` records of one variant; ``quality`` = share of right answers (or 1/noise sd)."""
    rng = np.random.default_rng(seed)
    log, labels = [], []
    for i in range(n):
        rid = f"{variant}-{seed}-{i}"
        t = start + dt.timedelta(seconds=i)
        if regression:
            y = float(rng.normal(20, 5))
            pred, prob = y + float(rng.normal(0, 1 / quality)), None
        else:
            y = float(i % 2)
            right = rng.random() < quality
            pred = y if right else 1 - y
            prob = (0.6 + 0.3 * rng.random()) if pred == 1 else (0.1 + 0.3 * rng.random())
        status = "error" if rng.random() < errors else "ok"
        log.append({"request_id": rid, "time": t, "date": t.date(), "dataset": "d", "model_version": version, "variant": variant,
                    "input": "{}", "prediction": pred, "probability": prob, "latency_ms": latency * (1 + 0.1 * rng.random()),
                    "status": status})  # fmt: skip
        labels.append({"request_id": rid, "label": y, "received_at": t, "known": True})
    return log, labels


def write(lake: Lake, dataset: str, log: list[dict], labels: list[dict]) -> None:
    for row in log:
        row["dataset"] = dataset
    lake.append(log_table(dataset), pl.DataFrame(log, schema=LOG_SCHEMA), partition_by=["date"])
    if labels:
        lake.append(labels_table(dataset), pl.DataFrame(labels, schema=LABELS_SCHEMA))


def stats_of(champ: dict, can: dict, problem: str = "classification") -> pl.DataFrame:
    regression = problem == "regression"
    l1, y1 = traffic("champion", 1, regression=regression, seed=1, **champ)
    l2, y2 = traffic("canary", 2, regression=regression, seed=2, **can)
    return variant_stats(pl.DataFrame(l1 + l2, schema=LOG_SCHEMA), pl.DataFrame(y1 + y2, schema=LABELS_SCHEMA), problem)


def test_stats_per_variant_join_labels_and_count_errors():
    log, labels = traffic("canary", 2, 200, quality=1.0, errors=0.25, seed=3)
    stats = variant_stats(pl.DataFrame(log, schema=LOG_SCHEMA), pl.DataFrame(labels[:100], schema=LABELS_SCHEMA), "classification")
    row = stats.row(0, named=True)
    assert stats["variant"].to_list() == ["canary"]
    assert row["requests"] == 200
    assert row["errors"] == sum(r["status"] != "ok" for r in log) and 0.15 < row["error_rate"] < 0.35
    assert row["labels"] == sum(r["status"] == "ok" for r in log[:100])  # labelled and ok only
    assert row["accuracy"] == 1.0 and row["roc_auc"] == 1.0
    assert 5.0 <= row["latency_p50_ms"] <= row["latency_p99_ms"] <= 5.5


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_better_canary_promotes_worse_rolls_back(problem):
    good, bad = (0.95, 0.6) if problem == "classification" else (2.0, 0.2)
    action, reason, checks = decide(stats_of({"n": 300, "quality": bad}, {"n": 300, "quality": good}, problem), POLICY, problem)
    assert action == "promote", reason
    assert all(checks.values()) and ("rmse" if problem == "regression" else "roc_auc") in checks
    action, reason, checks = decide(stats_of({"n": 300, "quality": good}, {"n": 300, "quality": bad}, problem), POLICY, problem)
    assert action == "rollback" and ("rmse" if problem == "regression" else "roc_auc") in reason
    assert checks["error_rate"] and checks["latency_p99"]


def test_errors_and_latency_roll_back_without_labels():
    stats = stats_of({"n": 300, "quality": 0.9}, {"n": 300, "quality": 0.9, "errors": 0.2})
    action, reason, checks = decide(stats.with_columns(labels=pl.lit(0, pl.Int64)), POLICY, "classification")
    assert action == "rollback" and "error rate" in reason and not checks["error_rate"]
    stats = stats_of({"n": 300, "quality": 0.9}, {"n": 300, "quality": 0.9, "latency": 20.0})
    action, reason, checks = decide(stats.with_columns(labels=pl.lit(0, pl.Int64)), POLICY, "classification")
    assert action == "rollback" and "p99" in reason and checks == {"error_rate": True, "latency_p99": False}


def test_too_few_records_or_labels_waits():
    action, reason, _ = decide(stats_of({"n": 300, "quality": 0.6}, {"n": 99, "quality": 0.95}), POLICY, "classification")
    assert action == "wait" and "too few records" in reason
    stats = stats_of({"n": 300, "quality": 0.6}, {"n": 300, "quality": 0.95}).with_columns(labels=pl.lit(10, pl.Int64))
    action, reason, _ = decide(stats, POLICY, "classification")
    assert action == "wait" and "too few labels" in reason
    action, _, _ = decide(stats, CanaryPolicy(min_requests=100, require_quality=False), "classification")
    assert action == "promote"


def test_analyse_window_and_apply_through_registry(tmp_path):
    """Regression shape, another dataset name: traffic before the canary was set is left out; rollback keeps the champion."""
    lake = Lake(tmp_path / "lake")
    registry = Registry(lake)
    for seed in ("a", "b"):
        register(registry, seed, name="fares")
    assert analyse(lake, "fares", "regression", POLICY).action == "none"
    registry.promote("fares", 1, reason="test", actor="test", at=T0 - dt.timedelta(hours=2))
    registry.promote("fares", 2, reason="try v2", actor="test", alias="canary", at=T0)
    old, old_labels = traffic("canary", 2, 300, quality=5.0, regression=True, start=T0 - dt.timedelta(hours=1), seed=9)
    champ, champ_labels = traffic("champion", 1, 300, quality=2.0, regression=True, seed=1)
    can, can_labels = traffic("canary", 2, 300, quality=0.2, regression=True, seed=2)
    write(lake, "fares", old + champ + can, old_labels + champ_labels + can_labels)
    decision = analyse(lake, "fares", "regression", POLICY)
    assert decision.since == T0 and decision.canary_version == 2 and decision.champion_version == 1
    assert decision.stats["requests"].to_list() == [300, 300]  # the hour before the canary is not counted
    assert decision.action == "rollback", decision.reason
    events = apply_decision(registry, "fares", decision, actor="tester")
    assert [e.action for e in events] == ["remove"]
    assert registry.aliases("fares") == {"champion": 1}
    assert "rmse" in registry.history("fares", "canary")["reason"][0]
    with pytest.raises(RuntimeError, match="canary alias points at None"):  # the alias moved since the analysis: nothing done
        apply_decision(registry, "fares", decision, actor="tester")


def test_analyse_promotes_through_registry(tmp_path):
    lake = Lake(tmp_path / "lake")
    registry = Registry(lake)
    for seed in ("a", "b"):
        register(registry, seed, name="trips")
    registry.promote("trips", 1, reason="test", actor="test", at=T0 - dt.timedelta(hours=2))
    registry.promote("trips", 2, reason="try v2", actor="test", alias="canary", at=T0)
    champ, champ_labels = traffic("champion", 1, 300, quality=0.7, seed=1)
    can, can_labels = traffic("canary", 2, 300, quality=0.95, seed=2)
    write(lake, "trips", champ + can, champ_labels + can_labels)
    decision = analyse(lake, "trips", "classification", POLICY)
    assert decision.action == "promote", decision.reason
    assert [e.action for e in apply_decision(registry, "trips", decision, actor="tester")] == ["promote", "remove"]
    assert registry.aliases("trips") == {"champion": 2}
    assert registry.history("trips", "champion")["reason"][0].startswith("canary analysis: canary as good as champion")
