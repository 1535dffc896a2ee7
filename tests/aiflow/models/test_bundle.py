"""Scope: the format-2 model bundle (``aiflow.models.bundle``) on real files, both families, without a training run: what
a bundle holds (files, manifest, model.json, preprocessing.json; no timestamp, so a re-export keeps its digest), the
digest that anchors it, loading and predicting, a bundle addressed by its path, its URI or at the store's root, and
every refusal — a changed, missing or extra file, a manifest that is not one, a digest recorded for files that do not
match their manifest — with the message naming what differs and nothing deserialised."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import pickle
import re

import numpy as np
import polars as pl
import pytest
import torch

from aiflow.data.encoding import FeatureState, ModelInputs, model_inputs
from aiflow.models.bundle import (
    MANIFEST,
    MODEL,
    PREPROCESSING,
    SKOPS,
    SPEC,
    WEIGHTS,
    BundleIntegrityError,
    bundle_digest,
    load_bundle,
    preprocessing_dict,
    save_bundle,
    save_sklearn_bundle,
    state_from_preprocessing,
    verify_bundle,
)
from aiflow.models.families import UntrustedModelError, categorical_mask, sklearn_matrix
from aiflow.models.network import ModelConfig, TabularModel, predict_raw, to_predictions
from aiflow.models.sklearn_fast import SMALL_BATCH
from aiflow.spec import DatasetSpec, parse_spec
from aiflow.storage.artifacts import ArtifactStore, sha256_bytes
from tests.aiflow.tiny import TINY


@functools.cache
def tiny_spec() -> DatasetSpec:
    """Parsed on first use, never at import: parsing runs Polars, and mutmut's fork server imports this module before
    forking a child per mutant; a child forked after Polars started its thread pool hangs in its first Polars call."""
    return parse_spec(TINY, "tiny")


STATE = FeatureState(
    vocab={"carrier": ["AA", "UA", "DL"], "origin": ["JFK", "EWR"]},
    stats={"distance": (500.0, 200.0), "seats": (120.0, 30.0), "weather_temp": (8.0, 3.0)},
    rows=10,
)
#: The model inputs of the tiny spec under STATE (what ``model_inputs`` gives; checked below).
INPUTS = ModelInputs(
    ["cat_carrier", "cat_origin", "cal_hour", "cal_weekday", "cal_month", "cal_day_of_year"],
    [4, 3, 24, 8, 13, 367],
    ["num_distance", "num_seats", "num_weather_temp"],
)
LINEAGE = {"training_table": "/lake/features/trips", "training_version": 3}
REFERENCE = {"reference.json": b'{"columns": []}'}
#: Every file of the PyTorch bundle these tests write.
ALL = [WEIGHTS, MODEL, PREPROCESSING, SPEC, "reference.json", MANIFEST]


def features(n: int = 6) -> pl.DataFrame:
    """Rows of the features table for the tiny spec (codes and standardised numbers), deterministic."""
    rng = np.random.default_rng(7)
    cols = {c: rng.integers(0, card, n) for c, card in zip(INPUTS.categorical, INPUTS.cardinalities, strict=True)}
    cols |= {c: rng.normal(size=n).astype(np.float32) for c in INPUTS.numeric}
    return pl.DataFrame(cols)


def pytorch_bundle(store: ArtifactStore, path: str = "trips/candidates/a", *, extra=REFERENCE):
    config = ModelConfig("classification", INPUTS.categorical, INPUTS.cardinalities, INPUTS.numeric, [4], 2, 0.0, "late")
    torch.manual_seed(0)
    network = TabularModel(config).eval()
    uri, digest = save_bundle(
        store, path, model=network, config=config, params={"epochs": 2}, state=STATE, spec=tiny_spec(), spec_dict=TINY,
        lineage=LINEAGE, extra_files=extra,
    )  # fmt: skip
    return uri, digest, network, config


def sklearn_bundle(store: ArtifactStore, path: str = "trips/candidates/s", *, problem: str = "classification"):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    frame = features(60)
    x = sklearn_matrix(frame.select(INPUTS.categorical).to_numpy(), frame.select(INPUTS.numeric).to_numpy())
    y = (x[:, -1] > 0).astype(int) if problem == "classification" else x[:, -1] * 3.0
    kind = HistGradientBoostingClassifier if problem == "classification" else HistGradientBoostingRegressor
    mask = categorical_mask(INPUTS.categorical, INPUTS.cardinalities, INPUTS.numeric)
    estimator = kind(max_iter=5, min_samples_leaf=5, categorical_features=mask, random_state=0).fit(x, y)
    target = {"name": "delay_minutes", "source": "delay", "kind": "identity", "when_null": "quarantine"}
    spec = tiny_spec() if problem == "classification" else parse_spec({**TINY, "problem_type": problem, "target": target}, "tiny")
    uri, digest = save_sklearn_bundle(
        store, path, model=estimator, inputs=INPUTS, target=spec.target.name, params={"max_iter": 5}, state=STATE, spec=spec,
        spec_dict=TINY, lineage=LINEAGE, extra_files=REFERENCE,
    )  # fmt: skip
    return uri, digest, estimator


def flip_a_byte(store: ArtifactStore, path: str, name: str) -> None:
    file = store.root + f"/{path}/{name}"
    with open(file, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0x01
    with open(file, "wb") as f:
        f.write(bytes(data))


def hashes_on_disk(store: ArtifactStore, path: str, names) -> dict[str, str]:
    return {n: sha256_bytes(store.get_bytes(f"{path}/{n}")) for n in names}


# ------------------------------------------------------------------------- what a bundle holds
def test_bundle_digest_is_the_sha256_of_the_sorted_name_hash_list():
    assert bundle_digest({"b": "2", "a": "1"}) == hashlib.sha256(b'[["a", "1"], ["b", "2"]]').hexdigest()
    assert bundle_digest({"a": "1", "b": "2"}) == bundle_digest({"b": "2", "a": "1"})  # the order files were written in does not count
    assert bundle_digest({"a": "1", "b": "2"}) != bundle_digest({"a": "1", "b": "3"}) != bundle_digest({"a": "1", "c": "2"})


def test_a_pytorch_bundle_holds_its_files_a_manifest_of_them_and_the_digest_of_all(tmp_path):
    store = ArtifactStore(tmp_path)
    uri, digest, _, config = pytorch_bundle(store)
    assert uri == f"{tmp_path.resolve()}/trips/candidates/a"
    names = [WEIGHTS, MODEL, PREPROCESSING, SPEC, "reference.json"]
    assert sorted(p.name for p in (tmp_path / "trips/candidates/a").iterdir()) == sorted([*names, MANIFEST])
    raw = {n: store.get_bytes(f"trips/candidates/a/{n}") for n in [*names, MANIFEST]}
    manifest = json.loads(raw[MANIFEST])
    assert manifest == {
        "format": 2,
        "family": "pytorch",
        "files": {n: {"sha256": sha256_bytes(raw[n]), "bytes": len(raw[n])} for n in names},
        "lineage": LINEAGE,
    }
    assert digest == bundle_digest({n: sha256_bytes(data) for n, data in raw.items()})
    assert json.loads(raw[MODEL]) == {
        "format": 2, "family": "pytorch", "architecture": config.to_dict(), "params": {"epochs": 2}, "torch": torch.__version__,
    }  # fmt: skip
    assert json.loads(raw[SPEC]) == json.loads(json.dumps(TINY))
    assert raw["reference.json"] == REFERENCE["reference.json"]
    # written as the stdlib writes it, sorted and indented, so the bytes (and the digest) are stable
    assert raw[MODEL] == json.dumps(json.loads(raw[MODEL]), indent=2, sort_keys=True).encode()
    assert pytorch_bundle(store, "trips/candidates/again")[1] == digest  # a re-export of the same model: the same digest


def test_preprocessing_json_records_the_state_and_reads_back_as_it():
    assert preprocessing_dict(STATE, tiny_spec()) == {
        "vocab": {"carrier": ["AA", "UA", "DL"], "origin": ["JFK", "EWR"]},
        "stats": {c: {"mean": m, "std": s} for c, (m, s) in STATE.stats.items()},
        "fitted_rows": 10,
        "columns": {
            "categorical": ["cat_carrier", "cat_origin"],
            "numeric": ["num_distance", "num_seats", "num_weather_temp"],
            "calendar": ["cal_hour", "cal_weekday", "cal_month", "cal_day_of_year"],
        },
        "unknown_index": 0,
    }
    assert model_inputs(tiny_spec(), STATE) == INPUTS
    back = state_from_preprocessing(json.loads(json.dumps(preprocessing_dict(STATE, tiny_spec()))))
    assert (back.vocab, back.stats, back.rows) == (STATE.vocab, STATE.stats, 10)


def test_extra_files_may_not_replace_the_bundles_own(tmp_path):
    store = ArtifactStore(tmp_path)
    for clash, names in [
        ({MODEL: b"{}"}, "['model.json']"),
        ({MANIFEST: b"{}", SPEC: b"{}", "ok.txt": b""}, "['manifest.json', 'spec.json']"),
    ]:
        with pytest.raises(ValueError, match=f"^extra bundle file\\(s\\) {re.escape(names)} would replace the bundle's own$"):
            pytorch_bundle(store, "clash", extra=clash)
    assert not (tmp_path / "clash").exists()  # refused before anything was written


# ------------------------------------------------------------------------- loading
def test_a_pytorch_bundle_loads_verified_and_predicts_as_the_network(tmp_path):
    store = ArtifactStore(tmp_path)
    uri, digest, network, config = pytorch_bundle(store)
    model = load_bundle(store, "trips/candidates/a", digest)
    assert (model.uri, model.family, model.problem_type, model.digest) == (uri, "pytorch", "classification", digest)
    assert model.config == config and model.model_inputs == INPUTS
    assert model.input_columns == [*INPUTS.categorical, *INPUTS.numeric]
    assert model.file_hashes == hashes_on_disk(store, "trips/candidates/a", ALL)
    assert model.manifest["lineage"] == LINEAGE and model.spec == json.loads(json.dumps(TINY))
    assert model.preprocessing == json.loads(json.dumps(preprocessing_dict(STATE, tiny_spec())))
    state = model.feature_state()
    assert (state.vocab, state.stats, state.rows) == (STATE.vocab, STATE.stats, 10)
    frame = features()
    cat, num = model.inputs(frame)
    expected = to_predictions(predict_raw(network, cat, num, torch.device("cpu")), config)
    assert np.array_equal(model.predict(frame), expected) and np.array_equal(model.predict_arrays(cat, num), expected)
    assert not model.model.training  # loaded for inference (dropout off)
    record = {"carrier": "UA", "origin": "JFK", "distance": 700.0, "seats": 150, "ts": "2013-05-01T12:00:00Z", "weather_temp": 9.0}
    rc, rn = model.raw_inputs([record])
    assert np.array_equal(model.predict_records([record]), to_predictions(predict_raw(network, rc, rn, torch.device("cpu")), config))
    assert rc[0, :2].tolist() == [2, 1]  # UA, JFK: codes from the bundle's own vocabularies


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_a_sklearn_bundle_loads_verified_and_predicts_as_the_estimator(tmp_path, problem):
    store = ArtifactStore(tmp_path)
    uri, digest, estimator = sklearn_bundle(store, problem=problem)
    meta = json.loads(store.get_bytes(f"trips/candidates/s/{MODEL}"))
    import sklearn

    assert meta == {
        "format": 2, "family": "sklearn", "problem_type": problem, "estimator": type(estimator).__name__,
        "inputs": {"categorical": INPUTS.categorical, "cardinalities": INPUTS.cardinalities, "numeric": INPUTS.numeric,
                   "target": "late" if problem == "classification" else "delay_minutes"},
        "params": {"max_iter": 5}, "sklearn": sklearn.__version__,
    }  # fmt: skip
    manifest = json.loads(store.get_bytes(f"trips/candidates/s/{MANIFEST}"))
    assert (manifest["format"], manifest["family"], manifest["lineage"]) == (2, "sklearn", LINEAGE)
    assert sorted(manifest["files"]) == sorted([SKOPS, MODEL, PREPROCESSING, SPEC, "reference.json"])
    assert json.loads(store.get_bytes(f"trips/candidates/s/{SPEC}")) == json.loads(json.dumps(TINY))
    assert store.get_bytes("trips/candidates/s/reference.json") == REFERENCE["reference.json"]
    model = load_bundle(store, uri, digest)
    assert (model.uri, model.family, model.problem_type, model.digest, model.config) == (uri, "sklearn", problem, digest, None)
    assert model.model_inputs == INPUTS and type(model.model) is type(estimator)
    for n in (20, SMALL_BATCH + 1):  # a small batch (compiled trees) and a large one (scikit-learn itself)
        frame = features(n)
        x = sklearn_matrix(*model.inputs(frame))
        expected = estimator.predict_proba(x)[:, 1] if problem == "classification" else estimator.predict(x)
        assert np.allclose(model.predict(frame), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("path", ["trips/candidates/a", "X/candidates/bX"])  # any folder name: its first or last letter too
def test_a_bundle_is_found_by_its_path_its_uri_or_at_the_root_of_the_store(tmp_path, path):
    store = ArtifactStore(tmp_path)
    uri, digest, *_ = pytorch_bundle(store, path)
    for where in (path, path + "/", uri, uri + "/"):
        verified = verify_bundle(store, where, digest.upper())  # the digest is compared case-insensitively
        assert (verified.uri, verified.digest, verified.family) == (uri, digest, "pytorch")
        assert sorted(verified.raw) == sorted([WEIGHTS, MODEL, PREPROCESSING, SPEC, "reference.json"])
    assert load_bundle(store, path + "/", digest).uri == uri
    at_root = ArtifactStore(tmp_path / path)  # e.g. a bundle copied on its own
    verified = verify_bundle(at_root, "", digest)
    assert verified.uri == uri and load_bundle(at_root, "", digest).digest == digest


# ------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("target", [WEIGHTS, MODEL, PREPROCESSING, SPEC, "reference.json"])
def test_a_changed_file_is_refused_naming_it_with_and_without_the_registrys_file_hashes(tmp_path, target):
    store = ArtifactStore(tmp_path)
    uri, digest, *_ = pytorch_bundle(store)
    recorded = hashes_on_disk(store, "trips/candidates/a", ALL)
    flip_a_byte(store, "trips/candidates/a", target)
    now = bundle_digest(hashes_on_disk(store, "trips/candidates/a", recorded))
    message = f"{uri}: {target} differs from the registered bundle (digest {now}, expected {digest}): refusing to load it"
    for files in (recorded, None):  # the registry's per-file hashes, or the manifest's
        with pytest.raises(BundleIntegrityError) as raised:
            load_bundle(store, "trips/candidates/a", digest, files)
        assert str(raised.value) == message


def test_two_changed_files_are_both_named(tmp_path):
    store = ArtifactStore(tmp_path)
    _, digest, *_ = pytorch_bundle(store)
    recorded = hashes_on_disk(store, "trips/candidates/a", ALL)
    flip_a_byte(store, "trips/candidates/a", SPEC)
    flip_a_byte(store, "trips/candidates/a", WEIGHTS)
    for files in (recorded, None):
        with pytest.raises(BundleIntegrityError, match=r"/a: spec\.json, weights\.pt differ from the registered bundle \(digest"):
            verify_bundle(store, "trips/candidates/a", digest, files)


def test_a_file_the_registry_recorded_and_the_manifest_dropped_is_named_by_verify_and_load(tmp_path):
    """A manifest rewritten without one file (and that file left out): the registry's record names both."""
    store = ArtifactStore(tmp_path)
    _, digest, *_ = pytorch_bundle(store)
    recorded = hashes_on_disk(store, "trips/candidates/a", ALL)
    manifest = json.loads(store.get_bytes(f"trips/candidates/a/{MANIFEST}"))
    del manifest["files"]["reference.json"]
    store.put_bytes(f"trips/candidates/a/{MANIFEST}", json.dumps(manifest).encode())
    for check in (verify_bundle, load_bundle):
        with pytest.raises(BundleIntegrityError, match=r"/a: manifest\.json, reference\.json differ from the registered bundle"):
            check(store, "trips/candidates/a", digest, recorded)
    with pytest.raises(BundleIntegrityError, match=r"/a: manifest\.json differs from the registered bundle"):
        verify_bundle(store, "trips/candidates/a", digest)  # without the registry's record: only the manifest is known to differ


def test_files_that_do_not_match_their_manifest_are_refused_even_under_their_own_digest(tmp_path):
    """The digest is taken over the files as they are; the manifest still names the file it does not describe."""
    store = ArtifactStore(tmp_path)
    pytorch_bundle(store)
    recorded = json.loads(store.get_bytes(f"trips/candidates/a/{MANIFEST}"))["files"][PREPROCESSING]["sha256"]
    flip_a_byte(store, "trips/candidates/a", PREPROCESSING)
    as_they_are = bundle_digest(hashes_on_disk(store, "trips/candidates/a", ALL))
    with pytest.raises(BundleIntegrityError) as raised:
        load_bundle(store, "trips/candidates/a", as_they_are)
    where = store.uri("trips/candidates/a")
    assert str(raised.value) == (
        f"{where}/{PREPROCESSING} does not match the SHA-256 recorded in {MANIFEST} ({recorded}): refusing to load it"
    )


@pytest.mark.parametrize("missing", [WEIGHTS, "reference.json", MANIFEST])
def test_a_missing_file_is_refused_naming_it(tmp_path, missing):
    store = ArtifactStore(tmp_path)
    uri, digest, *_ = pytorch_bundle(store)
    (tmp_path / "trips/candidates/a" / missing).unlink()
    with pytest.raises(BundleIntegrityError) as raised:
        load_bundle(store, "trips/candidates/a", digest)
    assert str(raised.value) == f"bundle {uri} is incomplete: {missing} is missing"


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        (b"not json", "Expecting value"),
        (b"[]", "list indices must be integers"),
        (b'{"format": 2}', "'files'"),
        (b'{"format": 2, "files": []}', "'list' object has no attribute 'items'"),
        (b'{"format": 2, "files": {"weights.pt": "abc"}}', "string indices must be integers"),
        (b'{"format": 2, "files": {"weights.pt": {}}}', "'sha256'"),
    ],
)
def test_a_manifest_that_is_not_one_is_refused_before_anything_else_is_read(tmp_path, manifest, why):
    store = ArtifactStore(tmp_path)
    uri, digest, *_ = pytorch_bundle(store)
    store.put_bytes(f"trips/candidates/a/{MANIFEST}", manifest)
    (tmp_path / "trips/candidates/a" / WEIGHTS).unlink()  # not read: the manifest is refused first
    with pytest.raises(BundleIntegrityError) as raised:
        verify_bundle(store, "trips/candidates/a", digest)
    assert str(raised.value).startswith(f"{uri}/{MANIFEST} is not a bundle manifest (")
    assert why in str(raised.value) and str(raised.value).endswith("): refusing to load it")


def test_a_sklearn_bundle_with_a_changed_model_file_is_refused_before_skops_reads_it(tmp_path):
    store = ArtifactStore(tmp_path)
    uri, digest, _ = sklearn_bundle(store)
    store.put_bytes(f"trips/candidates/s/{SKOPS}", b"not a zip: skops would raise on it")
    with pytest.raises(BundleIntegrityError, match=rf"^{re.escape(uri)}: model\.skops differs from the registered bundle"):
        load_bundle(store, uri, digest)


# ------------------------------------------------------------------------- what verified bytes may still not do
def reseal(store: ArtifactStore, path: str, name: str, data: bytes) -> str:
    """Replace one file and rewrite the manifest to match, as a forger with write access would; return the new digest
    (what a registry fed by that forger would record)."""
    store.put_bytes(f"{path}/{name}", data)
    manifest = json.loads(store.get_bytes(f"{path}/{MANIFEST}"))
    manifest["files"][name] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    store.put_bytes(f"{path}/{MANIFEST}", json.dumps(manifest).encode())
    return bundle_digest(hashes_on_disk(store, path, manifest["files"]) | hashes_on_disk(store, path, [MANIFEST]))


class _Planted:
    """Unpickling this touches a file: the proof that the pickle ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("forced", [False, True])
def test_weights_are_read_as_tensors_only_never_run_as_a_pickle(tmp_path, monkeypatch, forced):
    """Even with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment, which turns torch's own default off."""
    if forced:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    store = ArtifactStore(tmp_path / "store")
    pytorch_bundle(store)
    marker = tmp_path / "the-pickle-ran"
    buffer = io.BytesIO()
    torch.save({"payload": _Planted(marker)}, buffer)
    digest = reseal(store, "trips/candidates/a", WEIGHTS, buffer.getvalue())
    assert verify_bundle(store, "trips/candidates/a", digest).digest == digest  # the bytes are as recorded
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_bundle(store, "trips/candidates/a", digest)
    assert not marker.exists()


def test_an_untrusted_type_in_a_verified_sklearn_bundle_is_refused_naming_the_file(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    store = ArtifactStore(tmp_path)
    uri, *_ = sklearn_bundle(store)
    digest = reseal(store, "trips/candidates/s", SKOPS, sio.dumps(FunctionTransformer(print)))
    with pytest.raises(UntrustedModelError) as raised:
        load_bundle(store, uri, digest)
    assert str(raised.value) == (f"{uri}/{SKOPS} holds types outside the trusted list: ['builtins.print']; refusing to load it")


def test_a_spec_with_dates_as_yaml_loads_them_is_written_as_text_and_loads(tmp_path):
    """``yaml.safe_load`` turns ``2013-10-01`` into a date: spec.json holds its ISO text, and the bundle loads."""
    store = ArtifactStore(tmp_path)
    as_loaded = {**TINY, "split": {"valid_from": dt.date(2013, 10, 1), "test_from": dt.date(2013, 11, 15)}}
    config = ModelConfig("classification", INPUTS.categorical, INPUTS.cardinalities, INPUTS.numeric, [4], 2, 0.0, "late")
    uri, digest = save_bundle(
        store, "d", model=TabularModel(config), config=config, params={"when": dt.date(2024, 5, 1)}, state=STATE,
        spec=tiny_spec(), spec_dict=as_loaded, lineage={"trained_at": dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)},
    )  # fmt: skip
    assert json.loads(store.get_bytes(f"d/{SPEC}"))["split"] == {"valid_from": "2013-10-01", "test_from": "2013-11-15"}
    assert json.loads(store.get_bytes(f"d/{MODEL}"))["params"] == {"when": "2024-05-01"}
    assert json.loads(store.get_bytes(f"d/{MANIFEST}"))["lineage"] == {"trained_at": "2024-05-01 12:00:00+00:00"}
    model = load_bundle(store, uri, digest)
    assert model.spec["split"]["valid_from"] == "2013-10-01" and model.encoder is model.encoder  # compiled once, from spec.json


def test_a_manifest_without_its_format_is_refused_as_an_integrity_error(tmp_path):
    store = ArtifactStore(tmp_path)
    _, digest, *_ = pytorch_bundle(store)
    manifest = json.loads(store.get_bytes(f"trips/candidates/a/{MANIFEST}"))
    del manifest["format"]
    store.put_bytes(f"trips/candidates/a/{MANIFEST}", json.dumps(manifest).encode())
    with pytest.raises(BundleIntegrityError, match="refusing to load it"):
        load_bundle(store, "trips/candidates/a", digest)
