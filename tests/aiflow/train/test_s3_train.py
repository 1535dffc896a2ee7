"""Training against a real S3 server (SeaweedFS): features read from an S3 lake, checkpoint and bundle written to S3."""

from __future__ import annotations

import pytest

from aiflow.models.bundle import load_bundle
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake
from aiflow.train.loop import train
from tests.aiflow.train.conftest import make_request, run_data_plane

pytestmark = pytest.mark.s3


def test_training_reads_and_writes_s3(s3_server, s3_prefix, train_landing, train_spec, monkeypatch):
    for key, value in s3_server.storage_options.items():  # the training process takes credentials from its environment
        monkeypatch.setenv(key, value)
    lake = Lake(f"{s3_prefix}/lake", storage_options=s3_server.storage_options)
    run_data_plane(lake, train_landing, train_spec)
    request = make_request(lake, train_spec, f"{s3_prefix}/artifacts", "on-s3", epochs=2)
    result = train(request, log=lambda _: None)
    assert result.artifact_uri == f"{s3_prefix}/artifacts/{train_spec.name}/candidates/on-s3"
    store = ArtifactStore(f"{s3_prefix}/artifacts")
    assert store.exists(f"{train_spec.name}/checkpoints/on-s3/last.pt")
    assert 0.0 < result.metrics["roc_auc"] < 1.0

    again = train(request, log=lambda _: None)  # resumes the finished checkpoint from S3: re-export only
    assert again.resumed_from_epoch == 2 and again.artifact_sha256 == result.artifact_sha256
    model = load_bundle(store, result.artifact_uri, result.artifact_sha256)
    assert model.manifest["lineage"]["features_uri"] == request.features_uri
