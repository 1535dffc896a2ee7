"""Cleansing stage: bronze → silver per table, incremental by event date, with blocking quality checks."""

from dagster import AssetExecutionContext, AssetsDefinition, Config, MaterializeResult, asset
from pydantic import Field

from aiflow.data.quality import silver_checks
from aiflow.data.refine import refresh_silver
from aiflow.spec import DatasetSpec, TableSpec
from aiflow.storage.lake import Tables
from assets.checks import blocking_checks
from assets.keys import bronze_key, silver_key
from assets.metadata import quarantine_summary, table_data_version, table_metadata, uri_value
from resources.storage import LakeResource


class CleanseConfig(Config):
    full_refresh: bool = Field(False, description="Recompute every date, not only those with new bronze rows.")


def silver_asset(spec: DatasetSpec, table: TableSpec) -> AssetsDefinition:
    @asset(
        key=silver_key(spec, table),
        deps=[bronze_key(spec, table)],
        group_name="cleansing",
        kinds={"delta", "polars"},
        description=f"Typed, de-duplicated, rule-checked rows of '{table.name}'; failures go to quarantine with the rule.",
    )
    def _silver(context: AssetExecutionContext, config: CleanseConfig, lake: LakeResource) -> MaterializeResult:
        store = lake.lake()
        report = refresh_silver(store, table, full=config.full_refresh)
        silver, quarantine = Tables.silver(table.name), Tables.quarantine(table.name)
        if not store.exists(Tables.bronze(table.name)):
            context.log.info(f"no bronze table at {store.uri(Tables.bronze(table.name))} (nothing ingested yet): nothing to cleanse")
        elif report.skipped:
            context.log.info("no new bronze rows: nothing to cleanse")
        else:
            context.log.info(
                f"{len(report.dates)} date(s) rewritten: {report.rows_in} rows in, {report.rows_out} out, "
                f"{report.rows_quarantined} quarantined, {report.rows_superseded} superseded"
            )
        # run_*: what this run did; dagster/row_count and table_*: the tables as they now are
        metadata = {
            **table_metadata(store, silver, descriptions={n: c.description for n, c in table.columns.items() if c.description}),
            "run_rows_in": report.rows_in,
            "run_rows_out": report.rows_out,
            "run_rows_quarantined": report.rows_quarantined,
            "run_rows_superseded": report.rows_superseded,
            "run_dates_rewritten": len(report.dates),
            "run_full_refresh": report.full_refresh,
            "upstream_versions": dict(report.upstream),
            "quarantine_table": uri_value(store.uri(quarantine)),
            **quarantine_summary(store, quarantine),
        }
        if report.dates:
            metadata.update(run_first_date=str(report.dates[0]), run_last_date=str(report.dates[-1]))
        return MaterializeResult(metadata=metadata, data_version=table_data_version(store, silver))

    return _silver


def cleansing_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [silver_asset(spec, t) for t in spec.tables]


def cleansing_checks(spec: DatasetSpec) -> list:
    return [
        blocking_checks(silver_key(spec, t), f"{spec.name}_silver_{t.name}_quality", lambda lake, t=t: silver_checks(lake.lake(), t))
        for t in spec.tables
    ]
