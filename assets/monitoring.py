"""Monitoring stage: the inference log and labels (observed), drift and live performance per window, the canary analysis."""

import polars as pl
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
from aiflow.monitoring import history
from aiflow.monitoring.monitor import References, batch_pass, online_pass, performance_pass
from aiflow.serving.canary import CanaryPolicy, analyse, apply_decision
from aiflow.serving.feedback import labels_table
from aiflow.serving.inference_log import log_table
from aiflow.spec import DatasetSpec
from aiflow.storage.artifacts import ArtifactStore
from assets.deployment import actor, alias_metadata
from assets.keys import canary_analysis_key, drift_key, inference_log_key, labels_key, live_performance_key, predictions_key
from assets.metadata import frame_table, table_data_version, table_metadata, uri_value
from resources.notify import NotifierResource
from resources.storage import ArtifactsResource, LakeResource

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
    def _canary_analysis(context: AssetExecutionContext, config: CanaryConfig, lake: LakeResource, notifier: NotifierResource) -> MaterializeResult:
        """Compare canary and champion on logged traffic and apply the policy's decision to the aliases."""
        store = lake.lake()
        decision = analyse(store, spec.name, spec.problem_type, config.policy())
        context.log.info(f"{spec.name} canary analysis: {decision.action}: {decision.reason}")
        registry = Registry(store)
        applied = [] if config.dry_run else apply_decision(registry, spec.name, decision, actor=actor(context))
        if applied and decision.action in ("promote", "rollback"):
            event = "promotion" if decision.action == "promote" else "rollback"
            notifier.notifier().send(event, f"{spec.name} canary {decision.action}: {decision.reason}", {"action": decision.action})
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

    return [inference_log, labels, _canary_analysis, drift_asset(spec), live_performance_asset(spec)]


class DriftConfig(Config):
    report: bool = Field(True, description="Write Evidently's HTML report for the newest window computed (a few seconds).")


def drift_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=drift_key(spec),
        deps=[inference_log_key(spec), labels_key(spec), predictions_key(spec)],
        group_name=GROUP,
        kinds={"evidently", "delta"},
        description=f"Drift of '{spec.name}' per window (data time) of served records and of batch-scored partitions, against "
        "the reference profile of the model version that scored them: Evidently's verdict per input feature, on the "
        "predictions and on the labels.",
    )
    def _drift(
        context: AssetExecutionContext, config: DriftConfig, lake: LakeResource, artifacts: ArtifactsResource, notifier: NotifierResource
    ) -> MaterializeResult:
        """Compare every new complete window of the inference log with the serving version's reference; history in Delta."""
        store = lake.lake()
        refs = References(store, spec.name, artifacts.uri(), artifacts.options())
        reports = ArtifactStore(store.root, storage_options=store.storage_options or None)
        result = online_pass(store, spec, refs, report_store=reports if config.report else None)
        batch = batch_pass(store, spec, refs, report_store=reports if config.report else None)
        for reason in [*result.skipped, *batch.skipped]:
            context.log.info(f"{spec.name} drift: {reason}")
        for w in batch.windows:
            context.log.info(f"{spec.name} batch window {w.window_start}: drift share {w.share:.2f} (v{w.model_version}, {w.rows} rows)")
        summary = history.drift_summary(store, spec.name)
        meta: dict = {
            "windows_computed": len(result.windows), "batch_windows_computed": len(batch.windows),
            "history": frame_table(summary.tail(30)), "table": uri_value(store.uri(history.drift_table(spec.name))),
        }  # fmt: skip
        if result.windows:
            newest = result.windows[-1]
            meta |= {
                "window": f"{newest.window_start} .. {newest.window_end}", "model_version": newest.model_version,
                "rows": newest.rows, "drift_share": newest.share, "weighted_drift_share": newest.weighted_share,
                "drifted_columns": int(newest.columns.filter(pl.col("drifted"))["column"].len()),
                "columns": frame_table(newest.columns.select("column", "kind", "method", "score", "threshold", "drifted", "importance")),
            }  # fmt: skip
            if newest.report_uri:
                meta["report"] = uri_value(newest.report_uri)
            for w in result.windows:
                thresholds = result.thresholds.get(w.model_version)
                if thresholds is not None and w.weighted_share > thresholds.drift_share:
                    notifier.notifier().send(
                        "drift", f"{spec.name}: drift in window {w.window_start}..{w.window_end} (model v{w.model_version})",
                        {"weighted_drift_share": round(w.weighted_share, 3), "threshold": round(thresholds.drift_share, 3)},
                    )  # fmt: skip
        else:
            meta["skipped"] = MetadataValue.text("; ".join(result.skipped))
        return MaterializeResult(metadata=meta)

    return _drift


def live_performance_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=live_performance_key(spec),
        deps=[inference_log_key(spec), labels_key(spec)],
        group_name=GROUP,
        kinds={"delta"},
        description=f"Live performance of '{spec.name}' per window and model version: realized from the labels that came back, "
        "estimated from calibrated probabilities (CBPE) before they do, with labelled rows and label delay.",
    )
    def _live_performance(context: AssetExecutionContext, lake: LakeResource, artifacts: ArtifactsResource) -> MaterializeResult:
        """Labels joined to the inference log: the metric per window and model version, realized and estimated."""
        store = lake.lake()
        refs = References(store, spec.name, artifacts.uri(), artifacts.options())
        frame, daily = performance_pass(store, spec, refs)
        meta: dict = {"windows": frame.height, "table": uri_value(store.uri(history.performance_table(spec.name)))}
        if frame.height:
            meta["performance"] = frame_table(frame.tail(30))
            meta["daily"] = frame_table(daily.tail(30))
            newest = frame.row(-1, named=True)
            for name, value in newest.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
                    meta[f"latest_{name}"] = value
            meta["latest_window"] = str(newest["window_start"])
        else:
            context.log.info(f"{spec.name} live performance: no scored record in the inference log yet")
        return MaterializeResult(metadata=meta)

    return _live_performance
