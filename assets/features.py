"""Feature stage: silver (+ side tables) → model-ready features, incremental by event date."""

from dagster import AssetExecutionContext, AssetsDefinition, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from aiflow.data.features import feature_columns
from aiflow.data.quality import features_checks
from aiflow.data.refine import refresh_features
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Tables
from assets.checks import blocking_checks
from assets.keys import features_key, silver_key
from assets.metadata import table_metadata
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
        if report.state_refitted:
            context.log.info("feature state (vocabularies, scaling statistics) fitted and stored")
        context.log.info(f"{len(report.dates)} date(s) rebuilt, {report.rows_out} rows")
        columns = feature_columns(spec)
        return MaterializeResult(
            metadata={
                **table_metadata(store, Tables.features(spec.name)),
                "rows_out": report.rows_out,
                "dates_rewritten": len(report.dates),
                "full_refresh": report.full_refresh,
                "state_refitted": report.state_refitted,
                "feature_state_table": store.uri(Tables.feature_state(spec.name)),
                "upstream_versions": dict(report.upstream),
                "features": MetadataValue.md(
                    f"categorical: {', '.join(columns.categorical)}\n\nnumeric: {', '.join(columns.numeric)}\n\n"
                    f"calendar: {', '.join(columns.calendar)}\n\ntarget: {spec.target.name}"
                ),
            }
        )

    return _features


def feature_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [features_asset(spec)]


def feature_checks(spec: DatasetSpec) -> list:
    return [blocking_checks(features_key(spec), f"{spec.name}_features_quality", lambda lake: features_checks(lake.lake(), spec))]
