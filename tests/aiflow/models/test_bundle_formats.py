"""Scope: bundles written before the bundle digest existed (format 1, PyTorch only, anchored by the SHA-256 of
``weights.pt``): one written byte for byte as the format-1 writer did loads and predicts, and a change to any one of its
files — the last one included — is refused naming that file."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import numpy as np
import pytest
import torch

from aiflow.data.encoding import FeatureState, model_inputs
from aiflow.models.bundle import (
    FILES,
    MANIFEST,
    MODEL,
    PREPROCESSING,
    SPEC,
    WEIGHTS,
    BundleIntegrityError,
    load_bundle,
    preprocessing_dict,
    verify_bundle,
)
from aiflow.models.network import ModelConfig, TabularModel
from aiflow.spec import parse_spec
from aiflow.storage.artifacts import ArtifactStore, sha256_bytes
from tests.aiflow.tiny import TINY


def _json(data: object) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def write_format1(store: ArtifactStore, path: str) -> str:
    """A format-1 bundle as its writer made it (before the digest: four files, then a manifest with a timestamp);
    returns what the registry recorded for it, the SHA-256 of ``weights.pt``."""
    spec = parse_spec(TINY, "tiny")
    state = FeatureState(vocab={"carrier": ["AA", "UA"], "origin": ["JFK", "EWR"]},
                         stats={"distance": (500.0, 200.0), "seats": (120.0, 30.0), "weather_temp": (8.0, 3.0)}, rows=10)  # fmt: skip
    inputs = model_inputs(spec, state)
    config = ModelConfig(spec.problem_type, inputs.categorical, inputs.cardinalities, inputs.numeric, hidden=[4], embedding_dim=2,
                         dropout=0.0, target=spec.target.name)  # fmt: skip
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in TabularModel(config).state_dict().items()}, buffer)
    files = {
        WEIGHTS: buffer.getvalue(),
        MODEL: _json({"format": 1, "architecture": config.to_dict(), "params": {}, "torch": torch.__version__}),
        PREPROCESSING: _json(preprocessing_dict(state, spec)),
        SPEC: _json(spec.model_dump(mode="json")),
    }
    assert tuple(files) == FILES  # the format-1 file list, in the writer's order (spec.json last)
    for name, data in files.items():
        store.put_bytes(f"{path}/{name}", data)
    manifest = {"format": 1, "files": {n: {"sha256": sha256_bytes(d), "bytes": len(d)} for n, d in files.items()},
                "lineage": {}, "created_at": dt.datetime.now(dt.UTC).isoformat()}  # fmt: skip
    store.put_bytes(f"{path}/{MANIFEST}", _json(manifest))
    return sha256_bytes(files[WEIGHTS])


def test_an_untouched_format1_bundle_verifies_loads_and_predicts(tmp_path):
    store = ArtifactStore(tmp_path)
    anchor = write_format1(store, "old")
    verified = verify_bundle(store, "old", anchor)
    assert verified.digest == anchor and verified.family == "pytorch" and sorted(verified.raw) == sorted(FILES)
    model = load_bundle(store, "old", anchor)
    n = 3
    cat = np.zeros((n, len(model.model_inputs.categorical)), dtype=np.int64)
    proba = model.predict_arrays(cat, np.ones((n, len(model.model_inputs.numeric)), dtype=np.float32))
    assert proba.shape == (n,) and np.all((proba > 0) & (proba < 1))


@pytest.mark.parametrize("target", FILES)
def test_a_change_to_any_file_of_a_format1_bundle_is_refused_naming_it(tmp_path, target):
    store = ArtifactStore(tmp_path)
    anchor = write_format1(store, "old")
    data = bytearray((tmp_path / "old" / target).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "old" / target).write_bytes(bytes(data))
    name = re.escape(target)
    with pytest.raises(BundleIntegrityError, match=rf"old/{name} (has|does not match)"):
        verify_bundle(store, "old", anchor)
    with pytest.raises(BundleIntegrityError, match=name):
        load_bundle(store, "old", anchor)


def test_a_format1_manifest_that_drops_a_file_is_refused_naming_it(tmp_path):
    """The four format-1 files are checked whatever the manifest lists: one left out of it is refused, not skipped."""
    store = ArtifactStore(tmp_path)
    anchor = write_format1(store, "old")
    manifest = json.loads((tmp_path / "old" / MANIFEST).read_bytes())
    recorded = manifest["files"].pop(SPEC)["sha256"]
    (tmp_path / "old" / MANIFEST).write_bytes(_json(manifest))
    with pytest.raises(BundleIntegrityError, match=r"old/spec\.json does not match the SHA-256 recorded in manifest\.json \(None\)"):
        load_bundle(store, "old", anchor)
    assert recorded == sha256_bytes((tmp_path / "old" / SPEC).read_bytes())  # the file itself is untouched
