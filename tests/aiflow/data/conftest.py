"""Fixtures of the ingestion tests (test_ingest, test_ingest_exact): an empty local landing zone."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiflow.storage.landing import LocalLandingZone


@pytest.fixture
def landing_dir(tmp_path: Path) -> Path:
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture
def zone(landing_dir: Path) -> LocalLandingZone:
    return LocalLandingZone(landing_dir)
