"""The model bundle: a folder in the artifact store that is everything serving needs, and nothing executable.

``<model_name>/candidates/<checkpoint_key>/`` holds

* the model: ``weights.pt`` (PyTorch family: the network's ``state_dict`` only, read with
  ``torch.load(weights_only=True)``) or ``model.skops`` (scikit-learn family: skops, read with an
  explicit trusted-type list; see :mod:`aiflow.models.families`). Never a pickle;
* ``model.json`` – the family, its inputs (architecture for the network) and the run's params;
* ``preprocessing.json`` – the feature state (vocabularies, scaling statistics) and feature columns;
* ``spec.json`` – the dataset spec;
* extra files the caller adds: the reference profile (:mod:`aiflow.models.reference`);
* ``manifest.json`` – the family, SHA-256 and size of each file above, plus the data lineage. Written
  last: a bundle without a manifest is incomplete.

The bundle's **digest** (:func:`bundle_digest`) is the SHA-256 of the sorted ``(file, sha256)`` list
of every file, the manifest included; the registry records it (and each file's SHA-256), and
:func:`load_bundle` checks every file against it *before* deserialising anything, naming the file
that differs. Bundles written before the digest existed (``format`` 1) are anchored by the SHA-256
of ``weights.pt`` and checked against their manifest, as they were.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from aiflow.data.encoding import Encoder, FeatureState, ModelInputs, feature_columns, to_arrays
from aiflow.models.families import PYTORCH, SKLEARN, dump_sklearn, load_sklearn, sklearn_predict
from aiflow.models.sklearn_fast import SklearnPredictor
from aiflow.spec import DatasetSpec, parse_spec
from aiflow.storage.artifacts import ArtifactStore, sha256_bytes

WEIGHTS, SKOPS, MODEL, PREPROCESSING, SPEC, MANIFEST = (
    "weights.pt", "model.skops", "model.json", "preprocessing.json", "spec.json", "manifest.json"
)  # fmt: skip
#: The model file of each family.
MODEL_FILE = {PYTORCH: WEIGHTS, SKLEARN: SKOPS}
FILES = (WEIGHTS, MODEL, PREPROCESSING, SPEC)  # a format-1 (PyTorch-only) bundle
FORMAT = 2


class BundleIntegrityError(RuntimeError):
    """A bundle file is missing or its SHA-256 is not the one expected; nothing was loaded."""


def _json(data: object) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def bundle_digest(file_hashes: Mapping[str, str]) -> str:
    """SHA-256 of the sorted ``(file name, sha256)`` list: one hash that anchors every file of a bundle."""
    return hashlib.sha256(json.dumps(sorted(file_hashes.items())).encode()).hexdigest()


def preprocessing_dict(state: FeatureState, spec: DatasetSpec) -> dict:
    cols = feature_columns(spec)
    return {
        "vocab": state.vocab,
        "stats": {c: {"mean": m, "std": s} for c, (m, s) in state.stats.items()},
        "fitted_rows": state.rows,
        "columns": {"categorical": cols.categorical, "numeric": cols.numeric, "calendar": cols.calendar},
        "unknown_index": 0,
    }


def _write(
    store: ArtifactStore, path: str, family: str, model_files: dict[str, bytes], *, state, spec, spec_dict, lineage,
    extra_files: Mapping[str, bytes] | None = None,
) -> tuple[str, str]:  # fmt: skip
    files = {**model_files, PREPROCESSING: _json(preprocessing_dict(state, spec)), SPEC: _json(spec_dict)}
    clash = sorted(set(extra_files or {}) & {*files, MANIFEST})
    if clash:
        raise ValueError(f"extra bundle file(s) {clash} would replace the bundle's own")
    files |= dict(extra_files or {})  # e.g. the reference profile: in the manifest and the digest like the rest
    for name, data in files.items():
        store.put_bytes(f"{path}/{name}", data)
    manifest = _json(
        {
            "format": FORMAT,
            "family": family,
            "files": {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in files.items()},
            "lineage": lineage,  # no timestamp: a re-export of the same model keeps its digest
        }
    )
    store.put_bytes(f"{path}/{MANIFEST}", manifest)
    hashes = {name: sha256_bytes(data) for name, data in files.items()} | {MANIFEST: sha256_bytes(manifest)}
    return store.uri(path), bundle_digest(hashes)


def save_bundle(
    store: ArtifactStore, path: str, *, model, config, params: dict, state: FeatureState, spec: DatasetSpec, spec_dict: dict,
    lineage: dict, extra_files: Mapping[str, bytes] | None = None,
) -> tuple[str, str]:  # fmt: skip
    """Write a PyTorch-family bundle (plus ``extra_files``) under ``path`` (manifest last); return its URI and its digest."""
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    meta = {"format": FORMAT, "family": PYTORCH, "architecture": config.to_dict(), "params": params, "torch": torch.__version__}
    files = {WEIGHTS: buffer.getvalue(), MODEL: _json(meta)}
    return _write(store, path, PYTORCH, files, state=state, spec=spec, spec_dict=spec_dict, lineage=lineage, extra_files=extra_files)


def save_sklearn_bundle(
    store: ArtifactStore, path: str, *, model, inputs: ModelInputs, target: str, params: dict, state: FeatureState,
    spec: DatasetSpec, spec_dict: dict, lineage: dict, extra_files: Mapping[str, bytes] | None = None,
) -> tuple[str, str]:  # fmt: skip
    """Write a scikit-learn-family bundle (skops, no pickle; plus ``extra_files``) under ``path``; return its URI and its digest."""
    import sklearn

    meta = {
        "format": FORMAT, "family": SKLEARN, "problem_type": spec.problem_type, "estimator": type(model).__name__,
        "inputs": {"categorical": inputs.categorical, "cardinalities": inputs.cardinalities, "numeric": inputs.numeric, "target": target},
        "params": params, "sklearn": sklearn.__version__,
    }  # fmt: skip
    files = {SKOPS: dump_sklearn(model), MODEL: _json(meta)}
    return _write(store, path, SKLEARN, files, state=state, spec=spec, spec_dict=spec_dict, lineage=lineage, extra_files=extra_files)


@dataclass
class LoadedModel:
    """A verified bundle of either family, ready to predict on rows of the features table or on raw records."""

    uri: str
    family: str
    problem_type: str
    model_inputs: ModelInputs
    predictor: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    preprocessing: dict = field(repr=False)
    spec: dict = field(repr=False)
    manifest: dict = field(repr=False)
    digest: str = ""
    file_hashes: dict[str, str] = field(default_factory=dict)
    config: Any = None  # the network's ModelConfig (PyTorch family)
    model: Any = field(default=None, repr=False)

    @property
    def input_columns(self) -> list[str]:
        """The features-table columns the model reads."""
        return [*self.model_inputs.categorical, *self.model_inputs.numeric]

    def feature_state(self) -> FeatureState:
        """The vocabularies and statistics the features were encoded with (to encode new raw rows)."""
        return state_from_preprocessing(self.preprocessing)

    def inputs(self, features: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Model input arrays ``(cat, num)`` for rows of the features table, by the one encoder.

        Raises:
            ValueError: a model input column is missing.
        """
        mi = self.model_inputs
        return to_arrays(features, mi.categorical, mi.cardinalities, mi.numeric)

    @functools.cached_property
    def encoder(self) -> Encoder:
        """The one encoder compiled once for this model (vocabulary dicts, statistics, clip bounds, timezone)."""
        return Encoder.compile(parse_spec(self.spec, f"{self.uri}/{SPEC}"), self.feature_state(), self.model_inputs)

    def raw_inputs(self, records: pl.DataFrame | Sequence[Mapping[str, object]]) -> tuple[np.ndarray, np.ndarray]:
        """Model input arrays for raw records (spec columns, plus ``<table>_<column>`` side values), as training saw them."""
        return self.encoder.arrays(records)

    def predict_arrays(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        """Probabilities of the positive class (classification) or values (regression) for model input arrays."""
        return self.predictor(cat, num)

    def predict(self, features: pl.DataFrame) -> np.ndarray:
        """Probabilities of the positive class (classification) or values (regression), one per features row."""
        return self.predict_arrays(*self.inputs(features))

    def predict_records(self, records: pl.DataFrame | Sequence[Mapping[str, object]]) -> np.ndarray:
        """Predictions for raw records (online serving): the same encoder, then :meth:`predict_arrays`."""
        return self.predict_arrays(*self.raw_inputs(records))


def state_from_preprocessing(preprocessing: Mapping) -> FeatureState:
    """The fitted encoder state a bundle's ``preprocessing.json`` records (the inverse of :func:`preprocessing_dict`)."""
    stats = {c: (s["mean"], s["std"]) for c, s in preprocessing["stats"].items()}
    return FeatureState(vocab=preprocessing["vocab"], stats=stats, rows=preprocessing["fitted_rows"])


def _relative(store: ArtifactStore, path: str) -> str:
    path = path.rstrip("/")
    return path[len(store.root) + 1 :] if path.startswith(store.root + "/") else path


def _get(store: ArtifactStore, path: str, name: str) -> bytes:
    try:
        return store.get_bytes(f"{path}/{name}".lstrip("/"))
    except FileNotFoundError:
        raise BundleIntegrityError(f"bundle {store.uri(path)} is incomplete: {name} is missing") from None


@dataclass(frozen=True)
class VerifiedBundle:
    """The bytes of every file of a bundle, checked against the expected digest (nothing deserialised)."""

    uri: str
    raw: dict[str, bytes]
    manifest: dict
    digest: str
    file_hashes: dict[str, str]

    @property
    def family(self) -> str:
        return self.manifest.get("family") or PYTORCH


def verify_bundle(store: ArtifactStore, path: str, expected: str, files: Mapping[str, str] | None = None) -> VerifiedBundle:
    """Read every file of the bundle at ``path`` and check it against ``expected`` (its digest).

    Args:
        store: the artifact store; ``path`` is relative to it, or its full URI.
        expected: the bundle digest the registry (or the training result) recorded; for a format-1
            bundle, the SHA-256 of ``weights.pt``.
        files: the SHA-256 of each file the registry recorded, when known: names exactly which file differs.

    Raises:
        BundleIntegrityError: a file is missing, or differs from what was recorded. The message names the file.
    """
    path = _relative(store, path)
    where = store.uri(path).rstrip("/")
    manifest_raw = _get(store, path, MANIFEST)
    try:
        manifest = json.loads(manifest_raw)  # plain JSON: safe to parse before the checks
        recorded = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleIntegrityError(f"{where}/{MANIFEST} is not a bundle manifest ({exc}): refusing to load it") from None
    names = list(FILES) if manifest.get("format", 1) < 2 else list(recorded)
    raw = {name: _get(store, path, name) for name in names}
    hashes = {name: sha256_bytes(data) for name, data in raw.items()} | {MANIFEST: sha256_bytes(manifest_raw)}
    expected = expected.lower()
    if manifest.get("format", 1) < 2:  # legacy: the weights are anchored, the rest by the manifest
        if hashes[WEIGHTS] != expected:
            raise BundleIntegrityError(f"{where}/{WEIGHTS} has SHA-256 {hashes[WEIGHTS]}, expected {expected}: refusing to load it")
        digest = expected
    else:
        digest = bundle_digest(hashes)
        if digest != expected:
            if files:
                differ = sorted(n for n in {*files, *hashes} if files.get(n) != hashes.get(n))
            else:
                differ = [n for n in names if hashes[n] != recorded.get(n)] or [MANIFEST]
            raise BundleIntegrityError(
                f"{where}: {', '.join(differ)} differ{'s' if len(differ) == 1 else ''} from the registered bundle "
                f"(digest {digest}, expected {expected}): refusing to load it"
            )
    for name in names:
        if hashes[name] != recorded.get(name):
            raise BundleIntegrityError(
                f"{where}/{name} does not match the SHA-256 recorded in {MANIFEST} ({recorded.get(name)}): refusing to load it"
            )
    return VerifiedBundle(where, raw, manifest, digest, hashes)


def load_bundle(store: ArtifactStore, path: str, expected_sha256: str, files: Mapping[str, str] | None = None) -> LoadedModel:
    """Verify (:func:`verify_bundle`), then load, the bundle at ``path``: either family, one interface.

    Raises:
        BundleIntegrityError: see :func:`verify_bundle`.
        UntrustedModelError: a scikit-learn model file holds a type outside the trusted list.
    """
    bundle = verify_bundle(store, path, expected_sha256, files)
    raw, meta = bundle.raw, json.loads(bundle.raw[MODEL])
    common = dict(
        uri=bundle.uri, family=bundle.family, preprocessing=json.loads(raw[PREPROCESSING]), spec=json.loads(raw[SPEC]),
        manifest=bundle.manifest, digest=bundle.digest, file_hashes=bundle.file_hashes,
    )  # fmt: skip
    if bundle.family == SKLEARN:
        inputs = meta["inputs"]
        model_inputs = ModelInputs(inputs["categorical"], inputs["cardinalities"], inputs["numeric"])
        estimator = load_sklearn(raw[SKOPS], f"{bundle.uri}/{SKOPS}")
        problem = meta["problem_type"]
        return LoadedModel(
            **common, problem_type=problem, model_inputs=model_inputs, model=estimator,
            predictor=SklearnPredictor(estimator, problem, sklearn_predict),
        )  # fmt: skip
    import torch

    from aiflow.models.network import ModelConfig, TabularModel, predict_raw, to_predictions

    config = ModelConfig.from_dict(meta["architecture"])
    network = TabularModel(config)
    network.load_state_dict(torch.load(io.BytesIO(raw[WEIGHTS]), weights_only=True, map_location="cpu"))
    network.eval()
    return LoadedModel(
        **common, problem_type=config.problem_type, config=config, model=network,
        model_inputs=ModelInputs(config.categorical, config.cardinalities, config.numeric),
        predictor=lambda cat, num: to_predictions(predict_raw(network, cat, num, torch.device("cpu")), config),
    )  # fmt: skip
