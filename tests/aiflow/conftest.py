"""Fixtures for the engine tests: the tiny dataset spec of ``tests/aiflow/tiny.py``."""

from __future__ import annotations

import copy

import pytest

from aiflow.spec import DatasetSpec, parse_spec
from tests.aiflow.tiny import TINY


@pytest.fixture
def tiny_dict() -> dict:
    """A fresh, mutable copy of the tiny spec as a dict."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_spec() -> DatasetSpec:
    return parse_spec(copy.deepcopy(TINY), "tiny")
