"""Feature stage: silver (+ side tables) → model-ready features, incremental by event date."""

import polars as pl
from dagster import AssetExecutionContext, AssetsDefinition, Config, MaterializeResult, asset
from pydantic import Field

from aiflow.data.features import feature_columns
from aiflow.data.quality import features_checks
from aiflow.data.refine import refresh_features
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Tables
from assets.checks import blocking_checks
from assets.keys import features_key, silver_key
from assets.metadata import frame_table, table_data_version, table_metadata, uri_value
from resources.storage import LakeResource


class FeaturesConfig(Config):
    refit: bool = Field(False, description="Refit the stored vocabularies and scaling statistics and rebuild every date.")


def features_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=features_key(spec),
        deps=[silver_key(spec, t) for t in spec.tables],
        group_name="features",
        kinds={"delta", "polars"},
        description=f"Model-ready features of '{spec.name}': calendar, as-of joined side tables, encoded categories, scaled numerics.",
    )
    def _features(context: AssetExecutionContext, config: FeaturesConfig, lake: LakeResource) -> MaterializeResult:
        store = lake.lake()
        report = refresh_features(store, spec, refit=config.refit)
        features = Tables.features(spec.name)
        if not store.exists(Tables.silver(spec.name)):
            context.log.info(f"no silver table at {store.uri(Tables.silver(spec.name))} (nothing ingested yet): no features to build")
        if report.state_refitted:
            context.log.info("feature state (vocabularies, scaling statistics) fitted and stored")
        context.log.info(f"{len(report.dates)} date(s) rebuilt, {report.rows_out} rows")
        columns = feature_columns(spec)
        roles = [("categorical", columns.categorical), ("numeric", columns.numeric), ("calendar", columns.calendar), ("target", [spec.target.name])]
        # run_*: what this run did; dagster/row_count: the table as it now is
        metadata = {
            **table_metadata(store, features),
            "run_rows_out": report.rows_out,
            "run_dates_rewritten": len(report.dates),
            "run_full_refresh": report.full_refresh,
            "run_state_refitted": report.state_refitted,
            "feature_state_table": uri_value(store.uri(Tables.feature_state(spec.name))),
            "upstream_versions": dict(report.upstream),
            "features": frame_table(
                pl.DataFrame({"role": [r for r, cols in roles for _ in cols], "column": [c for _, cols in roles for c in cols]})
            ),
        }
        # the features table's version (a refit rewrites every date, so it moves it too)
        return MaterializeResult(metadata=metadata, data_version=table_data_version(store, features))

    return _features


def feature_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [features_asset(spec)]


def feature_checks(spec: DatasetSpec) -> list:
    return [blocking_checks(features_key(spec), f"{spec.name}_features_quality", lambda lake: features_checks(lake.lake(), spec))]
