"""The real entrypoint process (standalone mode) interrupted by a signal resumes from its last checkpoint."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aiflow.storage.artifacts import ArtifactStore
from aiflow.train.checkpoint import Checkpointer, CheckpointMismatch, request_fingerprint
from aiflow.train.contract import TrainResult
from aiflow.train.loop import train
from tests.aiflow.train.conftest import make_request


def checkpoint_epoch(path: Path) -> int:
    """Last completed epoch recorded in a checkpoint file (0 when there is none yet)."""
    if not path.exists():
        return 0
    return torch.load(io.BytesIO(path.read_bytes()), weights_only=True)["epoch"]


def start(request_file: Path, result_file: Path, log_file: Path, sleep: float | None) -> subprocess.Popen:
    env = {**os.environ, "AIFLOW_TRAIN_EPOCH_SLEEP": str(sleep or 0)}
    cmd = [sys.executable, "-m", "aiflow.train", "--request", str(request_file), "--result", str(result_file)]
    return subprocess.Popen(cmd, stdout=log_file.open("w"), stderr=subprocess.STDOUT, env=env)


def test_killed_run_resumes_from_its_checkpoint(lake, train_spec, trained, tmp_path):
    uninterrupted = trained[1]  # the same request under another key, never interrupted
    request = make_request(lake, train_spec, tmp_path / "artifacts", "resume-me")
    epochs = request.params.epochs
    request_file, result_file = tmp_path / "request.json", tmp_path / "result.json"
    request_file.write_text(request.model_dump_json())
    checkpoint = tmp_path / "artifacts" / train_spec.name / "checkpoints" / "resume-me" / "last.pt"

    first = start(request_file, result_file, tmp_path / "first.log", sleep=2.0)
    deadline = time.monotonic() + 60
    while checkpoint_epoch(checkpoint) < 1 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, (tmp_path / "first.log").read_text()
    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(timeout=30) == 128 + signal.SIGTERM
    first_log = (tmp_path / "first.log").read_text()
    assert "SIGTERM" in first_log and not result_file.exists()
    saved = checkpoint_epoch(checkpoint)
    assert 1 <= saved < epochs

    second = start(request_file, result_file, tmp_path / "second.log", sleep=None)
    assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()
    log = (tmp_path / "second.log").read_text()
    assert f"after epoch {saved}" in log
    epochs_trained = [int(m.group(1)) for m in re.finditer(rf"^\S+ epoch (\d+)/{epochs} ", log, re.MULTILINE)]
    assert epochs_trained == list(range(saved + 1, epochs + 1))
    result = TrainResult.model_validate_json(result_file.read_text())
    assert result.resumed_from_epoch == saved and result.epochs_run == epochs

    # seeded per-epoch shuffling + the saved RNG and optimizer state: exactly the uninterrupted model
    assert result.metrics == pytest.approx(uninterrupted.metrics, abs=1e-6)
    # every file of the bundle is identical but the manifest, whose lineage names the other checkpoint key
    differ = {
        n for n in {*result.bundle_files, *uninterrupted.bundle_files} if result.bundle_files.get(n) != uninterrupted.bundle_files.get(n)
    }
    assert differ == {"manifest.json"} and "weights.pt" in result.bundle_files


def test_finished_checkpoint_is_exported_again_without_training(lake, train_spec, tmp_path):
    request = make_request(lake, train_spec, tmp_path, "done", epochs=1)
    first = train(request, log=lambda _: None)
    lines: list[str] = []
    again = train(request, log=lines.append)
    assert again.resumed_from_epoch == 1 and again.epochs_run == 1
    assert not [line for line in lines if line.startswith("epoch ")]
    assert again.artifact_sha256 == first.artifact_sha256 and again.metrics == first.metrics


def test_checkpoint_of_another_request_is_refused(lake, train_spec, tmp_path):
    request = make_request(lake, train_spec, tmp_path, "shared-key", epochs=1)
    train(request, log=lambda _: None)
    other = make_request(lake, train_spec, tmp_path, "shared-key", epochs=1, learning_rate=0.01)
    checkpointer = Checkpointer(ArtifactStore(tmp_path), other.model_name, other.checkpoint_key, request_fingerprint(other))
    with pytest.raises(CheckpointMismatch, match="use a new checkpoint_key"):
        checkpointer.read()
    with pytest.raises(CheckpointMismatch):
        train(other, log=lambda _: None)


@pytest.mark.parametrize("key", ["../escape", "a/b", ""])
def test_unsafe_checkpoint_keys_are_refused(lake, train_spec, tmp_path, key):
    with pytest.raises(ValueError, match="checkpoint_key"):
        train(make_request(lake, train_spec, tmp_path, key), log=lambda _: None)
