"""The training engine's parts: streamed splits and sampling, metrics, model config, device choice; a regression run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from aiflow.models.bundle import load_bundle
from aiflow.models.network import ModelConfig, TabularModel, pick_device
from aiflow.spec import demo_spec_path, parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.train.checkpoint import request_fingerprint
from aiflow.train.data import FeatureData
from aiflow.train.loop import train
from tests.aiflow.train.conftest import TEST_FROM, VALID_FROM, make_request, run_data_plane


def rows_of(cat: np.ndarray, num: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows as one float matrix, sorted, for multiset comparisons."""
    matrix = np.hstack([cat.astype(np.float64), num.astype(np.float64), y.astype(np.float64)[:, None]])
    return matrix[np.lexsort(matrix.T[::-1])]


def expected_rows(lake: Lake, spec, data: FeatureData, where: pl.Expr) -> np.ndarray:
    """The split read with Polars, independently of the streaming reader."""
    frame = lake.scan(Tables.features(spec.name)).filter(where).collect()
    inputs = data.inputs
    return rows_of(frame.select(inputs.categorical).to_numpy(), frame.select(inputs.numeric).to_numpy(), frame[inputs.target].to_numpy())


def collect(batches) -> tuple[list[int], np.ndarray, np.ndarray]:
    batches = list(batches)
    cat = np.concatenate([b.cat for b in batches])
    num, y = np.concatenate([b.num for b in batches]), np.concatenate([b.y for b in batches])
    return [len(b) for b in batches], rows_of(cat, num, y), cat


@pytest.mark.parametrize("buffer_rows", [300, 100_000])
def test_each_epoch_streams_every_training_row_once_in_a_seeded_order(lake, train_spec, tmp_path, buffer_rows):
    data = FeatureData(make_request(lake, train_spec, tmp_path, "k"), train_spec, buffer_rows=buffer_rows)
    sizes, rows, first = collect(data.batches("train", 256, epoch=1))
    assert sizes[:-1] == [256] * (len(sizes) - 1) and 0 < sizes[-1] <= 256
    np.testing.assert_array_equal(rows, expected_rows(lake, train_spec, data, pl.col("event_date") < VALID_FROM))
    _, rows2, second = collect(data.batches("train", 256, epoch=2))
    np.testing.assert_array_equal(rows2, rows)  # the same rows ...
    assert not np.array_equal(first, second)  # ... in another order
    np.testing.assert_array_equal(collect(data.batches("train", 256, epoch=1))[2], first)  # seeded: repeatable


def test_validation_stream_holds_exactly_the_validation_rows_in_a_fixed_order(lake, train_spec, tmp_path):
    data = FeatureData(make_request(lake, train_spec, tmp_path, "k"), train_spec)
    _, rows, order = collect(data.batches("valid", 500))
    where = pl.col("event_date").is_between(VALID_FROM, TEST_FROM, closed="left")
    np.testing.assert_array_equal(rows, expected_rows(lake, train_spec, data, where))
    np.testing.assert_array_equal(collect(data.batches("valid", 500))[2], order)


def test_max_train_rows_samples_the_same_rows_every_epoch(lake, train_spec, tmp_path):
    data = FeatureData(make_request(lake, train_spec, tmp_path, "k", max_train_rows=600), train_spec)
    assert data.rows_train == 600 < data.rows_train_available
    _, epoch1, _ = collect(data.batches("train", 128, epoch=1))
    _, epoch2, _ = collect(data.batches("train", 128, epoch=2))
    assert len(epoch1) == 600
    np.testing.assert_array_equal(epoch1, epoch2)
    baseline = data.sample("train", 200, seed=1)  # the baseline's sample comes from those same rows
    sample = rows_of(*baseline)
    assert len(sample) == 200 and all(any(np.array_equal(row, r) for r in epoch1) for row in sample[:20])


def test_model_sizes_embeddings_by_cardinality_and_outputs_one_value_per_row():
    config = ModelConfig("classification", ["a", "b"], [3, 1000], ["x"], hidden=[8], embedding_dim=16, dropout=0.0, target="y")
    assert config.embedding_dims == [3, 16]
    model = TabularModel(config)
    out = model(torch.tensor([[0, 5], [2, 999]]), torch.zeros(2, 1))
    assert out.shape == (2,)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="at least one input"):
        ModelConfig("regression", [], [], [], hidden=[8], embedding_dim=4, dropout=0.0, target="y")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_asking_for_cuda_without_a_gpu_fails_instead_of_running_on_cpu():
    assert pick_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        pick_device("cuda")


def test_checkpoint_fingerprint_ignores_bookkeeping_but_not_params(lake, train_spec, tmp_path):
    request = make_request(lake, train_spec, tmp_path, "k")
    same = request.model_copy(update={"checkpoint_key": "other", "reason": "drift", "code_version": "abc"})
    assert request_fingerprint(same) == request_fingerprint(request)
    assert request_fingerprint(make_request(lake, train_spec, tmp_path, "k", seed=1)) != request_fingerprint(request)


def test_regression_target_trains_and_predicts_in_the_target_units(train_landing: Path, tmp_path):
    data = yaml.safe_load(demo_spec_path().read_text())
    data.update(problem_type="regression", split={"valid_from": VALID_FROM.isoformat(), "test_from": TEST_FROM.isoformat()})
    data["target"] = {"name": "arrival_delay", "source": "arr_delay", "kind": "identity", "when_null": "quarantine"}
    data["quality"]["max_null_rate"] = {"key": 0.0}
    spec = parse_spec(data, "flights regression")
    lake = Lake(tmp_path / "lake")
    run_data_plane(lake, train_landing, spec)
    result = train(make_request(lake, spec, tmp_path / "artifacts", "reg", epochs=2), log=lambda _: None)
    assert {"rmse", "mae", "r2", "loss"} <= set(result.metrics) and {"rmse", "mae"} <= set(result.naive_metrics)
    assert all(math.isfinite(v) for v in result.metrics.values())

    model = load_bundle(ArtifactStore(tmp_path / "artifacts"), result.artifact_uri, result.artifact_sha256)
    rows = lake.scan(Tables.features(spec.name)).filter(pl.col("event_date").is_between(VALID_FROM, TEST_FROM, closed="left")).collect()
    predicted = model.predict(rows)
    y = rows["arrival_delay"].to_numpy()
    assert np.sqrt(np.mean((predicted - y) ** 2)) == pytest.approx(result.metrics["rmse"], rel=1e-4)
    assert abs(predicted.mean() - y.mean()) < 3 * y.std()  # minutes, not standardised units


def test_early_stopping_criterion_follows_the_primary_metric_or_the_loss():
    from aiflow.train.loop import _criterion

    # higher ROC AUC is better: the criterion (lower is better) is its negation
    assert _criterion("metric", "roc_auc", True, 0.6, {"roc_auc": 0.7}) < _criterion("metric", "roc_auc", True, 0.4, {"roc_auc": 0.65})
    assert _criterion("metric", "rmse", False, 9.0, {"rmse": 3.0}) == 3.0
    assert _criterion("loss", "roc_auc", True, 0.4, {"roc_auc": 0.7}) == 0.4
    assert _criterion("metric", "roc_auc", True, 0.5, {}) == 0.5  # undefined metric: fall back to the loss
