"""Training stage: the candidate model, trained through Pipes on a pinned version of the features."""

import pydantic
from dagster import AssetExecutionContext, AssetsDefinition, Config, MaterializeResult, asset
from pydantic import Field

from aiflow.models.lineage import code_version
from aiflow.spec import DatasetSpec
from aiflow.train.contract import TrainParams
from aiflow.train.request import pinned_request
from assets.keys import candidate_key, features_key
from resources.storage import ArtifactsResource, LakeResource
from resources.training import TrainingLauncher

#: The launchpad config: exactly the hyperparameters of TrainParams (one definition, no copy).
TrainConfig = pydantic.create_model(
    "TrainConfig",
    __base__=Config,
    reason=(str, Field("manual", description="Why this training runs (manual, schedule, drift...); recorded with the model.")),
    **{name: (field.annotation, field) for name, field in TrainParams.model_fields.items()},
)



def candidate_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=candidate_key(spec),
        deps=[features_key(spec)],
        group_name="training",
        kinds={"pytorch", "sklearn"},
        description=f"Candidate PyTorch model for '{spec.name}' (with its scikit-learn baseline), trained on a pinned features version.",
    )
    def _candidate(
        context: AssetExecutionContext, config: TrainConfig, lake: LakeResource, artifacts: ArtifactsResource, trainer: TrainingLauncher
    ) -> MaterializeResult:
        params = TrainParams(**config.model_dump(exclude={"reason"}))
        # the root run id survives retries and re-executions: a restarted training resumes its checkpoint
        run = context.dagster_run
        request = pinned_request(
            lake.lake(), spec, params, artifacts.uri(), run.root_run_id or run.run_id, config.reason, code_version=code_version()
        )
        context.log.info(f"training on {request.features_uri} at version {request.data_version} (key {request.checkpoint_key})")
        return trainer.launch(context, request).get_materialize_result()

    return _candidate


def training_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [candidate_asset(spec)]
