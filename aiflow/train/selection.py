"""Choosing among trained candidates by their validation metric."""

from __future__ import annotations

import polars as pl

from aiflow.evaluation.metrics import HIGHER_IS_BETTER, PRIMARY
from aiflow.models.metric_names import BASELINE
from aiflow.train.contract import TrainResult


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
    """One row per candidate: its metric, the baseline's, epochs and the hyperparameters that differ."""
    return pl.DataFrame(
        [
            {
                "candidate": r.artifact_uri.rstrip("/").rsplit("/", 1)[-1],
                metric: r.metrics.get(metric),
                f"{BASELINE}{metric}": r.baseline_metrics.get(metric),
                "epochs": r.epochs_run,
                "learning_rate": r.params.learning_rate,
                "hidden": str(r.params.hidden),
                "dropout": r.params.dropout,
            }
            for r in results
        ]
    ).sort(metric, descending=HIGHER_IS_BETTER[metric])
