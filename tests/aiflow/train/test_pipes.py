"""The entrypoint through Dagster Pipes for real: an asset materialized by Dagster launches ``python -m aiflow.train``
as a subprocess (``SubprocessTrainingLauncher``) and gets its metrics, lineage and artifact back."""

from dagster import AssetExecutionContext, DagsterInstance, asset, materialize

from aiflow.models.bundle import load_bundle
from aiflow.storage.artifacts import ArtifactStore
from aiflow.train.contract import TrainRequest, TrainResult
from resources.training import SubprocessTrainingLauncher, TrainingLauncher
from tests.aiflow.train.conftest import make_request


def candidate_asset(request: TrainRequest, messages: list):
    @asset(name="candidate")
    def candidate(context: AssetExecutionContext, trainer: TrainingLauncher):
        invocation = trainer.launch(context, request)
        messages.extend(invocation.get_custom_messages())
        return invocation.get_materialize_result()

    return candidate


def run(request: TrainRequest, messages: list | None = None) -> tuple:
    instance = DagsterInstance.ephemeral()
    assets = [candidate_asset(request, [] if messages is None else messages)]
    result = materialize(assets, resources={"trainer": SubprocessTrainingLauncher()}, instance=instance, raise_on_error=False)
    return result, instance.all_logs(result.run_id)


def test_materialization_carries_metrics_lineage_and_artifact(lake, train_spec, tmp_path):
    request = make_request(lake, train_spec, tmp_path, "through-pipes", epochs=2)
    messages: list = []
    result, logs = run(request, messages)
    assert result.success
    [materialization] = result.asset_materializations_for_node("candidate")
    meta = {k: v.value for k, v in materialization.metadata.items()}

    assert 0.0 < meta["valid_roc_auc"] < 1.0
    for name in ("valid_pr_auc", "valid_log_loss", "valid_loss", "train_loss", "naive_roc_auc", "naive_log_loss"):
        assert isinstance(meta[name], float), name
    assert (meta["epochs_run"], meta["device"], meta["resumed_from_epoch"]) == (2, "cpu", None)
    assert (meta["features_uri"], meta["data_version"]) == (request.features_uri, request.data_version)
    assert meta["rows_train"] > 0 and meta["rows_valid"] > 0 and meta["wall_time_s"] > 0
    assert meta["params"] == request.params.model_dump(mode="json")
    assert materialization.tags["dagster/data_version"] == meta["artifact_sha256"]
    assert any(entry.user_message.startswith("epoch 2/2 train_loss=") for entry in logs)  # pipes.log lines reach the run log

    # the whole TrainResult also comes back as a custom message (for ops that are not asset steps, e.g. sweeps)
    [reported] = [TrainResult.model_validate(m) for m in messages]
    assert (reported.artifact_sha256, reported.metrics["roc_auc"]) == (meta["artifact_sha256"], meta["valid_roc_auc"])

    # what Dagster recorded is enough to load the verified model
    model = load_bundle(ArtifactStore(tmp_path), meta["artifact_uri"], meta["artifact_sha256"])
    assert model.manifest["lineage"]["data_version"] == request.data_version


def test_a_failing_training_fails_the_step_with_the_engine_error_and_reports_nothing(lake, train_spec, tmp_path):
    request = make_request(lake, train_spec, tmp_path, "broken", epochs=1).model_copy(update={"data_version": 99})
    result, logs = run(request)
    assert not result.success
    assert result.asset_materializations_for_node("candidate") == []
    # the engine's own exception travels through Pipes into the run's event log
    closed = next(entry for entry in logs if "closed with exception" in entry.user_message)
    error = closed.dagster_event.event_specific_data.error
    assert error.cls_name == "ValueError" and "at version 99" in error.message
