"""The model bundle: a folder in the artifact store that is everything serving needs, and nothing executable.

``<model_name>/candidates/<checkpoint_key>/`` holds

* ``weights.pt`` – the network's ``state_dict`` only (``torch.load(weights_only=True)``);
* ``model.json`` – the architecture (:class:`~aiflow.models.network.ModelConfig`) and the run's params;
* ``preprocessing.json`` – the feature state (vocabularies, scaling statistics) and feature columns;
* ``spec.json`` – the dataset spec;
* ``manifest.json`` – SHA-256 and size of each file above, plus the data lineage. Written last: a
  bundle without a manifest is incomplete.

:func:`load_bundle` checks the weights against the SHA-256 the caller expects (from the registry or the
training result) and every file against the manifest *before* deserialising anything.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from aiflow.data.encoding import FeatureState, ModelInputs, feature_columns, raw_to_arrays, to_arrays
from aiflow.models.network import ModelConfig, TabularModel, predict_raw, to_predictions
from aiflow.spec import DatasetSpec, parse_spec
from aiflow.storage.artifacts import ArtifactStore, sha256_bytes

WEIGHTS, MODEL, PREPROCESSING, SPEC, MANIFEST = "weights.pt", "model.json", "preprocessing.json", "spec.json", "manifest.json"
FILES = (WEIGHTS, MODEL, PREPROCESSING, SPEC)
FORMAT = 1


class BundleIntegrityError(RuntimeError):
    """A bundle file is missing or its SHA-256 is not the one expected; nothing was loaded."""


def _json(data: object) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def preprocessing_dict(state: FeatureState, spec: DatasetSpec) -> dict:
    cols = feature_columns(spec)
    return {
        "vocab": state.vocab,
        "stats": {c: {"mean": m, "std": s} for c, (m, s) in state.stats.items()},
        "fitted_rows": state.rows,
        "columns": {"categorical": cols.categorical, "numeric": cols.numeric, "calendar": cols.calendar},
        "unknown_index": 0,
    }


def save_bundle(
    store: ArtifactStore,
    path: str,
    *,
    model: TabularModel,
    config: ModelConfig,
    params: dict,
    state: FeatureState,
    spec: DatasetSpec,
    spec_dict: dict,
    lineage: dict,
) -> tuple[str, str]:
    """Write the bundle under ``path`` (manifest last); return its URI and the SHA-256 of ``weights.pt``."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    files = {
        WEIGHTS: buffer.getvalue(),
        MODEL: _json({"format": FORMAT, "architecture": config.to_dict(), "params": params, "torch": torch.__version__}),
        PREPROCESSING: _json(preprocessing_dict(state, spec)),
        SPEC: _json(spec_dict),
    }
    for name, data in files.items():
        store.put_bytes(f"{path}/{name}", data)
    manifest = {
        "format": FORMAT,
        "files": {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in files.items()},
        "lineage": lineage,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    store.put_bytes(f"{path}/{MANIFEST}", _json(manifest))
    return store.uri(path), manifest["files"][WEIGHTS]["sha256"]


@dataclass
class LoadedModel:
    """A verified bundle, ready to predict on rows of the features table."""

    uri: str
    config: ModelConfig
    model: TabularModel
    preprocessing: dict
    spec: dict
    manifest: dict

    def feature_state(self) -> FeatureState:
        """The vocabularies and statistics the features were encoded with (to encode new raw rows)."""
        stats = {c: (s["mean"], s["std"]) for c, s in self.preprocessing["stats"].items()}
        return FeatureState(vocab=self.preprocessing["vocab"], stats=stats, rows=self.preprocessing["fitted_rows"])

    def inputs(self, features: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Model input arrays ``(cat, num)`` for rows of the features table, by the one encoder.

        Raises:
            ValueError: a model input column is missing.
        """
        config = self.config
        return to_arrays(features, config.categorical, config.cardinalities, config.numeric)

    def raw_inputs(self, records: pl.DataFrame | Sequence[Mapping[str, object]]) -> tuple[np.ndarray, np.ndarray]:
        """Model input arrays for raw records (spec columns, plus ``<table>_<column>`` side values), as training saw them."""
        config = self.config
        inputs = ModelInputs(config.categorical, config.cardinalities, config.numeric)
        return raw_to_arrays(records, self.feature_state(), parse_spec(self.spec, f"{self.uri}/{SPEC}"), inputs)

    def predict_arrays(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        """Probabilities of the positive class (classification) or values (regression) for model input arrays."""
        return to_predictions(predict_raw(self.model, cat, num, torch.device("cpu")), self.config)

    def predict(self, features: pl.DataFrame) -> np.ndarray:
        """Probabilities of the positive class (classification) or values (regression), one per features row."""
        return self.predict_arrays(*self.inputs(features))

    def predict_records(self, records: pl.DataFrame | Sequence[Mapping[str, object]]) -> np.ndarray:
        """Predictions for raw records (online serving): the same encoder, then :meth:`predict_arrays`."""
        return self.predict_arrays(*self.raw_inputs(records))


def _relative(store: ArtifactStore, path: str) -> str:
    path = path.rstrip("/")
    return path[len(store.root) + 1 :] if path.startswith(store.root + "/") else path


def load_bundle(store: ArtifactStore, path: str, expected_sha256: str) -> LoadedModel:
    """Verify, then load, the bundle at ``path`` (relative to the store, or its full URI).

    Raises:
        BundleIntegrityError: a file is missing, or ``weights.pt`` does not hash to ``expected_sha256``,
            or any file does not hash to what the manifest records. The message names the file.
    """
    path = _relative(store, path)
    raw: dict[str, bytes] = {}
    for name in (*FILES, MANIFEST):
        try:
            raw[name] = store.get_bytes(f"{path}/{name}")
        except FileNotFoundError:
            raise BundleIntegrityError(f"bundle {store.uri(path)} is incomplete: {name} is missing") from None
    actual = sha256_bytes(raw[WEIGHTS])
    if actual != expected_sha256:
        raise BundleIntegrityError(
            f"{store.uri(path)}/{WEIGHTS} has SHA-256 {actual}, expected {expected_sha256}: refusing to load it"
        )
    manifest = json.loads(raw[MANIFEST])  # plain JSON: safe to parse before the other checks
    recorded = manifest.get("files", {})
    for name in FILES:
        expected = recorded.get(name, {}).get("sha256")
        if sha256_bytes(raw[name]) != expected:
            raise BundleIntegrityError(
                f"{store.uri(path)}/{name} does not match the SHA-256 recorded in {MANIFEST} ({expected}): refusing to load it"
            )
    config = ModelConfig.from_dict(json.loads(raw[MODEL])["architecture"])
    model = TabularModel(config)
    model.load_state_dict(torch.load(io.BytesIO(raw[WEIGHTS]), weights_only=True, map_location="cpu"))
    model.eval()
    return LoadedModel(store.uri(path), config, model, json.loads(raw[PREPROCESSING]), json.loads(raw[SPEC]), manifest)
