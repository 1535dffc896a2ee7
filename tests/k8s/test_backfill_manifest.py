"""BOUNDARY test (no cluster here): on the k8s profile the backfill job runs each slice as its own Kubernetes Job; the Job
dagster-k8s builds for a slice step validates STRICTLY (kubernetes-validate) and carries the slice's memory request and limit."""

from __future__ import annotations

import copy

import pytest
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config

from aiflow.spec import parse_spec
from sensors.backfill import SLICE_LIMITS, SLICE_REQUESTS, backfill_job
from tests.aiflow.data.test_backfill import METERS
from tests.k8s.test_manifests import _serialize, validate_strict

pytestmark = pytest.mark.k8s_boundary


@pytest.mark.parametrize("stage", ["silver", "features"])
def test_each_slice_step_is_a_valid_kubernetes_job_with_a_memory_limit(stage):
    spec = parse_spec(copy.deepcopy(METERS), "meters")
    job = backfill_job(spec, profile="k8s")
    assert job.executor_def.name == "k8s"
    assert backfill_job(spec).executor_def.name == "multiprocess"  # locally: parallel processes

    tags = job.graph.node_named(f"meters_{stage}_slice").definition.tags  # the step tags k8s_job_executor reads
    user_defined = get_user_defined_k8s_config(tags)
    run_id = "0123abcd-0000-4000-8000-000000000002"
    step_key = f"meters_{stage}_slice[{stage}_meters_0]"
    job_name = f"dagster-step-{get_k8s_job_name(run_id, step_key)}"
    manifest = _serialize(
        construct_dagster_k8s_job(
            job_config=DagsterK8sJobConfig(
                job_image="registry.example.com/aiflow:0.1.0",
                dagster_home="/opt/dagster/dagster_home",
                image_pull_policy="IfNotPresent",
                instance_config_map="dagster-instance",
                env_secrets=["aiflow-aws"],
                env_vars=["AIFLOW_PROFILE=k8s"],
            ),
            args=["dagster", "api", "execute_step"],
            job_name=job_name,
            pod_name=job_name,
            component="step_worker",
            user_defined_k8s_config=user_defined,
            labels={"dagster/job": job.name, "dagster/op": f"meters_{stage}_slice", "dagster/run-id": run_id},
            env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": job.name}, {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key}],
        ),
        "batch/v1",
        "Job",
    )
    validate_strict(manifest)

    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["memory"] == SLICE_LIMITS["memory"] == "3Gi"
    assert container["resources"]["requests"] == SLICE_REQUESTS
    assert manifest["spec"]["template"]["spec"]["restartPolicy"] == "Never"
