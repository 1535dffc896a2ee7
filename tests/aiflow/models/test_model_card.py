"""Scope: the model card's Markdown (data, metrics per split vs baseline and champion, slices, readable gates, lineage, artifact)
on versions shaped as the registry stores them: prefixed model metrics, bare baseline metrics, GateResult dicts."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from aiflow.evaluation.gates import GateConfig, GateResult, absolute_gates, baseline_gate
from aiflow.models.metric_names import registry_metrics
from aiflow.models.model_card import model_card
from aiflow.models.registry import ModelVersion, Registry
from aiflow.storage.lake import Lake

SHA = "ab" * 32


def gate_results() -> dict:
    """Gate results exactly as the evaluation produces them (GateResult.as_dict())."""
    gates = [
        *absolute_gates({"roc_auc": 0.7412}, GateConfig(absolute={"roc_auc": 0.7})),
        GateResult("slices_vs_champion", False, 0.09, 0.05, "Worst slice origin=JFK regresses beyond tolerance 0.05 (gap 0.0900).", -0.04),
        baseline_gate("roc_auc", 0.7412, 0.7013, required=False),
    ]
    return {g.gate: g.as_dict() for g in gates}


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
        metrics=registry_metrics({"roc_auc": 0.7412, "loss": 0.4051}, {"roc_auc": 0.7300}),
        baseline_metrics={"roc_auc": 0.7013, "log_loss": 0.4200},
        gate_results=gate_results(),
        gates_passed=False,
        reason="drift",
        run_id="run-7",
        model_card_uri=None,
    )


def lines_with(card: str, text: str) -> list[str]:
    """Table rows whose first cell starts with ``text`` (``| roc_auc |`` finds the metric rows, not a header)."""
    return [line for line in card.splitlines() if line.startswith(text) or line.startswith("| " + text)]


def test_the_fixture_is_shaped_like_a_registered_version(tmp_path, version: ModelVersion):
    """What the registry hands back for these inputs is what the card tests use."""
    stored = Registry(Lake(tmp_path / "lake")).register(
        "flights", artifact_uri=version.artifact_uri, artifact_sha256=SHA, training_table=version.training_table,
        training_version=17, metrics=version.metrics, baseline_metrics=version.baseline_metrics, params=version.params,
        gate_results=version.gate_results, gates_passed=False, reason="drift",
    )  # fmt: skip
    assert stored.metrics == {"valid_roc_auc": 0.7412, "valid_loss": 0.4051, "test_roc_auc": 0.73}
    assert stored.baseline_metrics == version.baseline_metrics and stored.gate_results == version.gate_results


def test_card_shows_data_metrics_per_split_gates_lineage_and_artifact(version: ModelVersion):
    card = model_card(version, spec_name="flights")
    assert card.startswith("# Model card: flights v4\n")
    assert "Dataset spec `flights`" in card and "gates **FAILED**" in card
    assert lines_with(card, "Training table") == ["| Training table | `s3://lake/features/flights` |"]
    assert lines_with(card, "Delta version") == ["| Delta version | 17 |"]
    assert lines_with(card, "Feature state version") == ["| Feature state version | 9 |"]
    assert lines_with(card, "| metric |") == ["| metric | split | this model | naive reference | Δ vs naive |"]
    # the baseline sits on the validation row of the same metric, and the Δ is filled
    assert lines_with(card, "| roc_auc |") == ["| roc_auc | validation | 0.7412 | 0.7013 | +0.0399 |", "| roc_auc | test | 0.7300 | – |  |"]
    assert lines_with(card, "| loss |") == ["| loss | validation | 0.4051 | – |  |"]
    assert lines_with(card, "| log_loss |") == ["| log_loss | validation | – | 0.4200 |  |"]
    assert not lines_with(card, "| valid_") and not lines_with(card, "| test_")
    assert lines_with(card, "| gate |") == ["| gate | result | value | threshold | margin | detail |"]
    assert lines_with(card, "| absolute:roc_auc |") == [
        "| absolute:roc_auc | ✅ passed | 0.7412 | 0.7000 | 0.0412 | roc_auc 0.7412 must be at least 0.7. |"
    ]
    assert lines_with(card, "| slices_vs_champion |") == [
        "| slices_vs_champion | ❌ failed | 0.0900 | 0.0500 | -0.0400 | Worst slice origin=JFK regresses beyond tolerance 0.05 (gap 0.0900). |"
    ]
    assert lines_with(card, "| beats_baseline |") == [
        "| beats_baseline | – not required | 0.7412 | 0.7013 | – | Not configured: must_beat_baseline is off. |"
    ]
    assert "passed: " not in card and "margin: " not in card and "configured: False" not in card  # no key: value dumps
    assert "| Code version | `1a2b3c4-dirty` |" in card and "| Reason | drift |" in card and "| Run id | run-7 |" in card
    assert '"hidden": [\n    128,\n    64\n  ]' in card
    assert f"| SHA-256 | `{SHA}` |" in card and "| URI | `s3://models/flights/run-7` |" in card
    assert "## Slices" not in card and "champion v" not in card


def test_card_compares_with_the_champion_on_the_same_test_rows_and_lists_slices(version: ModelVersion):
    champion = dataclasses.replace(version, version=2, metrics=registry_metrics({"roc_auc": 0.76}, {"roc_auc": 0.70}))
    slices = {"origin=JFK": {"rows": 1200, "roc_auc": 0.75, "champion_roc_auc": 0.74}, "origin=LGA|EWR": {"rows": 800, "roc_auc": 0.70}}
    card = model_card(version, spec_name="flights", slices=slices, champion=champion, champion_test_metrics={"roc_auc": 0.7450})
    assert lines_with(card, "| metric |") == ["| metric | split | this model | naive reference | Δ vs naive | champion v2 | Δ vs champion |"]
    assert lines_with(card, "| roc_auc |") == [
        "| roc_auc | validation | 0.7412 | 0.7013 | +0.0399 | – |  |",
        "| roc_auc | test | 0.7300 | – |  | 0.7450 | -0.0150 |",
    ]
    assert lines_with(card, "| slice |") == ["| slice | rows | roc_auc | champion_roc_auc |"]
    assert lines_with(card, "origin=JFK") == ["| origin=JFK | 1200 | 0.7500 | 0.7400 |"]
    assert lines_with(card, "origin=LGA") == ["| origin=LGA\\|EWR | 800 | 0.7000 | – |"]  # a pipe cannot break the table


def test_without_same_row_figures_the_champion_column_uses_its_registered_test_metrics(version: ModelVersion):
    champion = dataclasses.replace(version, version=2, metrics=registry_metrics({"roc_auc": 0.76}, {"roc_auc": 0.70}))
    card = model_card(version, spec_name="flights", champion=champion)
    assert lines_with(card, "| roc_auc | test") == ["| roc_auc | test | 0.7300 | – |  | 0.7000 | +0.0300 |"]


def test_a_regression_model_card(version: ModelVersion):
    """Another problem type: RMSE and MAE, lower is better; Δ is plain model minus baseline."""
    reg = dataclasses.replace(
        version, name="trips", metrics=registry_metrics({"rmse": 12.5, "mae": 8.0}, {"rmse": 13.0}), baseline_metrics={"rmse": 14.0, "mae": 9.5}
    )
    card = model_card(reg, spec_name="trips")
    assert lines_with(card, "| rmse |") == ["| rmse | validation | 12.5000 | 14.0000 | -1.5000 |", "| rmse | test | 13.0000 | – |  |"]
    assert lines_with(card, "| mae |") == ["| mae | validation | 8.0000 | 9.5000 | -1.5000 |"]


def test_card_of_a_bare_version_says_what_is_missing(version: ModelVersion):
    bare = dataclasses.replace(
        version, metrics={}, baseline_metrics={}, gate_results={}, gates_passed=True, code_version=None, state_version=None, run_id=None
    )
    card = model_card(bare, spec_name="flights")
    assert "No metrics recorded." in card and "No gates recorded (gates_passed: True)." in card
    assert "| Code version | unknown |" in card and "| Run id | – |" in card and "gates **passed**" in card
