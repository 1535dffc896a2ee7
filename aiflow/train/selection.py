"""Choosing among trained candidates by their validation metric."""

from __future__ import annotations

import math

import polars as pl

from aiflow.evaluation.metrics import HIGHER_IS_BETTER, PRIMARY
from aiflow.models.families import FAMILIES
from aiflow.models.metric_names import NAIVE
from aiflow.train.contract import TrainResult


def best_family(family_metrics: dict[str, dict[str, float]], problem_type: str) -> str:
    """The family whose primary validation metric is best (ties and undefined metrics: the first in :data:`FAMILIES`).

    Raises:
        ValueError: no family was trained.
    """
    if not family_metrics:
        raise ValueError("no model family was trained: params.families is empty")
    metric, higher = PRIMARY[problem_type]
    order = sorted(family_metrics, key=lambda f: FAMILIES.index(f) if f in FAMILIES else len(FAMILIES))
    ranked = [f for f in order if math.isfinite(family_metrics[f].get(metric, math.nan))]
    if not ranked:
        return order[0]
    return sorted(ranked, key=lambda f: family_metrics[f][metric], reverse=higher)[0]  # stable: ties keep the order


def best_result(results: list[TrainResult], problem_type: str) -> tuple[TrainResult, str]:
    """The best candidate by the problem type's validation metric (ties: the first)."""
    if not results:
        raise ValueError("no candidates to choose from")
    metric, higher = PRIMARY[problem_type]
    missing = [r.artifact_uri for r in results if metric not in r.metrics]
    if missing:
        raise ValueError(f"candidates without validation {metric}: {missing}")
    ranked = sorted(results, key=lambda r: r.metrics[metric], reverse=higher)
    return ranked[0], metric


def sweep_table(results: list[TrainResult], metric: str) -> pl.DataFrame:
    """One row per candidate: its family, its metric, the naive reference's, epochs and the hyperparameters that differ."""
    return pl.DataFrame(
        [
            {
                "candidate": r.artifact_uri.rstrip("/").rsplit("/", 1)[-1],
                "family": r.family,
                metric: r.metrics.get(metric),
                f"{NAIVE}{metric}": r.naive_metrics.get(metric),
                "epochs": r.epochs_run,
                "learning_rate": r.params.learning_rate,
                "hidden": str(r.params.hidden),
                "dropout": r.params.dropout,
            }
            for r in results
        ]
    ).sort(metric, descending=HIGHER_IS_BETTER[metric])
