"""Scope: the small-batch paths behind ``aiflow serve`` (issue 22, "Serving fast on real models") answer exactly what the
reference path gives on the same raw records, records with missing values and categories the model never saw, on the
tiny spec (trips, classification): a scikit-learn champion answers the estimator's own ``predict_proba`` on the Polars
encoder's arrays (single-record requests and one 100-record request); the PyTorch champion answers, one record at a
time, what the network gives on the Polars encoder's arrays of that record."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from aiflow.data.encoding import FeatureState, model_inputs, polars_raw_to_arrays, to_arrays
from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.bundle import save_sklearn_bundle
from aiflow.models.families import categorical_mask, sklearn_matrix, sklearn_predict
from aiflow.models.registry import Registry
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Tables
from tests.aiflow.serving.conftest import Home, record


def register_sklearn(home: Home) -> int:
    """A HistGradientBoosting model fitted on the home's trips features (labels from the categories, with noise), registered and promoted champion."""
    spec, lake = home.specs["trips"], home.lake
    state = FeatureState.from_frame(lake.scan(Tables.feature_state("trips")).collect())
    inputs = model_inputs(spec, state)
    features = lake.scan(Tables.features("trips")).collect()
    cat, num = to_arrays(features, inputs.categorical, inputs.cardinalities, inputs.numeric)
    # labels from the carrier and the origin, plus noise: the trees split on the categorical inputs and on the numeric ones
    rng = np.random.default_rng(0)
    y = ((cat[:, inputs.categorical.index("cat_carrier")] == 1) | (cat[:, inputs.categorical.index("cat_origin")] == 2)) ^ (rng.random(len(cat)) < 0.3)
    model = HistGradientBoostingClassifier(max_iter=20, min_samples_leaf=2, random_state=0,
                                           categorical_features=categorical_mask(inputs.categorical, inputs.cardinalities, inputs.numeric))  # fmt: skip
    model.fit(sklearn_matrix(cat, num), y)
    uri, sha = save_sklearn_bundle(ArtifactStore(home.artifacts), "trips/candidates/hgb", model=model, inputs=inputs, target=spec.target.name,
                                   params={}, state=state, spec=spec, spec_dict=spec.model_dump(mode="json"), lineage={})  # fmt: skip
    registry = Registry(lake)
    mv = registry.register("trips", artifact_uri=uri, artifact_sha256=sha, training_table=lake.uri(Tables.features("trips")),
                           training_version=lake.version(Tables.features("trips")), metrics={}, baseline_metrics={}, params={},
                           gate_results={}, gates_passed=True, reason="test", family="sklearn", artifact_root=str(home.artifacts))  # fmt: skip
    registry.promote("trips", mv.version, reason="test", actor="test")
    return mv.version


def records() -> list[dict]:
    """Demo-shaped records: plain ones, missing values (seats, the weather), unseen carriers and origins, other hours."""
    out = [record(i) for i in range(9)]
    out += [record(i, seats=None) for i in range(3)] + [record(i, weather_temp=None) for i in range(3)]
    out += [record(i, carrier="ZZ") for i in range(3)] + [record(i, origin="XYZ", seats=None) for i in range(3)]
    out += [record(i, ts=f"2013-01-0{1 + i % 3}T{(7 * i) % 24:02d}:05:00Z", distance=50.0 * i) for i in range(12)]
    return out


def test_a_sklearn_champion_answers_exactly_the_estimators_own_probabilities(home: Home, serve):
    version = register_sklearn(home)
    registry = Registry(home.lake)
    model = load_model(ModelRef.of(registry.get("trips", version), str(home.artifacts)))
    assert model.family == "sklearn" and model.predictor.compiled  # the small-batch path is the one under test
    recs = records()
    cat, num = polars_raw_to_arrays(recs, model.feature_state(), home.specs["trips"], model.model_inputs)  # the reference encoder
    expected = sklearn_predict(model.model, cat, num, "classification")  # the estimator's own predict_proba
    assert len(set(expected.tolist())) > 5  # the trees split: the cases below are told apart
    server = serve(home)
    with server.client() as c:
        singles = []
        for r in recs:
            answer = c.post("/v1/predict", json={"dataset": "trips", "records": [r]})
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == version
            singles.append(answer.json()["predictions"][0]["probability"])
        hundred = [recs[i % len(recs)] for i in range(100)]
        many = c.post("/v1/predict", json={"dataset": "trips", "records": hundred}).json()["predictions"]
    assert singles == expected.tolist()
    assert [p["probability"] for p in many] == [expected[i % len(recs)] for i in range(100)]
    assert [p["label"] for p in many] == [int(expected[i % len(recs)] >= 0.5) for i in range(100)]
    # and the in-process small-batch paths agree with the same reference, one record at a time
    assert np.array_equal(np.concatenate([model.predict_records([r]) for r in recs]), expected)


def test_a_pytorch_champion_answers_single_records_as_the_polars_encoder_path(home: Home, serve):
    registry = Registry(home.lake)
    model = load_model(ModelRef.of(registry.get("trips", registry.alias("trips", "champion")), str(home.artifacts)))
    assert model.family == "pytorch"
    recs = records()
    assert all(model.encoder.fast_arrays([r]) is not None for r in recs)  # the encoder's fast path is the one under test
    state, spec = model.feature_state(), home.specs["trips"]
    expected = [float(model.predict_arrays(*polars_raw_to_arrays([r], state, spec, model.model_inputs))[0]) for r in recs]
    assert len(set(expected)) > 5
    server = serve(home)
    with server.client() as c:
        answers = [c.post("/v1/predict", json={"dataset": "trips", "records": [r]}).json()["predictions"][0]["probability"] for r in recs]
    assert answers == expected
