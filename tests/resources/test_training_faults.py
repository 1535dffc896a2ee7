"""Scope: a failed training step names its cause and Dagster retries only infrastructure faults: a down S3 lake
(in the step and in the training process), a killed training process (retried with backoff, then failed naming the
cause); a training that fails on its input is failed at once, never retried. Real Dagster runs, real processes;
the "down" S3 server is an endpoint nothing listens on (what a stopped server looks like to its clients)."""

from __future__ import annotations

import stat
import sys

import pytest
from dagster import DagsterEventType, DagsterInstance, Definitions, materialize, op
from dagster import job as dagster_job

from aiflow.spec import demo_spec_path, load_spec
from aiflow.train.contract import TrainRequest
from assets.training import candidate_asset
from resources.faults import classified
from resources.storage import ArtifactsResource, S3LakeResource
from resources.training import SubprocessTrainingLauncher, TrainingLauncher, train_result
from tests.fixtures.servers import free_ports

SECRET = "s3cr3t-never-logged"
SPEC = load_spec(demo_spec_path())


@pytest.fixture(scope="module")
def down() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def events(result, kind: DagsterEventType) -> list:
    return [e for e in result.all_events if e.event_type == kind]


def logged(result) -> str:
    """Every message of the run's event log."""
    return "\n".join(str(e.message) for e in result.all_events)


def failure_message(result) -> str:
    """The step's failure: always a ``Failure`` (no policy or retry request retries it), its description."""
    (failure,) = events(result, DagsterEventType.STEP_FAILURE)
    error = failure.step_failure_data.error
    assert error.cls_name == "Failure", error.to_string()
    return error.message.removeprefix("dagster._core.definitions.events.Failure: ")


def test_a_down_s3_lake_fails_the_training_step_naming_it_after_one_retry(tmp_path, down):
    lake = S3LakeResource(root_uri="s3://bucket/lake", endpoint_url=down, allow_http=True, access_key_id="key", secret_access_key=SECRET)
    trainer = SubprocessTrainingLauncher(infrastructure_retries=1, infrastructure_retry_wait_s=0)
    result = materialize(
        [candidate_asset(SPEC)], resources={"lake": lake, "artifacts": ArtifactsResource(root=str(tmp_path)), "trainer": trainer},
        instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    assert len(events(result, DagsterEventType.STEP_UP_FOR_RETRY)) == 1 and len(events(result, DagsterEventType.STEP_RESTARTED)) == 1
    message = failure_message(result)
    assert message.startswith("flights training failed on infrastructure 2 times, giving up: storage or network unavailable (lake at s3://bucket/lake)")
    assert "Connection refused" in message and SECRET not in logged(result)


def _launch_job(request: TrainRequest, trainer: TrainingLauncher, env: dict[str, str] | None = None):
    @op
    def train_once(context, trainer: TrainingLauncher):
        trainer.launch(context, request, env=env)

    @dagster_job
    def launch():
        train_once()

    return Definitions(jobs=[launch], resources={"trainer": trainer}).resolve_job_def("launch")


def _request(features_uri: str, artifact_root: str) -> TrainRequest:
    return TrainRequest(
        model_name="flights", features_uri=features_uri, data_version=0, state_uri=features_uri + "_state", state_version=0,
        spec=SPEC.model_dump(mode="json"), artifact_root=artifact_root, checkpoint_key="faults",
    )  # fmt: skip


def test_a_killed_training_process_is_retried_with_backoff_then_named(tmp_path):
    killed = tmp_path / "killed-python"
    killed.write_text("#!/bin/sh\necho 'loading the features...' >&2\nkill -9 $$\n")
    killed.chmod(killed.stat().st_mode | stat.S_IXUSR)
    trainer = SubprocessTrainingLauncher(python=str(killed), infrastructure_retries=2, infrastructure_retry_wait_s=0.5)
    result = _launch_job(_request(str(tmp_path / "features"), str(tmp_path)), trainer).execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    waits = [e.event_specific_data.seconds_to_wait for e in events(result, DagsterEventType.STEP_UP_FOR_RETRY)]
    assert waits == [0.5, 1.0]  # doubled at each retry
    message = failure_message(result)
    assert message.startswith("training failed on infrastructure 3 times, giving up: the training process was killed by SIGKILL (exit -9)")
    assert "Last stderr lines of the training process:\nloading the features..." in message


def test_a_training_that_ends_well_without_a_result_is_named_and_retried(tmp_path):
    quiet = tmp_path / "quiet-python"  # opens Pipes as the entrypoint does, exits 0, never reports a result
    quiet.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'from dagster_pipes import open_dagster_pipes\nwith open_dagster_pipes(): pass'\n")
    quiet.chmod(quiet.stat().st_mode | stat.S_IXUSR)
    trainer = SubprocessTrainingLauncher(python=str(quiet), infrastructure_retries=1, infrastructure_retry_wait_s=0)

    @op
    def train_once(context, trainer: TrainingLauncher):
        with classified(context, {}, retries=trainer.infrastructure_retries, wait_s=0, what="training"):
            train_result(trainer.launch(context, _request(str(tmp_path / "features"), str(tmp_path))))

    @dagster_job
    def launch():
        train_once()

    job = Definitions(jobs=[launch], resources={"trainer": trainer}).resolve_job_def("launch")
    result = job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert len(events(result, DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    assert failure_message(result).startswith(
        "training failed on infrastructure 2 times, giving up: storage or network unavailable (a store or service): "
        "ResultLost: the training process exited 0 but its result never reached Dagster"
    )


@pytest.mark.slow
def test_the_training_process_reports_a_down_store_and_is_retried_but_not_a_missing_table(tmp_path, down):
    trainer = SubprocessTrainingLauncher(infrastructure_retries=1, infrastructure_retry_wait_s=0)
    env = {"AWS_ENDPOINT_URL": down, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": SECRET}
    outage = _launch_job(_request("s3://bucket/lake/features/flights", "s3://bucket/artifacts"), trainer, env)
    result = outage.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert len(events(result, DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    message = failure_message(result)
    assert message.startswith("training failed on infrastructure 2 times, giving up: storage or network unavailable (lake at s3://bucket/lake/features/flights)")
    assert SECRET not in logged(result)

    missing = _launch_job(_request(str(tmp_path / "no-features"), str(tmp_path / "artifacts")), trainer)
    result = missing.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    assert events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    message = failure_message(result)
    assert message.startswith("training failed: ") and "no-features" in message, message
    assert "Last stderr lines of the training process:" in message
