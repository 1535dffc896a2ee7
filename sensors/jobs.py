"""Jobs: per dataset (data plane, whole lifecycle, maintenance) and the same two across every dataset."""

import datetime as dt

from dagster import AssetSelection, Config, OpExecutionContext, define_asset_job, job, op
from pydantic import Field

from aiflow.data.maintenance import HOT_DAYS, maintain
from aiflow.models.cleanup import clean_artifacts
from aiflow.spec import DatasetSpec
from assets.keys import canary_analysis_key, decisions_key, drift_key, inference_log_key, labels_key, live_performance_key, retrain_job_name
from assets.monitoring import window_partitions
from resources.storage import ArtifactsResource, LakeResource

DATA_PLANE_GROUPS = ("ingestion", "cleansing", "features")
LIFECYCLE_GROUPS = (*DATA_PLANE_GROUPS, "training", "validation", "deployment")
DATA_PLANE_JOB = "data_plane_job"
LIFECYCLE_JOB = "lifecycle_job"


def data_plane_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_{DATA_PLANE_JOB}"


def lifecycle_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_{LIFECYCLE_JOB}"


def _of(spec: DatasetSpec | None, groups: tuple[str, ...]) -> AssetSelection:
    selection = AssetSelection.groups(*groups)
    return selection if spec is None else selection & AssetSelection.key_prefixes([spec.name])


def data_plane_job(spec: DatasetSpec | None = None):
    """Landing → features for one dataset, or for every dataset of the code location (``spec`` None)."""
    return define_asset_job(
        DATA_PLANE_JOB if spec is None else data_plane_job_name(spec),
        selection=_of(spec, DATA_PLANE_GROUPS),
        description="Ingest new landing files, cleanse them into silver and build features (incremental)"
        + ("" if spec is None else f" for '{spec.name}'")
        + ".",
    )


def lifecycle_job(spec: DatasetSpec | None = None):
    """The whole lifecycle of one dataset, or of every dataset of the code location (``spec`` None)."""
    return define_asset_job(
        LIFECYCLE_JOB if spec is None else lifecycle_job_name(spec),
        selection=_of(spec, LIFECYCLE_GROUPS),
        description="The whole lifecycle"
        + ("" if spec is None else f" of '{spec.name}'")
        + ": new landing files, features, training, gates, registration, promotion, batch scoring.",
    )


def canary_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_canary_job"


def canary_job(spec: DatasetSpec):
    """Observe the inference log and labels of one dataset, then run the canary analysis (promote, roll back or wait)."""
    return define_asset_job(
        canary_job_name(spec),
        selection=AssetSelection.assets(inference_log_key(spec), labels_key(spec), canary_analysis_key(spec)),
        description=f"Observe the inference log and labels of '{spec.name}' and compare its canary with the champion "
        "(promote, roll back or wait under the configured policy).",
    )


MODEL_GROUPS = ("training", "validation", "deployment")
#: Run tag naming the model a retrain is for: the run queue allows one such run per model at a time
#: (``tag_concurrency_limits`` in deploy/dagster.local.yaml and the Helm values).
RETRAIN_TAG = "aiflow/retrain"


def monitoring_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_monitoring_job"


#: Run tag of a monitoring run: the run queue runs one per dataset at a time, in the order requested, so the
#: windows are decided in data-time order (``tag_concurrency_limits`` in deploy/dagster.local.yaml).
MONITORING_TAG = "aiflow/monitoring"


def monitoring_job(spec: DatasetSpec):
    """One monitoring window (a partition): drift, live performance, then the policy's decision."""
    return define_asset_job(
        monitoring_job_name(spec),
        selection=AssetSelection.assets(drift_key(spec), live_performance_key(spec), decisions_key(spec)),
        partitions_def=window_partitions(spec),
        tags={MONITORING_TAG: spec.name},
        description=f"One monitoring window of '{spec.name}' (a partition: data time): drift (Evidently), live performance "
        "(realized and estimated) and the retraining policy's decision. Started by the monitoring sensor for each window "
        "data time has moved past, and again when its labels change; a backfill recomputes a range.",
    )


def retrain_job(spec: DatasetSpec):
    """Train on the newest features, gate against the champion, register, promote, score: what the retrain sensor starts."""
    return define_asset_job(
        retrain_job_name(spec),
        selection=_of(spec, MODEL_GROUPS),
        tags={RETRAIN_TAG: spec.name},
        description=f"Retrain '{spec.name}' on the newest features (moving windows), gate the candidate against the champion, "
        "register it, promote it when it passes and score. Started by the retrain sensor or schedule; one at a time per model.",
    )


class MaintenanceConfig(Config):
    retention_hours: int = Field(168, description="Vacuum keeps unreferenced files younger than this (time travel window).")
    target_file_mb: int = Field(128, ge=1, description="Compaction rewrites small files into files of about this size (MiB).")
    hot_days: int | None = Field(
        HOT_DAYS,
        ge=0,
        description="Files holding the last N days before a table's newest event date are not compacted (daily runs still replace them); "
        "null compacts everything.",
    )


class ArtifactCleanupConfig(Config):
    retention_hours: int = Field(168, ge=0, description="Unregistered bundles, checkpoints and plots younger than this are kept.")
    dry_run: bool = Field(False, description="Only report what would be removed.")


def maintenance_job(spec: DatasetSpec):
    @op(name=f"{spec.name}_compact_and_vacuum", description="Compact small files and vacuum unreferenced ones in every table of the dataset.")
    def compact_and_vacuum(context: OpExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> None:
        for r in maintain(
            lake.lake(), spec, retention_hours=config.retention_hours, target_file_bytes=config.target_file_mb * 2**20, hot_days=config.hot_days
        ):
            context.log.info(
                f"{r.table}: compaction removed {r.files_removed_by_compaction} files, added "
                f"{r.files_added_by_compaction}; vacuum deleted {r.files_vacuumed}; now version {r.version}"
            )

    @op(
        name=f"{spec.name}_clean_artifacts",
        description="Remove bundles, checkpoints and plots that no registered model version references, after the retention period.",
    )
    def clean_model_artifacts(context: OpExecutionContext, config: ArtifactCleanupConfig, lake: LakeResource, artifacts: ArtifactsResource) -> None:
        report = clean_artifacts(
            lake.lake(), artifacts.store(), spec.name, retention=dt.timedelta(hours=config.retention_hours), dry_run=config.dry_run
        )
        verb = "would remove" if report.dry_run else "removed"
        context.log.info(
            f"{spec.name} artifacts: {verb} {len(report.bundles)} bundle(s), {len(report.checkpoints)} checkpoint(s), "
            f"{len(report.plots)} plot(s) ({report.bytes_freed:,} bytes); kept {report.kept_referenced} referenced by a "
            f"registered version and {report.kept_recent} younger than {config.retention_hours} h"
        )

    @job(
        name=f"{spec.name}_maintenance_job",
        description=f"Compact and vacuum the Delta tables of '{spec.name}'; remove model artifacts no registered version needs.",
    )
    def _maintenance():
        compact_and_vacuum()
        clean_model_artifacts()

    return _maintenance
