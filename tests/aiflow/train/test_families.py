"""Model families as candidates: on the tiny spec and a regression shape, the scikit-learn model wins when it is
better, beats the naive reference, is stored as skops (no pickle) and loads through the one interface; edited
bundles are refused naming the file; a home copied elsewhere resolves its registered location."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import polars as pl
import pytest

from aiflow.evaluation.metrics import compute_metrics
from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.bundle import BundleIntegrityError, load_bundle
from aiflow.models.families import TRUSTED_TYPES, UntrustedModelError, load_sklearn
from aiflow.models.registry import Registry
from aiflow.storage.artifacts import ArtifactStore, sha256_bytes
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams
from aiflow.train.loop import train
from aiflow.train.request import pinned_request
from tests.aiflow.train.test_baseline import regression_spec, write_features

#: A network that cannot learn much in one epoch against trees that find the planted signal at once.
WEAK_NET = dict(epochs=1, batch_size=512, hidden=[4], embedding_dim=2, learning_rate=1e-4, baseline_max_rows=2000)


def _train(tmp_path, spec, **params):
    write_features(tmp_path, spec, "categorical")
    lake = Lake(tmp_path / "lake")
    request = pinned_request(lake, spec, TrainParams(**{**WEAK_NET, **params}), str(tmp_path / "artifacts"), "fam", "test")
    return lake, request, train(request, log=lambda _: None)


@pytest.fixture(params=["classification", "regression"])
def trained(request, tmp_path, tiny_spec):
    spec = tiny_spec if request.param == "classification" else regression_spec()
    lake, req, result = _train(tmp_path, spec)
    return spec, lake, req, result, tmp_path


def _valid(lake: Lake, spec) -> pl.DataFrame:
    return lake.scan(Tables.features(spec.name)).filter(pl.col("event_date") >= spec.split.valid_from).filter(
        pl.col("event_date") < spec.split.test_from
    ).collect()


def test_the_better_sklearn_model_is_the_candidate_and_beats_the_naive_reference(trained, monkeypatch):
    spec, lake, _, result, _ = trained
    metric, higher = ("roc_auc", True) if spec.problem_type == "classification" else ("rmse", False)
    assert set(result.family_metrics) == {"pytorch", "sklearn"}
    net, trees, naive = result.family_metrics["pytorch"][metric], result.family_metrics["sklearn"][metric], result.naive_metrics[metric]
    assert (trees > net) if higher else (trees < net)
    assert result.family == "sklearn" and result.metrics == result.family_metrics["sklearn"]
    assert (trees > naive + 0.1) if higher else (trees < 0.5 * naive)

    folder = tmp_path_of(result)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.json", "model.skops", "preprocessing.json", "reference.json", "reference.parquet", "spec.json"]
    assert json.loads((folder / "manifest.json").read_text())["family"] == "sklearn"

    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was loaded")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    model = load_model(ModelRef("candidate", result.artifact_uri, result.artifact_sha256))
    assert model.family == "sklearn"
    rows = _valid(lake, spec)
    scores = model.predict(rows)
    reproduced = compute_metrics(rows[spec.target.name].to_numpy(), scores, spec.problem_type)
    assert reproduced[metric] == pytest.approx(result.metrics[metric], rel=1e-6)
    # the one interface: raw inputs through the same encoder give the same arrays shape as the features path
    cat, num = model.inputs(rows)
    assert np.array_equal(model.predict_arrays(cat, num), scores)


def tmp_path_of(result):
    from pathlib import Path

    return Path(result.artifact_uri)


def test_families_are_configurable(tmp_path, tiny_spec):
    _, _, result = _train(tmp_path, tiny_spec, families=["pytorch"])
    assert result.family == "pytorch" and set(result.family_metrics) == {"pytorch"}
    assert (tmp_path_of(result) / "weights.pt").exists()


def test_an_edited_model_json_with_a_matching_manifest_is_refused_naming_it(trained):
    spec, _, _, result, tmp_path = trained
    copy = tmp_path / "copy" / "bundle"
    shutil.copytree(result.artifact_uri, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["problem_type"] = "regression" if spec.problem_type == "classification" else "classification"
    (copy / "model.json").write_text(json.dumps(meta))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.json"]["sha256"] = sha256_bytes((copy / "model.json").read_bytes())
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match=r"model\.json"):
        load_bundle(ArtifactStore(copy), "", result.artifact_sha256, result.bundle_files)
    with pytest.raises(BundleIntegrityError, match=r"manifest\.json differs"):  # without per-file records: the manifest
        load_bundle(ArtifactStore(copy), "", result.artifact_sha256)


def test_a_copied_home_loads_its_registered_model_by_relative_location(trained):
    spec, lake, req, result, tmp_path = trained
    registry = Registry(lake)
    mv = registry.register(
        spec.name, artifact_uri=result.artifact_uri, artifact_sha256=result.artifact_sha256, training_table=req.features_uri,
        training_version=req.data_version, metrics={}, baseline_metrics=result.naive_metrics, params=result.params,
        gate_results={}, gates_passed=True, reason="test", family=result.family, family_metrics=result.family_metrics,
        bundle_files=result.bundle_files, artifact_root=str(tmp_path / "artifacts"),
    )  # fmt: skip
    assert not mv.artifact_uri.startswith("/") and mv.family == "sklearn"
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "lake", moved / "lake")
    shutil.copytree(tmp_path / "artifacts", moved / "artifacts")
    shutil.rmtree(tmp_path / "artifacts")  # the old location is gone
    again = Registry(Lake(moved / "lake")).get(spec.name, mv.version)
    model = load_model(ModelRef.of(again, str(moved / "artifacts")))
    assert model.predict(_valid(Lake(moved / "lake"), spec)).shape[0] > 0
    assert again.bundle_files == result.bundle_files


def test_an_untrusted_type_in_a_skops_file_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    data = sio.dumps(FunctionTransformer(print))  # a reference to an arbitrary callable
    with pytest.raises(UntrustedModelError, match="model.skops holds types outside the trusted list"):
        load_sklearn(data, "x/model.skops")
    assert "builtins.print" not in TRUSTED_TYPES
