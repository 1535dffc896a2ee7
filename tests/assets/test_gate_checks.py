"""Scope: how gate results become the blocking checks' verdicts (description, numeric value/threshold/margin)."""

from __future__ import annotations

import pytest
from dagster import FloatMetadataValue

from aiflow.evaluation.gates import GateConfig, absolute_gates, baseline_gate
from aiflow.spec import parse_spec
from assets.validation import GATE_CHECKS, evaluation_checks, gate_check_result
from tests.aiflow.tiny import TINY


def results(*gates) -> dict:
    return {g.gate: g.as_dict() for g in gates}


def test_several_bounds_are_summed_up_by_the_tightest():
    gates = results(*absolute_gates({"rmse": 9.0, "mae": 7.9}, GateConfig(absolute={"rmse": 10.0, "mae": 8.0})))
    verdict = gate_check_result("absolute_minimums", gates)
    assert verdict["passed"] and verdict["metadata"]["failed"] == "none"
    meta = verdict["metadata"]
    assert all(isinstance(meta[k], FloatMetadataValue) for k in ("value", "threshold", "margin"))
    assert (meta["value"].value, meta["threshold"].value, meta["margin"].value) == (7.9, 8.0, pytest.approx(0.1))
    assert verdict["description"] == "rmse 9.0000 must be at most 10.0. mae 7.9000 must be at most 8.0."


def test_a_missed_bound_fails_and_is_named():
    verdict = gate_check_result("absolute_minimums", results(*absolute_gates({"rmse": 11.0}, GateConfig(absolute={"rmse": 10.0}))))
    assert not verdict["passed"] and verdict["metadata"]["failed"] == "absolute:rmse"
    assert verdict["metadata"]["margin"].value == pytest.approx(-1.0)


def test_gates_that_are_not_configured_say_so():
    assert gate_check_result("absolute_minimums", {}) == {
        "passed": True, "description": "Not configured: no absolute gate is set.", "metadata": {"configured": False},
    }  # fmt: skip
    off = gate_check_result("beats_baseline", results(baseline_gate("rmse", 10.0, 9.0, required=False)))
    assert off["passed"] and off["description"] == "Not configured: must_beat_baseline is off." and off["metadata"] == {"configured": False}


def test_every_check_spec_carries_its_description():
    specs = {s.name: s for s in evaluation_checks(parse_spec(TINY, "tiny")).check_specs}
    assert set(specs) == set(GATE_CHECKS)
    assert all(spec.description == GATE_CHECKS[name][1] and spec.blocking for name, spec in specs.items())
