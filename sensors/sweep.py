"""Sweep job: train several configurations on the same pinned data, keep the best by validation metric.

Each variant is its own step (parallel subprocesses with the multiprocess executor locally, one pod
each with the Kubernetes launcher); every candidate is listed in the run, the best is recorded in
``registry/candidates`` under the sweep's run id and materialized as ``<dataset>/candidate``
(evaluate it with its ``candidate_id``).
"""

from dagster import (
    AssetMaterialization,
    Config,
    DynamicOut,
    DynamicOutput,
    In,
    MetadataValue,
    OpExecutionContext,
    Out,
    job,
    op,
)
from pydantic import Field

from aiflow.models.lineage import code_version
from aiflow.models.metric_names import training_metrics
from aiflow.spec import DatasetSpec
from aiflow.train.contract import TrainParams, TrainRequest, TrainResult
from aiflow.train.request import pinned_request, record_trained
from aiflow.train.selection import best_result, sweep_table
from assets.keys import candidate_key
from assets.metadata import frame_table
from assets.training import TrainConfig, link
from resources.executors import parallel_executor
from resources.storage import ArtifactsResource, LakeResource
from resources.training import TrainingLauncher, train_result

DEFAULT_VARIANTS = [
    {"learning_rate": 0.003, "hidden": [128, 64]},
    {"learning_rate": 0.001, "hidden": [256, 128]},
    {"learning_rate": 0.003, "hidden": [64], "dropout": 0.0},
]


class SweepConfig(Config):
    variants: list[TrainConfig] = Field(
        default=DEFAULT_VARIANTS, description="Hyperparameter sets to train; unspecified fields take TrainParams defaults."
    )


def sweep_job(spec: DatasetSpec):
    @op(name=f"{spec.name}_plan_sweep", out=DynamicOut(str), description="Pin the features version once and fan out one training request per variant.")
    def plan_sweep(context: OpExecutionContext, config: SweepConfig, lake: LakeResource, artifacts: ArtifactsResource):
        run = context.dagster_run
        for i, variant in enumerate(config.variants):
            params = TrainParams(**variant.model_dump(exclude={"reason", "force_retrain"}))
            request = pinned_request(
                lake.lake(), spec, params, artifacts.uri(), f"{run.root_run_id or run.run_id}-c{i}", "sweep", code_version=code_version()
            )
            context.log.info(f"variant c{i}: {params.model_dump()} on features version {request.data_version}")
            yield DynamicOutput(request.model_dump_json(), mapping_key=f"c{i}")

    @op(name=f"{spec.name}_train_variant", ins={"request_json": In(str)}, out=Out(str), description="Train one variant through the training launcher.")
    def train_variant(context: OpExecutionContext, request_json: str, trainer: TrainingLauncher) -> str:
        request = TrainRequest.model_validate_json(request_json)
        return train_result(trainer.launch(context, request)).model_dump_json()

    @op(
        name=f"{spec.name}_select_best",
        ins={"results": In(list)},
        description="Record the best variant in registry/candidates and materialize it as the candidate.",
    )
    def select_best(context: OpExecutionContext, results: list, lake: LakeResource) -> str:
        parsed = [TrainResult.model_validate_json(r) for r in results]
        best, metric = best_result(parsed, spec.problem_type)
        table = sweep_table(parsed, metric)
        candidate = record_trained(lake.lake(), spec.name, best, run_id=context.run_id, source="sweep")
        context.log.info(f"best of {len(parsed)} by {metric}: {best.artifact_uri}, recorded as candidate {candidate.candidate_id}")
        context.log_event(
            AssetMaterialization(
                asset_key=candidate_key(spec),
                description=f"best of a {len(parsed)}-variant sweep by validation {metric}",
                metadata={
                    "candidate_id": candidate.candidate_id,
                    **{k: MetadataValue.float(round(v, 6)) for k, v in training_metrics(best.metrics, best.naive_metrics, best.family_metrics).items()},
                    "artifact_uri": link(best.artifact_uri),
                    "artifact_sha256": best.artifact_sha256,
                    "family": best.family,
                    "data_version": best.data_version,
                    "features_uri": best.features_uri,
                    "selected_by": metric,
                    "params": MetadataValue.json(best.params.model_dump()),
                    "sweep_candidates": frame_table(table),
                },
            )
        )
        return candidate.candidate_id

    @job(name=f"{spec.name}_sweep_job", executor_def=parallel_executor, description=f"'{spec.name}': train several hyperparameter sets on the same pinned features and keep the best.")
    def _sweep():
        select_best(plan_sweep().map(train_variant).collect())

    return _sweep
