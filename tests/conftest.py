"""Shared fixtures: the demo spec, a lake in tmp_path, demo landing files, a monitored "rides" world."""

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


#: Drift alone fires, at once, with no cooldown: the window and sensor tests steer the signals by shifting weeks.
DRIFT_POLICY = {"retrain": {"signals": ["drift"], "hysteresis": 1, "min_rows": 300, "cooldown_days": 0}}


@pytest.fixture(scope="session")
def drift_world(tmp_path_factory):
    """A rides world (tests/aiflow/monitoring/world.py) under DRIFT_POLICY, built once per session (it trains a model).
    Read-only: tests copy it."""
    from tests.aiflow.monitoring.world import build_world, rides_spec

    return build_world(tmp_path_factory.mktemp("drift-world"), rides_spec(**DRIFT_POLICY))
