"""Each window test (test_partition, test_shadow) gets its own copy of the session's drift world (tests/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.aiflow.monitoring.world import World


@pytest.fixture
def world(drift_world: World, tmp_path) -> World:
    shutil.copytree(drift_world.home, tmp_path / "home")
    return World(tmp_path / "home", drift_world.spec, drift_world.version)
