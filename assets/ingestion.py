"""Ingestion stage: landing files → bronze Delta tables (one asset per table of the dataset)."""

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    asset,
)
from pydantic import Field

from aiflow.data.ingest import DUPLICATE, INGESTED, REJECTED, IngestReport, ingest, recorded_files
from aiflow.spec import DatasetSpec, TableSpec
from aiflow.storage.lake import Tables
from assets.keys import bronze_key
from assets.metadata import frame_table, table_data_version, table_metadata, uri_value
from resources.storage import LakeResource, LandingResource


class IngestConfig(Config):
    files: list[str] | None = Field(
        None, description="Files to ingest, relative to the landing zone. Empty: every file not yet in the ledger."
    )
    chunk_rows: int = Field(1_000_000, description="Rows buffered per Delta commit (bounds memory).")


#: Blocking check on every bronze asset: no file of the run quarantined more than the table's max_quarantined_share.
QUARANTINE_CHECK = "quarantine_within_limit"


def quarantine_check(report: IngestReport, table: TableSpec) -> AssetCheckResult:
    """The run's quarantine shares per file; fails (blocking) when a file was rejected for quarantining too many rows."""
    limit = table.landing.max_quarantined_share
    shares = pl.DataFrame(
        [
            {"file": f.file, "outcome": f.outcome, "quarantine_share": f.quarantine_share, "rows_quarantined": f.rows_quarantined, "error": f.error}
            for f in report.files
            if f.quarantine_share is not None
        ],
        schema={"file": pl.String, "outcome": pl.String, "quarantine_share": pl.Float64, "rows_quarantined": pl.Int64, "error": pl.String},
    ).sort("quarantine_share", descending=True)
    over = report.over_limit
    observed = float(shares["quarantine_share"].max()) if shares.height else 0.0  # the run's highest share of any file
    if over:
        description = f"{len(over)} file(s) over max_quarantined_share {limit:g}, rejected whole: " + " | ".join(f.error for f in over)
    else:
        worst = f"; highest {shares['quarantine_share'][0]:.0%} ({shares['file'][0]})" if shares.height else ""
        description = f"every file of the run within max_quarantined_share {limit:g}{worst}"
    return AssetCheckResult(
        check_name=QUARANTINE_CHECK,
        passed=not over,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "observed": observed,
            "threshold": limit,
            "margin": limit - observed,
            "files_over_limit": len(over),
            "file_shares": frame_table(shares, max_rows=50),
        },
    )


def bronze_asset(spec: DatasetSpec, table: TableSpec) -> AssetsDefinition:
    key = bronze_key(spec, table)

    @asset(
        key=key,
        group_name="ingestion",
        kinds={"delta", "polars"},
        check_specs=[
            AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=key,
                blocking=True,
                description=f"No file of the run sent more than max_quarantined_share "
                f"({table.landing.max_quarantined_share:g}) of its rows to quarantine; such a file is rejected whole.",
            )
        ],
        # no pool: the engine commits each file once whatever runs at the same time (aiflow.data.ingest)
        description=f"Raw rows of '{table.name}' from its landing zone, with lineage columns; idempotent by file hash.",
    )
    def _bronze(context: AssetExecutionContext, config: IngestConfig, lake: LakeResource, landing: LandingResource) -> MaterializeResult:
        store, zone = lake.lake(), landing.zone(table)
        files = config.files
        context.log.info(f"ingesting {'every new file' if files is None else f'{len(files)} file(s)'} from {zone.uri}")

        def progress(done: int, total: int) -> None:
            if done == total or done % max(1, total // 10) == 0:
                context.log.info(f"{done}/{total} files read")

        report = ingest(store, zone, table, files, chunk_rows=config.chunk_rows, on_progress=progress)
        for f in report.files:
            if f.over_limit:
                context.log.error(f"rejected {f.file}: {f.error} (kept at {f.rejected_to})")
            elif f.outcome == REJECTED:
                context.log.warning(f"rejected {f.file}: {f.error} (kept at {f.rejected_to})")
        if report.new_columns:
            context.log.warning(f"new column(s) kept as strings (schema merged): {report.new_columns}")
        outcomes = pl.DataFrame(
            [{"file": f.file, "outcome": f.outcome, "rows": f.rows_ingested, "quarantined": f.rows_quarantined, "error": f.error} for f in report.files],
            schema={"file": pl.String, "outcome": pl.String, "rows": pl.Int64, "quarantined": pl.Int64, "error": pl.String},
        )
        not_ingested = outcomes.filter(pl.col("outcome") != INGESTED)
        bronze = Tables.bronze(table.name)
        # run_*: what this run did; dagster/row_count and table_*: the table as it now is
        metadata = {
            **table_metadata(store, bronze, descriptions={n: c.description for n, c in table.columns.items() if c.description}),
            "run_files_ingested": report.count(INGESTED),
            "run_files_duplicate": report.count(DUPLICATE),
            "run_files_rejected": report.count(REJECTED),
            "run_rows_in": report.rows_ingested + report.rows_quarantined,
            "run_rows_out": report.rows_ingested,
            "run_rows_quarantined": report.rows_quarantined,
            "run_batches_repaired": report.batches_repaired,
            "run_event_dates_touched": len(report.event_dates),
            "run_changed_table": report.bronze_version is not None,
            "table_files_in_ledger": len(recorded_files(store, table)),
            "batch_id": report.batch_id,
            "landing_zone": uri_value(zone.uri),
        }
        if report.new_columns:
            metadata["run_new_columns"] = ", ".join(report.new_columns)
        if report.ledger_version is not None:
            metadata["ledger_version"] = report.ledger_version
        if not_ingested.height:
            metadata["files_not_ingested"] = frame_table(not_ingested, max_rows=50)
        if report.batches_repaired:
            context.log.warning(f"completed {report.batches_repaired} batch(es) of a stopped run (quarantine and ledger)")
        context.log.info(report.summary())
        return MaterializeResult(
            metadata=metadata, data_version=table_data_version(store, bronze), check_results=[quarantine_check(report, table)]
        )

    return _bronze


def ingestion_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [bronze_asset(spec, t) for t in spec.tables]
