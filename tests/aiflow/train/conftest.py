"""Fixtures for the training-engine tests: a real features table built by the data plane on ten demo days."""

from __future__ import annotations

import os

# as the entrypoint does (aiflow/train/__main__.py): idle OpenMP workers sleep instead of spinning, which on
# shared 2-core machines made torch and HistGradientBoosting several times slower. Read when torch or
# scikit-learn first loads OpenMP, so it only takes effect if they were not imported before this file.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime as dt
import shutil
from pathlib import Path

import pytest
import yaml

from aiflow.data.demo import write_landing
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.spec import DatasetSpec, demo_spec_path, parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from aiflow.train.contract import TrainParams, TrainRequest
from aiflow.train.loop import train
from aiflow.train.request import pinned_request

DAYS = 10
START = dt.date(2013, 1, 1)
VALID_FROM, TEST_FROM = dt.date(2013, 1, 7), dt.date(2013, 1, 9)
#: Small and quick, still a real model: 3 epochs, two hidden layers; the network only (the families' tests choose theirs).
FAST = dict(epochs=3, batch_size=256, hidden=[32, 16], embedding_dim=4, patience=2, baseline_max_rows=2000, families=["pytorch"])


def run_data_plane(lake: Lake, landing: Path, spec: DatasetSpec) -> int:
    """Ingest, cleanse and build features for whatever the landing zone holds; return the features version."""
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    for table in spec.tables:
        refresh_silver(lake, table)
    refresh_features(lake, spec)
    return lake.version(Tables.features(spec.name))


def make_request(lake: Lake, spec: DatasetSpec, artifacts: Path, key: str, version: int | None = None, **params) -> TrainRequest:
    """A request pinned to ``version`` of the features (default: the current one) and its feature state."""
    request = pinned_request(lake, spec, TrainParams(**{**FAST, **params}), str(artifacts), key, "test", version=version)
    return request.model_copy(update={"checkpoint_key": key})


@pytest.fixture(scope="session")
def train_spec() -> DatasetSpec:
    """The demo spec with its split moved inside the ten demo days."""
    data = yaml.safe_load(demo_spec_path().read_text())
    data["split"] = {"kind": "time", "valid_from": VALID_FROM.isoformat(), "test_from": TEST_FROM.isoformat()}
    return parse_spec(data, "flights (test split)")


@pytest.fixture(scope="session")
def train_landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_landing")
    write_landing(root, days=DAYS, start=START)
    return root


@pytest.fixture(scope="session")
def built_lake(tmp_path_factory, train_landing: Path, train_spec: DatasetSpec) -> Path:
    """A lake whose features hold the ten days (read-only: copy it with ``lake_copy`` to change it)."""
    root = tmp_path_factory.mktemp("train_lake") / "lake"
    run_data_plane(Lake(root), train_landing, train_spec)
    return root


@pytest.fixture
def lake(built_lake: Path) -> Lake:
    """The shared ten-day lake (do not write to it)."""
    return Lake(built_lake)


@pytest.fixture
def lake_copy(built_lake: Path, tmp_path: Path) -> Lake:
    """A private, writable copy of the ten-day lake."""
    shutil.copytree(built_lake, tmp_path / "lake")
    return Lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def trained(built_lake: Path, train_spec: DatasetSpec, tmp_path_factory):
    """One real training run (FAST params, key ``run-a``) on the shared lake: (request, result, store, log lines)."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    request = make_request(Lake(built_lake), train_spec, artifacts, "run-a")
    lines: list[str] = []
    result = train(request, log=lines.append)
    return request, result, ArtifactStore(artifacts), lines
