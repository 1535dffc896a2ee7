"""Candidate selection: the best by the problem type's primary validation metric, its direction, ties, the sweep table."""

from __future__ import annotations

import pytest

from aiflow.train.contract import TrainParams, TrainResult
from aiflow.train.selection import best_family, best_result, sweep_table


def result(name: str, metrics: dict[str, float], baseline: dict[str, float] | None = None, **params) -> TrainResult:
    return TrainResult(
        model_name="trips",
        artifact_uri=f"/artifacts/trips/candidates/{name}/",
        artifact_sha256="0" * 64,
        family="pytorch",
        metrics=metrics,
        family_metrics={"pytorch": metrics},
        naive_metrics=baseline or {},
        epochs_run=3,
        best_epoch=2,
        device="cpu",
        rows_train=100,
        rows_valid=20,
        wall_time_s=1.0,
        features_uri="/lake/features/trips",
        data_version=4,
        params=TrainParams(**params),
    )


def test_classification_picks_the_highest_roc_auc_whatever_the_other_metrics_say():
    candidates = [
        result("a", {"roc_auc": 0.71, "log_loss": 0.40}),
        result("b", {"roc_auc": 0.78, "log_loss": 0.55}),  # worse log loss, best ROC AUC
        result("c", {"roc_auc": 0.64, "log_loss": 0.30}),
    ]
    best, metric = best_result(candidates, "classification")
    assert metric == "roc_auc"
    assert best is candidates[1]


def test_regression_picks_the_lowest_rmse():
    candidates = [result("a", {"rmse": 12.5, "mae": 7.0}), result("b", {"rmse": 9.75, "mae": 8.0}), result("c", {"rmse": 30.0, "mae": 1.0})]
    best, metric = best_result(candidates, "regression")
    assert metric == "rmse"
    assert best is candidates[1]  # a higher-is-better rule would pick c


@pytest.mark.parametrize(("problem_type", "metric", "values", "winner"), [
    ("classification", "roc_auc", [0.6, 0.8, 0.8], 1),
    ("classification", "roc_auc", [0.8, 0.8, 0.6], 0),
    ("regression", "rmse", [5.0, 3.0, 3.0], 1),
    ("regression", "rmse", [3.0, 3.0, 5.0], 0),
])  # fmt: skip
def test_ties_go_to_the_first_candidate(problem_type, metric, values, winner):
    candidates = [result(str(i), {metric: v}) for i, v in enumerate(values)]
    best, _ = best_result(candidates, problem_type)
    assert best is candidates[winner]


def test_a_single_candidate_is_the_best():
    only = result("only", {"rmse": 1.0})
    assert best_result([only], "regression") == (only, "rmse")


def test_no_candidates_or_a_missing_metric_is_an_error():
    with pytest.raises(ValueError, match="no candidates"):
        best_result([], "classification")
    candidates = [result("a", {"roc_auc": 0.9}), result("b", {"log_loss": 0.1})]  # b never reported ROC AUC
    with pytest.raises(ValueError, match=r"roc_auc.*candidates/b/"):
        best_result(candidates, "classification")


def test_sweep_table_ranks_candidates_best_first_with_their_baseline_and_params():
    candidates = [
        result("a", {"rmse": 12.0}, {"rmse": 14.0}, learning_rate=1e-3, hidden=[8]),
        result("b", {"rmse": 9.0}, {"rmse": 14.0}, learning_rate=3e-3, hidden=[16, 8]),
        result("c", {"rmse": 20.0}, {"rmse": 14.0}, learning_rate=1e-2, hidden=[4]),
    ]
    table = sweep_table(candidates, "rmse")
    assert table["candidate"].to_list() == ["b", "a", "c"]  # lower RMSE first
    assert table["rmse"].to_list() == [9.0, 12.0, 20.0]
    assert table["naive_rmse"].to_list() == [14.0, 14.0, 14.0]
    assert table["family"].to_list() == ["pytorch"] * 3
    assert table["learning_rate"].to_list() == [3e-3, 1e-3, 1e-2]
    assert table["hidden"].to_list() == ["[16, 8]", "[8]", "[4]"]

    auc = sweep_table([result("x", {"roc_auc": 0.6}), result("y", {"roc_auc": 0.9})], "roc_auc")
    assert auc["candidate"].to_list() == ["y", "x"]  # higher ROC AUC first


@pytest.mark.parametrize(
    ("problem_type", "metrics", "winner"),
    [
        ("classification", {"pytorch": {"roc_auc": 0.9039}, "sklearn": {"roc_auc": 0.9066}}, "sklearn"),
        ("classification", {"pytorch": {"roc_auc": 0.91}, "sklearn": {"roc_auc": 0.90}}, "pytorch"),
        ("regression", {"pytorch": {"rmse": 5.0}, "sklearn": {"rmse": 4.0}}, "sklearn"),
        ("regression", {"sklearn": {"rmse": 4.0}, "pytorch": {"rmse": 4.0}}, "pytorch"),  # a tie: the first family
        ("classification", {"pytorch": {"log_loss": 0.3}, "sklearn": {"roc_auc": 0.7}}, "sklearn"),  # undefined loses
        ("regression", {"sklearn": {"rmse": 4.0}}, "sklearn"),
    ],
)
def test_the_best_family_on_the_primary_metric_is_the_candidate(problem_type, metrics, winner):
    assert best_family(metrics, problem_type) == winner


def test_no_family_is_an_error():
    with pytest.raises(ValueError, match="no model family"):
        best_family({}, "classification")
