"""Shared fixtures: the demo spec, a lake in tmp_path, demo landing files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from aiflow.data.demo import write_landing
from aiflow.spec import DatasetSpec, demo_spec_path, load_spec
from aiflow.storage.lake import Lake

pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.postgres"]


@pytest.fixture(scope="session")
def spec() -> DatasetSpec:
    return load_spec(demo_spec_path())


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def demo_landing(tmp_path_factory) -> Path:
    """Five days of demo flights (2013-01-01..05) plus their weather, written once per session. Read-only."""
    root = tmp_path_factory.mktemp("demo_landing")
    write_landing(root, days=5, start=dt.date(2013, 1, 1))
    return root
