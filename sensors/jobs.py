"""Jobs: the data plane (landing → features) and table maintenance."""

from dagster import AssetSelection, Config, OpExecutionContext, define_asset_job, job, op
from pydantic import Field

from aiflow.data.maintenance import maintain
from aiflow.spec import DatasetSpec
from resources.storage import LakeResource

DATA_PLANE_JOB = "data_plane_job"
LIFECYCLE_JOB = "lifecycle_job"


def data_plane_job():
    return define_asset_job(
        DATA_PLANE_JOB,
        selection=AssetSelection.groups("ingestion", "cleansing", "features"),
        description="Ingest new landing files, cleanse them into silver and build features (incremental).",
    )


def lifecycle_job():
    return define_asset_job(
        LIFECYCLE_JOB,
        selection=AssetSelection.groups("ingestion", "cleansing", "features", "training", "validation", "deployment"),
        description="The whole lifecycle: new landing files, features, training, gates, registration, promotion, batch scoring.",
    )


class MaintenanceConfig(Config):
    retention_hours: int = Field(168, description="Vacuum keeps unreferenced files younger than this (time travel window).")


def maintenance_job(spec: DatasetSpec):
    @op(description="Compact small files and vacuum unreferenced ones in every table of the dataset.")
    def compact_and_vacuum(context: OpExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> None:
        for r in maintain(lake.lake(), spec, retention_hours=config.retention_hours):
            context.log.info(
                f"{r.table}: compaction removed {r.files_removed_by_compaction} files, added "
                f"{r.files_added_by_compaction}; vacuum deleted {r.files_vacuumed}; now version {r.version}"
                + (f"; removed {r.orphan_rows_removed} rows of killed ingestions" if r.orphan_rows_removed else "")
            )

    @job(name="maintenance_job", description="Compact and vacuum the dataset's Delta tables.")
    def _maintenance():
        compact_and_vacuum()

    return _maintenance
