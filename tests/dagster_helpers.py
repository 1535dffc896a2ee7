"""Helpers for the Dagster-layer tests: a private landing copy and the data-plane definitions on it."""

from __future__ import annotations

import shutil
from pathlib import Path

from dagster import AssetSelection, Definitions

from definitions import build_definitions
from resources.profiles import local_resources


def local_home(tmp_path: Path, demo_landing: Path) -> Path:
    """An aiflow home in tmp_path whose landing zone is a private copy of the demo landing files."""
    home = tmp_path / "home"
    shutil.copytree(demo_landing, home / "landing")
    return home


def local_defs(home: Path, spec_path=None) -> Definitions:
    return build_definitions(spec_path, resources=local_resources(str(home)))


#: The data-plane part of the asset graph (everything before training).
DATA_PLANE = AssetSelection.groups("ingestion", "cleansing", "features")
