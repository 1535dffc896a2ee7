"""Scope: `<dataset>_rollback_job` on a real registry: an alias that is not set (a removed canary) is refused with the
engine's message as the step's failure, and nothing in the alias log changes."""

from __future__ import annotations

import hashlib

from dagster import DagsterEventType, Definitions, instance_for_test

from aiflow.models.registry import Registry
from aiflow.spec import demo_spec_path, load_spec
from aiflow.storage.lake import Lake, Tables
from resources.profiles import local_resources
from sensors.rollback import rollback_job


def _registry_with_a_removed_canary(home) -> Registry:
    registry = Registry(Lake(home / "lake"))
    for seed in ("a", "b"):
        registry.register(
            "flights", artifact_uri=f"/artifacts/{seed}", artifact_sha256=hashlib.sha256(seed.encode()).hexdigest(),
            training_table=str(home / "lake/features/flights"), training_version=1, metrics={}, baseline_metrics={},
            params={}, gate_results={}, gates_passed=True, reason="schedule",
        )  # fmt: skip
    registry.promote("flights", 1, reason="launch", actor="ci")
    registry.set_alias("flights", "canary", 2, reason="try v2", actor="ci")
    registry.remove_alias("flights", "canary", reason="canary error rate 0.47", actor="analysis")
    return registry


def test_rollback_of_a_removed_canary_fails_with_the_engines_message(tmp_path):
    registry = _registry_with_a_removed_canary(tmp_path)
    commits = registry.lake.version(Tables.alias_events())
    spec = load_spec(demo_spec_path())
    job = Definitions(jobs=[rollback_job(spec)], resources=local_resources(str(tmp_path))).resolve_job_def("flights_rollback_job")
    config = {"ops": {"flights_rollback_alias": {"config": {"reason": "restore", "alias": "canary"}}}}
    with instance_for_test() as instance:
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert len(failures) == 1
    error = failures[0].step_failure_data.error
    assert error.cls_name == "Failure"
    assert "flights rollback refused: flights: alias 'canary' is not set (removed from v2 by analysis" in error.message
    assert "aiflow models promote flights VERSION --alias canary" in error.message
    assert registry.alias("flights", "canary") is None and registry.lake.version(Tables.alias_events()) == commits
    assert registry.aliases("flights") == {"champion": 1}
