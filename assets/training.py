"""Training stage: the candidate model, trained through Pipes on a pinned version of the features."""

import copy

import pydantic
from dagster import AssetExecutionContext, AssetsDefinition, Config, DataVersion, MaterializeResult, MetadataValue, asset
from pydantic import BaseModel, Field

from aiflow.models.lineage import code_version
from aiflow.spec import DatasetSpec
from aiflow.train.contract import TrainParams
from aiflow.train.request import hand_on, pinned_request, record_trained, request_windows, reusable_candidate
from assets.keys import candidate_key, features_key
from resources.faults import classified
from resources.storage import ArtifactsResource, LakeResource
from resources.training import TrainingLauncher, train_result


def launchpad_fields(model: type[BaseModel]) -> dict:
    """The fields of an engine model for a ``dagster.Config``, every factory default made explicit.

    A ``default_factory`` (hidden layers, gate thresholds) shows as no default at all in the
    launchpad; its value is put in as the field's plain default instead, so the launchpad and
    ``dagster job scaffold_config`` show it.
    """
    fields = {}
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            field = copy.copy(field)
            field.default = field.default_factory()
            field.default_factory = None
        fields[name] = (field.annotation, field)
    return fields


#: The launchpad config: exactly the hyperparameters of TrainParams (one definition, no copy).
TrainConfig = pydantic.create_model(
    "TrainConfig",
    __base__=Config,
    reason=(str, Field("manual", description="Why this training runs (manual, schedule, drift...); recorded with the model.")),
    force_retrain=(
        bool,
        Field(False, description="Train even when a candidate with the same data version, code version and hyperparameters exists."),
    ),
    **launchpad_fields(TrainParams),
)


#: Run tag carrying why a run trains (set by the retrain sensor and schedule); recorded as the model's reason.
REASON_TAG = "aiflow/reason"
#: The monitoring window a retrain was asked for by (set by the retrain and monitoring sensors).
WINDOW_TAG = "aiflow/window"


def run_ids(context) -> list[str]:
    """This run's id, then its parent's and root's: a re-execution finds what the original run recorded."""
    run = context.run  # asset and asset-check contexts both have it
    return [i for i in (run.run_id, run.parent_run_id, run.root_run_id) if i]


def link(uri: str) -> MetadataValue:
    """A clickable location in the UI: a URL for object stores, a path for local files."""
    return MetadataValue.url(uri) if "://" in uri else MetadataValue.path(uri)


def skip_retraining(context, store, request, artifacts: ArtifactsResource, *, force: bool) -> MaterializeResult | None:
    """The result that hands on an existing candidate when this training would only repeat it; None (logged why) to train."""
    windows = request_windows(request)
    context.log.info(f"windows: {windows.describe()}")
    if force:
        context.log.info("retraining: forced (force_retrain)")
        return None
    reuse = reusable_candidate(store, request, artifacts.options())
    if reuse.candidate is None:
        context.log.info(f"retraining: {reuse.reason}")
        return None
    handed = hand_on(store, reuse.candidate, context.run_id)
    context.log.info(f"training skipped: {reuse.reason}; handing it on as candidate {handed.candidate_id} (force_retrain=true trains anyway)")
    return MaterializeResult(
        metadata={
            "training_skipped": True,
            "skip_reason": reuse.reason,
            "reused_candidate_id": reuse.candidate.candidate_id,
            "candidate_id": handed.candidate_id,
            "artifact_uri": link(handed.artifact_uri),
            "artifact_sha256": handed.artifact_sha256,
            "data_version": handed.data_version,
            **{f"split_{k}": v or "" for k, v in windows.as_dict().items()},
        },
        data_version=DataVersion(handed.artifact_sha256),
    )


def candidate_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=candidate_key(spec),
        deps=[features_key(spec)],
        group_name="training",
        kinds={"pytorch", "sklearn"},
        description=f"Candidate model for '{spec.name}': the best of the PyTorch network and the scikit-learn model, trained on a pinned features version.",
    )
    def _candidate(
        context: AssetExecutionContext, config: TrainConfig, lake: LakeResource, artifacts: ArtifactsResource, trainer: TrainingLauncher
    ) -> MaterializeResult:
        """Candidate model trained through Pipes; recorded in registry/candidates under this run."""
        params = TrainParams(**config.model_dump(exclude={"reason", "force_retrain"}))
        store = lake.lake()
        stores = {"lake": store.root, "artifacts": artifacts.uri()}
        retries = {"retries": trainer.infrastructure_retries, "wait_s": trainer.infrastructure_retry_wait_s}
        with classified(context, stores, what=f"{spec.name} training", **retries):  # a store down: retried; a bad spec: not
            return _train(context, config, params, store, artifacts, trainer)

    def _train(context, config, params, store, artifacts, trainer) -> MaterializeResult:
        # the root run id survives retries and re-executions: a restarted training resumes its checkpoint
        run = context.dagster_run
        # an explicit launchpad reason wins; otherwise the reason the retrain sensor or schedule put on the run
        reason = config.reason if config.reason != "manual" else run.tags.get(REASON_TAG, "manual")
        request = pinned_request(store, spec, params, artifacts.uri(), run.root_run_id or run.run_id, reason, code_version=code_version())
        context.log.info(f"training on {request.features_uri} at version {request.data_version} (key {request.checkpoint_key})")
        skipped = skip_retraining(context, store, request, artifacts, force=config.force_retrain)
        if skipped is not None:
            return skipped
        invocation = trainer.launch(context, request)
        result = train_result(invocation)
        candidate = record_trained(store, spec.name, result, run_id=context.run_id, source="training")
        context.log.info(
            f"candidate {candidate.candidate_id} ({result.family}): {candidate.artifact_uri} (digest {candidate.artifact_sha256[:12]})"
        )
        reported = invocation.get_materialize_result()
        return MaterializeResult(
            metadata={**(reported.metadata or {}), "candidate_id": candidate.candidate_id},
            data_version=reported.data_version,
            check_results=reported.check_results,
        )

    return _candidate


def training_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [candidate_asset(spec)]
