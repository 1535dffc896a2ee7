"""Monitoring stage: the online server's inference log and labels as observed source assets, and the canary analysis."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    SourceAsset,
    asset,
    observable_source_asset,
)
from pydantic import Field

from aiflow.models.registry import Registry
from aiflow.serving.canary import CanaryPolicy, analyse, apply_decision
from aiflow.serving.feedback import labels_table
from aiflow.serving.inference_log import log_table
from aiflow.spec import DatasetSpec
from assets.deployment import actor, alias_metadata
from assets.keys import canary_analysis_key, inference_log_key, labels_key
from assets.metadata import frame_table, table_data_version, table_metadata
from resources.storage import LakeResource

GROUP = "monitoring"


class CanaryConfig(Config):
    min_requests: int = Field(200, ge=1, description="Scored records each of canary and champion need before a decision.")
    min_labels: int = Field(50, ge=0, description="Labelled records each needs before the quality metric is compared.")
    require_quality: bool = Field(True, description="Wait for min_labels labels before promoting (errors and latency alone can roll back).")
    error_rate_tolerance: float = Field(
        0.01, ge=0, description="The canary's error rate may exceed the champion's by this much (absolute)."
    )
    latency_p99_factor: float = Field(1.5, ge=1, description="The canary's p99 latency may be at most this multiple of the champion's.")
    quality_tolerance: float = Field(
        0.02, ge=0, description="Allowed quality loss: absolute for ROC AUC / accuracy, relative for RMSE (0.02 = 2 % higher)."
    )
    dry_run: bool = Field(False, description="Analyse and report the decision without changing any alias.")

    def policy(self) -> CanaryPolicy:
        return CanaryPolicy(**self.model_dump(exclude={"dry_run"}))


def _observed(spec: DatasetSpec, key, table_of, what: str) -> SourceAsset:
    table = table_of(spec.name)

    @observable_source_asset(key=key, group_name=GROUP, description=f"{what} of '{spec.name}' (Delta, written by the online server).")
    def _observe(lake: LakeResource) -> ObserveResult:
        """The table's Delta version as the data version, with its row count and preview."""
        store = lake.lake()
        version: DataVersion = table_data_version(store, table)
        return ObserveResult(data_version=version, metadata=table_metadata(store, table))

    return _observe


def monitoring_assets(spec: DatasetSpec) -> list[AssetsDefinition | SourceAsset]:
    """The inference log and labels (observed) and the canary analysis of one dataset."""
    inference_log = _observed(spec, inference_log_key(spec), log_table, "Inference log: one row per scored record")
    labels = _observed(spec, labels_key(spec), labels_table, "Ground-truth labels sent as feedback, latest per request id")

    @asset(
        key=canary_analysis_key(spec),
        deps=[inference_log_key(spec), labels_key(spec)],
        group_name=GROUP,
        description=f"Canary vs champion of '{spec.name}' on the traffic logged since the canary was set: promote, roll back or wait.",
    )
    def _canary_analysis(context: AssetExecutionContext, config: CanaryConfig, lake: LakeResource) -> MaterializeResult:
        """Compare canary and champion on logged traffic and apply the policy's decision to the aliases."""
        store = lake.lake()
        decision = analyse(store, spec.name, spec.problem_type, config.policy())
        context.log.info(f"{spec.name} canary analysis: {decision.action}: {decision.reason}")
        registry = Registry(store)
        applied = [] if config.dry_run else apply_decision(registry, spec.name, decision, actor=actor(context))
        meta: dict = {
            "decision": decision.action,
            "reason": MetadataValue.text(decision.reason),
            "applied": bool(applied),
            "variants": frame_table(decision.stats),
            "checks": MetadataValue.json(decision.checks),
        }
        if decision.since is not None:
            meta["canary_since"] = decision.since.isoformat()
        for row in decision.stats.iter_rows(named=True):
            for name, value in row.items():
                if name != "variant" and value is not None:
                    meta[f"{row['variant']}_{name}"] = value
        return MaterializeResult(metadata={**meta, **alias_metadata(registry, spec.name)})

    return [inference_log, labels, _canary_analysis]
