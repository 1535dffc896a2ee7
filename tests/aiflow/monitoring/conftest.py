"""One drift-policy rides world for the window tests (test_partition, test_shadow): built once per session (it trains a
model), copied for each test."""

from __future__ import annotations

import shutil

import pytest

from tests.aiflow.monitoring.world import World, build_world, rides_spec

#: Drift alone fires, at once, with no cooldown: the window tests steer the signals by shifting weeks.
POLICY = {"retrain": {"signals": ["drift"], "hysteresis": 1, "min_rows": 300, "cooldown_days": 0}}


@pytest.fixture(scope="session")
def drift_world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("drift-world"), rides_spec(**POLICY))


@pytest.fixture
def world(drift_world: World, tmp_path) -> World:
    shutil.copytree(drift_world.home, tmp_path / "home")
    return World(tmp_path / "home", drift_world.spec, drift_world.version)
