"""Model card Markdown: data, metrics vs baseline and champion, slices, gates, lineage and artifact hash."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from aiflow.models.model_card import model_card
from aiflow.models.registry import ModelVersion

SHA = "ab" * 32


@pytest.fixture
def version() -> ModelVersion:
    return ModelVersion(
        name="flights",
        version=4,
        created_at=dt.datetime(2024, 5, 6, 12, 30, tzinfo=dt.UTC),
        artifact_uri="s3://models/flights/run-7",
        artifact_sha256=SHA,
        training_table="s3://lake/features/flights",
        training_version=17,
        state_version=9,
        code_version="1a2b3c4-dirty",
        params={"epochs": 8, "hidden": [128, 64]},
        metrics={"auc": 0.7412, "log_loss": 0.4051},
        baseline_metrics={"auc": 0.7013},
        gate_results={
            "auc_vs_baseline": {"passed": True, "value": 0.7412, "threshold": 0.7013, "op": ">="},
            "max_slice_drop": {"passed": False, "value": 0.09, "threshold": 0.05},
        },
        gates_passed=False,
        reason="drift",
        run_id="run-7",
        model_card_uri=None,
    )


def lines_with(card: str, text: str) -> list[str]:
    """Table rows whose first cell starts with ``text`` (``| auc |`` finds the metric row, not a header)."""
    return [line for line in card.splitlines() if line.startswith(text) or line.startswith("| " + text)]


def test_card_shows_data_metrics_gates_lineage_and_artifact(version: ModelVersion):
    card = model_card(version, spec_name="flights")
    assert card.startswith("# Model card: flights v4\n")
    assert "Dataset spec `flights`" in card and "gates **FAILED**" in card
    assert lines_with(card, "Training table") == ["| Training table | `s3://lake/features/flights` |"]
    assert lines_with(card, "Delta version") == ["| Delta version | 17 |"]
    assert lines_with(card, "Feature state version") == ["| Feature state version | 9 |"]
    assert lines_with(card, "| auc |") == ["| auc | 0.7412 | 0.7013 | +0.0399 |"]
    assert lines_with(card, "| log_loss |") == ["| log_loss | 0.4051 | – |  |"]
    assert lines_with(card, "| auc_vs_baseline |") == ["| auc_vs_baseline | ✅ passed | 0.7412 | 0.7013 | op: >= |"]
    assert lines_with(card, "| max_slice_drop |") == ["| max_slice_drop | ❌ failed | 0.0900 | 0.0500 |  |"]
    assert "| Code version | `1a2b3c4-dirty` |" in card and "| Reason | drift |" in card and "| Run id | run-7 |" in card
    assert '"hidden": [\n    128,\n    64\n  ]' in card
    assert f"| SHA-256 | `{SHA}` |" in card and "| URI | `s3://models/flights/run-7` |" in card
    assert "## Slices" not in card and "champion" not in card


def test_card_compares_with_the_champion_and_lists_slices(version: ModelVersion):
    champion = dataclasses.replace(version, version=2, metrics={"auc": 0.7500})
    slices = {"origin=JFK": {"auc": 0.75, "rows": 1200}, "origin=LGA|EWR": {"auc": 0.70, "rows": 800}}
    card = model_card(version, spec_name="flights", slices=slices, champion=champion)
    assert lines_with(card, "| metric |") == ["| metric | this model | baseline | Δ vs baseline | champion v2 | Δ vs champion |"]
    assert lines_with(card, "| auc |") == ["| auc | 0.7412 | 0.7013 | +0.0399 | 0.7500 | -0.0088 |"]
    assert lines_with(card, "| slice |") == ["| slice | auc | rows |"]
    assert lines_with(card, "origin=JFK") == ["| origin=JFK | 0.7500 | 1200 |"]
    assert lines_with(card, "origin=LGA") == ["| origin=LGA\\|EWR | 0.7000 | 800 |"]  # a pipe cannot break the table


def test_card_of_a_bare_version_says_what_is_missing(version: ModelVersion):
    bare = dataclasses.replace(
        version, metrics={}, baseline_metrics={}, gate_results={}, gates_passed=True, code_version=None, state_version=None, run_id=None
    )
    card = model_card(bare, spec_name="flights")
    assert "No metrics recorded." in card and "No gates recorded (gates_passed: True)." in card
    assert "| Code version | unknown |" in card and "| Run id | – |" in card and "gates **passed**" in card
