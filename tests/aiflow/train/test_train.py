"""Training end to end on real Delta features: metrics, the bundle (load, predict, hash checks), determinism, pinning."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from aiflow.models.bundle import BundleIntegrityError, bundle_digest, load_bundle
from aiflow.storage.artifacts import ArtifactStore, sha256_bytes
from aiflow.storage.lake import Lake, Tables
from aiflow.train.loop import train
from tests.aiflow.train.conftest import START, TEST_FROM, VALID_FROM, make_request, run_data_plane


def valid_rows(lake: Lake, spec, version: int) -> pl.DataFrame:
    """The validation split, read independently of the engine."""
    rows = lake.scan(Tables.features(spec.name), version).filter(pl.col("event_date").is_between(VALID_FROM, TEST_FROM, closed="left"))
    return rows.collect()


def test_training_reports_real_metrics(trained, lake, train_spec):
    request, result, _, lines = trained
    features = lake.scan(Tables.features(train_spec.name), request.data_version).collect()
    assert result.rows_train == features.filter(pl.col("event_date") < VALID_FROM).height
    assert result.rows_valid == valid_rows(lake, train_spec, request.data_version).height
    assert result.rows_train + result.rows_valid < features.height  # the test split is held out

    for name in ("roc_auc", "pr_auc", "log_loss", "accuracy", "f1", "loss", "train_loss"):
        assert math.isfinite(result.metrics[name]), name
    assert 0.0 < result.metrics["roc_auc"] < 1.0
    assert 0.0 < result.metrics["pr_auc"] <= 1.0
    assert {"roc_auc", "pr_auc", "log_loss"} <= set(result.naive_metrics)
    assert result.naive_metrics["roc_auc"] == pytest.approx(0.5)  # a constant ranks nothing
    assert result.family == "pytorch" and result.family_metrics == {"pytorch": result.metrics}
    assert result.epochs_run == request.params.epochs and 1 <= result.best_epoch <= result.epochs_run
    assert result.resumed_from_epoch is None and result.device == "cpu"
    assert (result.features_uri, result.data_version) == (request.features_uri, request.data_version)

    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == [f"{e}/{request.params.epochs}" for e in range(1, request.params.epochs + 1)]
    assert all(all(f"{key}=" in line for key in ("train_loss", "valid_loss", "valid_roc_auc", "rows/s")) for line in epochs)


def test_bundle_loads_and_reproduces_the_reported_metrics(trained, lake, train_spec):
    request, result, store, _ = trained
    model = load_bundle(store, result.artifact_uri, result.artifact_sha256)
    rows = valid_rows(lake, train_spec, request.data_version)
    proba = model.predict(rows)
    assert proba.shape == (rows.height,) and np.all((proba > 0) & (proba < 1))
    # the bundle holds the best epoch's weights: its predictions give the metrics the run reported
    y = rows[train_spec.target.name].to_numpy()
    assert roc_auc_score(y, proba) == pytest.approx(result.metrics["roc_auc"], abs=1e-6)
    assert log_loss(y, proba) == pytest.approx(result.metrics["log_loss"], abs=1e-5)

    folder = Path(result.artifact_uri)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.json", "preprocessing.json", "reference.json", "reference.parquet", "spec.json", "weights.pt"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"]["weights.pt"]["sha256"] == sha256_bytes((folder / "weights.pt").read_bytes())
    hashes = {p.name: sha256_bytes(p.read_bytes()) for p in folder.iterdir()}
    assert result.bundle_files == hashes and result.artifact_sha256 == bundle_digest(hashes)
    lineage = manifest["lineage"]
    assert (lineage["features_uri"], lineage["data_version"], lineage["state_version"]) == (
        request.features_uri, request.data_version, request.state_version,
    )  # fmt: skip
    assert json.loads((folder / "spec.json").read_text()) == request.spec
    state = model.feature_state()
    assert state.vocab["carrier"] and set(state.stats) >= {"distance", "weather_temp"}


@pytest.mark.parametrize("target", ["weights.pt", "preprocessing.json", "model.json"])
def test_tampered_bundle_is_refused_naming_the_file(trained, tmp_path, target):
    _, result, store, _ = trained
    copy = tmp_path / "bundle"
    shutil.copytree(result.artifact_uri, copy)
    data = bytearray((copy / target).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / target).write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=target.replace(".", r"\.")):
        load_bundle(ArtifactStore(tmp_path), "bundle", result.artifact_sha256)


def test_wrong_expected_hash_is_refused(trained):
    _, result, store, _ = trained
    with pytest.raises(BundleIntegrityError, match=r"manifest\.json differs from the registered bundle .* expected 0+"):
        load_bundle(store, result.artifact_uri, "0" * 64)


def test_same_seed_gives_the_same_model(trained, lake, train_spec, tmp_path):
    request, result, _, _ = trained
    again = train(make_request(lake, train_spec, tmp_path, "run-b"), log=lambda _: None)
    assert again.metrics == result.metrics and again.naive_metrics == result.naive_metrics
    assert again.bundle_files["weights.pt"] == result.bundle_files["weights.pt"]  # the key differs, so the manifest does


def test_max_train_rows_is_honoured(lake, train_spec, tmp_path):
    result = train(make_request(lake, train_spec, tmp_path, "small", epochs=1, max_train_rows=700), log=lambda _: None)
    assert result.rows_train == 700


def test_training_reads_the_pinned_version_only(train_landing, train_spec, tmp_path):
    """Rows appended to the training window after the version was chosen do not reach the model."""
    landing = tmp_path / "landing"
    shutil.copytree(train_landing, landing)
    held_back = landing / "flights" / f"{START.replace(day=4).isoformat()}.csv"
    parked = tmp_path / held_back.name
    held_back.rename(parked)
    lake = Lake(tmp_path / "lake")
    pinned = run_data_plane(lake, landing, train_spec)
    before = train(make_request(lake, train_spec, tmp_path / "a", "before", version=pinned, epochs=1), log=lambda _: None)

    parked.rename(held_back)  # the missing day arrives: rows appended inside the training window
    latest = run_data_plane(lake, landing, train_spec)
    assert latest > pinned
    features = Tables.features(train_spec.name)
    train_rows = lambda v: lake.scan(features, v).filter(pl.col("event_date") < VALID_FROM).select(pl.len()).collect().item()  # noqa: E731
    assert train_rows(latest) > train_rows(pinned) == before.rows_train

    after = train(make_request(lake, train_spec, tmp_path / "b", "after", version=pinned, epochs=1), log=lambda _: None)
    assert (after.data_version, after.rows_train, after.rows_valid) == (pinned, before.rows_train, before.rows_valid)
    assert after.metrics == before.metrics and after.bundle_files["weights.pt"] == before.bundle_files["weights.pt"]


def test_features_of_another_state_version_are_refused(lake, train_spec, tmp_path):
    request = make_request(lake, train_spec, tmp_path, "x").model_copy(update={"state_version": 7})
    with pytest.raises(ValueError, match="encoded with feature state version 0"):
        train(request, log=lambda _: None)


def test_missing_version_is_refused(lake, train_spec, tmp_path):
    request = make_request(lake, train_spec, tmp_path, "x").model_copy(update={"data_version": 99})
    with pytest.raises(ValueError, match="at version 99"):
        train(request, log=lambda _: None)
