"""BOUNDARY test (no cluster here): K8sTrainingLauncher's whole PipesK8sClient flow on a STAND-IN Kubernetes API.

The stand-in (``tests/k8s/standin.py``) runs each pod's command as a local subprocess, because no
cluster runs here. Only ``DagsterKubernetesClient.production_client`` is replaced by it; the kubeconfig is a real file loaded by the real loader. Everything else is
real: ``dagster.materialize`` of an asset, our launcher, ``PipesK8sClient.run``, the pod body, the Pipes
bootstrap env, the pod-log message reader, ``wait_for_pod``, RetryRequested and Failure.
"""

# No `from __future__ import annotations`: Dagster reads the asset's annotations at definition time.
import sys
from pathlib import Path

import kubernetes_validate
import pytest
from dagster import AssetExecutionContext, DagsterEventType, DagsterInstance, asset, materialize

from aiflow.train.contract import TrainRequest
from resources.k8s_training import LAUNCH_ID_LABEL, K8sTrainingLauncher
from resources.training import TrainingLauncher
from tests.k8s.standin import EVICTED, OOM_KILLED, SCHEDULER_PREEMPTION_EVENT_ONLY, SPOT_SHUTDOWN

pytestmark = pytest.mark.k8s_boundary

SCRIPT = Path(__file__).with_name("pipes_script.py")
SECRETS = {"aiflow-aws": {"AWS_ACCESS_KEY_ID": "AKIA-STAND-IN", "AWS_SECRET_ACCESS_KEY": "not-a-secret"}}


def _launcher(kubeconfig: str, **overrides) -> K8sTrainingLauncher:
    options = dict(
        image="registry.example.com/aiflow-train:cuda-test",
        command=[sys.executable, str(SCRIPT)],
        namespace="aiflow",
        env_from_secrets=["aiflow-aws"],
        env={"AIFLOW_PROFILE": "k8s"},
        kubeconfig_file=kubeconfig,
        poll_interval=0.05,
        preemption_retry_wait_s=0,
    )
    return K8sTrainingLauncher(**{**options, **overrides})


def _model_asset(artifact_root: Path, mode: str):
    @asset(name="model")
    def model(context: AssetExecutionContext, trainer: TrainingLauncher):
        """Trains through whatever launcher the profile binds (here: Kubernetes, on the stand-in)."""
        request = TrainRequest(
            model_name="flights_delay",
            features_uri="s3://aiflow-lake/features__flights",
            data_version=7,
            state_uri="s3://aiflow-lake/features__flights__state",
            state_version=7,
            spec={"name": "flights"},
            artifact_root=str(artifact_root),
            checkpoint_key=f"flights_delay-{context.run_id}",  # per run, not per attempt: retries resume
        )
        return trainer.launch(context, request, env={"SCRIPT_MODE": mode}).get_materialize_result()

    return model


def _run(tmp_path, launcher, mode):
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [_model_asset(tmp_path / "artifacts", mode)],
        resources={"trainer": launcher},
        instance=instance,
        raise_on_error=False,
    )
    result.log_messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result


def _events(result, event_type):
    return [e for e in result.all_events if e.event_type == event_type]


def test_pod_runs_the_command_and_metadata_arrives_through_pipes(tmp_path, kubeconfig, stand_in):
    api = stand_in(secrets=SECRETS)
    result = _run(tmp_path, _launcher(kubeconfig), "ok")

    assert result.success
    metadata = result.asset_materializations_for_node("model")[0].metadata
    assert metadata["model_name"].value == "flights_delay"  # extras reached the pod
    assert metadata["data_version"].value == 7
    assert metadata["checkpoint_key"].value == f"flights_delay-{result.run_id}"
    assert metadata["resumed"].value is False
    assert metadata["aws_secret_from_envfrom"].value is True  # envFrom secretRef -> env
    assert metadata["plain_env"].value == "k8s"
    assert metadata["pipes_context_env"].value is True

    assert len(api.created) == 1
    pod = api.created[0]
    assert pod["spec"]["containers"][0]["image"] == "registry.example.com/aiflow-train:cuda-test"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["metadata"]["labels"]["aiflow/run-id"] == result.run_id
    assert pod["metadata"]["labels"][LAUNCH_ID_LABEL]
    assert api.deleted == [pod["metadata"]["name"]]  # deleted after completion
    kubernetes_validate.validate(pod, kubernetes_validate.utils.latest_version(), strict=True)  # what was submitted
    assert "DAGSTER_PIPES_MESSAGES" in api.pod_env[0]


def test_keep_pod_when_deletion_is_off(tmp_path, kubeconfig, stand_in):
    api = stand_in(secrets=SECRETS)
    result = _run(tmp_path, _launcher(kubeconfig, delete_pod_on_completion=False), "ok")
    assert result.success
    assert len(api.created) == 1 and api.deleted == []


def test_preempted_pod_is_retried_and_resumes_from_the_same_checkpoint_key(tmp_path, kubeconfig, stand_in):
    api = stand_in(secrets=SECRETS, disruptions={0: SPOT_SHUTDOWN})
    result = _run(tmp_path, _launcher(kubeconfig), "preempt-once")

    assert result.success
    assert len(api.created) == 2  # one pod preempted, one that finished
    assert len(_events(result, DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    assert [p["metadata"]["labels"]["aiflow/attempt"] for p in api.created] == ["0", "1"]
    metadata = result.asset_materializations_for_node("model")[0].metadata
    assert metadata["resumed"].value is True  # the second attempt found the first one's checkpoint
    assert metadata["checkpoint_key"].value == f"flights_delay-{result.run_id}"
    assert api.deleted == [p["metadata"]["name"] for p in api.created]  # both pods cleaned up
    assert any("was preempted (DisruptionTarget: TerminationByKubelet" in m for m in result.log_messages)


def test_preemption_retries_are_bounded(tmp_path, kubeconfig, stand_in):
    api = stand_in(secrets=SECRETS, disruptions={0: SCHEDULER_PREEMPTION_EVENT_ONLY, 1: EVICTED})
    result = _run(tmp_path, _launcher(kubeconfig, max_preemption_retries=1), "preempt-always")

    assert not result.success
    assert len(api.created) == 2
    assert len(_events(result, DagsterEventType.STEP_UP_FOR_RETRY)) == 1  # first: event "Preempted"
    failure = _events(result, DagsterEventType.STEP_FAILURE)[0].step_failure_data
    assert "preempted 2 times" in failure.user_failure_data.description
    assert "Evicted" in failure.user_failure_data.description  # second: status.reason Evicted


def test_code_error_fails_at_once_with_the_training_error(tmp_path, kubeconfig, stand_in):
    api = stand_in(secrets=SECRETS)
    result = _run(tmp_path, _launcher(kubeconfig), "raise")

    assert not result.success
    assert len(api.created) == 1  # no retry
    assert not _events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    failure = _events(result, DagsterEventType.STEP_FAILURE)[0].step_failure_data
    description = failure.user_failure_data.description
    assert "RuntimeError: loss became NaN at epoch 3" in description.splitlines()[0]
    assert "Traceback" in description  # the tail of the pod log
    assert failure.user_failure_data.metadata["failure"].value == "container 'aiflow-training' exited with code 1"
    assert api.deleted == [api.created[0]["metadata"]["name"]]


def test_oom_killed_is_a_code_error_not_a_preemption(tmp_path, kubeconfig, stand_in):
    api = stand_in(secrets=SECRETS, disruptions={0: OOM_KILLED})
    result = _run(tmp_path, _launcher(kubeconfig), "oom")

    assert not result.success
    assert len(api.created) == 1
    assert not _events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    description = _events(result, DagsterEventType.STEP_FAILURE)[0].step_failure_data.user_failure_data.description
    assert "OOMKilled" in description


def test_pod_that_cannot_be_created_fails_without_retry(tmp_path, kubeconfig, stand_in):
    api = stand_in(secrets=SECRETS, reject_create=403)  # e.g. the run's service account lacks RBAC on pods
    result = _run(tmp_path, _launcher(kubeconfig), "ok")

    assert not result.success
    assert api.created == []
    assert not _events(result, DagsterEventType.STEP_UP_FOR_RETRY)
    description = _events(result, DagsterEventType.STEP_FAILURE)[0].step_failure_data.user_failure_data.description
    assert "could not be created" in description and "Forbidden" in description
