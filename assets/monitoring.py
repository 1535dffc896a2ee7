"""Monitoring stage: the inference log and labels (observed), drift, live performance and decisions per window, the canary analysis.

Drift, live performance and decisions are partitioned by monitoring window (:func:`window_partitions`):
one partition per calendar day, week or month of data time in the dataset's timezone, so each window
has its status in the partition bar, its own materialization and metadata (plotted over data time),
and can be computed again by a backfill. The monitoring sensor (``sensors/monitoring.py``) asks for a
window once data time has moved past it, and again when its labels change.
"""

import datetime as dt
from functools import cache

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    MonthlyPartitionsDefinition,
    ObserveResult,
    RunsFilter,
    SourceAsset,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
    asset,
    observable_source_asset,
)
from pydantic import Field

from aiflow.models.registry import Registry
from aiflow.monitoring import history
from aiflow.monitoring import partition as windows_run
from aiflow.monitoring.monitor import References
from aiflow.monitoring.windows import first_window
from aiflow.serving.canary import CanaryPolicy, analyse, apply_decision
from aiflow.serving.feedback import labels_table
from aiflow.serving.inference_log import log_table
from aiflow.spec import DatasetSpec
from aiflow.storage.artifacts import ArtifactStore
from assets.deployment import actor, alias_metadata
from assets.keys import (
    canary_analysis_key,
    decisions_key,
    drift_key,
    inference_log_key,
    labels_key,
    live_performance_key,
    predictions_key,
    retrain_job_name,
)
from assets.metadata import frame_table, table_data_version, table_metadata, uri_value
from resources.notify import NotifierResource
from resources.reports import ReportLinksResource
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

    return [inference_log, labels, _canary_analysis, drift_asset(spec), live_performance_asset(spec), decisions_asset(spec)]


WINDOW_FMT = "%Y-%m-%d"


@cache
def _partitions(window: str, start: str, timezone: str) -> TimeWindowPartitionsDefinition:
    if window == "daily":
        return DailyPartitionsDefinition(start_date=start, timezone=timezone, fmt=WINDOW_FMT)
    if window == "weekly":
        return WeeklyPartitionsDefinition(start_date=start, timezone=timezone, day_offset=1, fmt=WINDOW_FMT)  # Monday
    return MonthlyPartitionsDefinition(start_date=start, timezone=timezone, fmt=WINDOW_FMT)


def window_partitions(spec: DatasetSpec) -> TimeWindowPartitionsDefinition:
    """The dataset's monitoring windows as time-window partitions: calendar days, weeks (from Monday) or months in
    the dataset's timezone, from the window holding ``monitoring.start``; the key is the window's first date."""
    return _partitions(spec.monitoring.window, first_window(spec).isoformat(), spec.timezone)


def window_of(context: AssetExecutionContext) -> dt.date:
    return dt.date.fromisoformat(context.partition_key)


class DriftConfig(Config):
    report: bool = Field(
        False,
        description="Also write Evidently's HTML report of this window (a few seconds); the decisions step writes it anyway "
        "for every window where a signal fired.",
    )


def drift_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=drift_key(spec),
        deps=[inference_log_key(spec), labels_key(spec), predictions_key(spec)],
        partitions_def=window_partitions(spec),
        group_name=GROUP,
        kinds={"evidently", "delta"},
        check_specs=[
            AssetCheckSpec(
                "drift_within_threshold", asset=drift_key(spec), blocking=False,
                description="WARN when the window's importance-weighted drift share of the input features is above the "
                "threshold calibrated on the serving version's reference.",
            )
        ],  # fmt: skip
        description=f"Drift of '{spec.name}' in one monitoring window (data time): its served records and its batch-scored "
        "rows against the reference profile of the model version that scored them; Evidently's verdict per input feature, "
        "on the predictions and on the labels.",
    )
    def _drift(
        context: AssetExecutionContext, config: DriftConfig, lake: LakeResource, artifacts: ArtifactsResource, notifier: NotifierResource,
        reports: ReportLinksResource,
    ):  # fmt: skip
        """Compare the window's served records with the serving version's reference; its rows in the drift table replaced."""
        store = lake.lake()
        refs = References(store, spec.name, artifacts.uri(), artifacts.options())
        report_store = ArtifactStore(store.root, storage_options=store.storage_options or None)
        start = window_of(context)
        result = windows_run.window_drift(store, spec, refs, start, report_store=report_store if config.report else None)
        for reason in result.skipped:
            context.log.info(f"{spec.name} drift: {reason}")
        meta: dict = {"window": start.isoformat(), "table": uri_value(store.uri(history.drift_table(spec.name)))}
        for w in result.batch:
            meta[f"batch_v{w.model_version}_drift_share"] = w.share
            context.log.info(f"{spec.name} batch window {w.window_start}: drift share {w.share:.2f} (v{w.model_version}, {w.rows} rows)")
        w, t = result.online, result.thresholds
        if w is not None:
            features = w.columns.filter(~pl.col("column").is_in(["prediction", "label"]))
            meta |= {
                "window_end": w.window_end.isoformat(), "model_version": w.model_version, "rows": w.rows,
                "drift_share": w.share, "weighted_drift_share": w.weighted_share,
                "drifted_columns": int(features["drifted"].sum()), "feature_columns": features.height,
                "columns": frame_table(w.columns.select("column", "kind", "method", "score", "threshold", "drifted", "importance")),
            }  # fmt: skip
            if t is not None:
                meta["threshold_drift_share"] = t.drift_share
            if w.report_uri:
                meta["report"] = reports.link(w.report_uri)
        else:
            meta["skipped"] = MetadataValue.text("; ".join(result.skipped))
        over = w is not None and t is not None and w.weighted_share > t.drift_share
        if over:
            notifier.notifier().send(
                "drift", f"{spec.name}: drift in window {w.window_start}..{w.window_end} (model v{w.model_version})",
                {"weighted_drift_share": round(w.weighted_share, 3), "threshold": round(t.drift_share, 3)},
            )  # fmt: skip
        yield MaterializeResult(metadata=meta)
        yield AssetCheckResult(
            check_name="drift_within_threshold", passed=not over, severity=AssetCheckSeverity.WARN,
            metadata={"weighted_drift_share": w.weighted_share if w else float("nan"), "threshold": t.drift_share if t else float("nan")},
            description=None if w is not None else "no served record in this window",
        )  # fmt: skip

    return _drift


def live_performance_asset(spec: DatasetSpec) -> AssetsDefinition:
    metric = "roc_auc" if spec.problem_type == "classification" else "rmse"

    @asset(
        key=live_performance_key(spec),
        deps=[inference_log_key(spec), labels_key(spec)],
        partitions_def=window_partitions(spec),
        group_name=GROUP,
        kinds={"delta"},
        description=f"Live performance of '{spec.name}' in one monitoring window, per model version: realized from the labels "
        "that came back, estimated before they do, with labelled rows and label delay.",
    )
    def _live_performance(context: AssetExecutionContext, lake: LakeResource, artifacts: ArtifactsResource) -> MaterializeResult:
        """Labels joined to the window's served records: the metric per model version, realized and estimated."""
        store = lake.lake()
        refs = References(store, spec.name, artifacts.uri(), artifacts.options())
        start = window_of(context)
        frame = windows_run.window_performance(store, spec, refs, start)
        meta: dict = {"window": start.isoformat(), "table": uri_value(store.uri(history.performance_table(spec.name)))}
        if frame.height:
            meta["performance"] = frame_table(frame)
            serving = frame.sort("rows").row(-1, named=True)  # the version that served most of the window
            meta["model_version"] = int(serving["model_version"])
            for name in ("rows", "labelled", metric, f"estimated_{metric}", "label_delay_days"):
                value = serving.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
                    meta[name] = value
        else:
            context.log.info(f"{spec.name} live performance: no served record in window {start}")
        return MaterializeResult(metadata=meta)

    return _live_performance


ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def retrain_running(instance, job_name: str) -> bool:
    """Whether a run of ``job_name`` is queued or in progress (a second retrain must not start)."""
    return bool(instance.get_run_records(filters=RunsFilter(job_name=job_name, statuses=ACTIVE), limit=1))


def decisions_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=decisions_key(spec),
        deps=[drift_key(spec), live_performance_key(spec)],
        partitions_def=window_partitions(spec),
        group_name=GROUP,
        kinds={"delta"},
        check_specs=[
            AssetCheckSpec(
                "no_signal_fired", asset=decisions_key(spec), blocking=False,
                description="WARN when any retraining signal (drift, estimated or realized drop) crossed its threshold in the window.",
            )
        ],  # fmt: skip
        description=f"What the retraining policy of '{spec.name}' decided for one monitoring window and why: the signal "
        "values and thresholds, the labels it saw, the verdict (retrain or skip), and the challenger's verdict on its live "
        "evidence against the champion (promote, retire or wait: applied to the aliases). The retrain sensor starts a run for "
        "each retrain verdict.",
    )
    def _decisions(context: AssetExecutionContext, lake: LakeResource, artifacts: ArtifactsResource, reports: ReportLinksResource):
        """The policy applied to the window's signals (hysteresis, cooldown and budget over earlier windows); recorded."""
        store = lake.lake()
        start = window_of(context)
        running = retrain_running(context.instance, retrain_job_name(spec))
        found = windows_run.decide_window(store, spec, start, running=running, evaluator=f"dagster run {context.run_id}")
        d = found.decision
        context.log.info(f"{spec.name} window {d.window_start}..{d.window_end} (v{d.model_version}, {found.labelled} labels): {d.reason}")
        meta: dict = {
            "window": start.isoformat(), "action": d.action, "reason": MetadataValue.text(d.reason), "fired": ",".join(d.fired) or "none",
            "model_version": d.model_version, "labelled": found.labelled, "retrain": int(d.action == "retrain"),
            "table": uri_value(store.uri(history.decisions_table(spec.name))),
        }  # fmt: skip
        for name, value in d.signals.items():
            if value is not None:
                meta[f"signal_{name}"] = float(value)
        if d.thresholds is not None:
            for name in ("drift_share", "estimated_drop", "realized_drop", "reference_metric"):
                value = getattr(d.thresholds, name)
                if value is not None:
                    meta[f"threshold_{name}"] = float(value)
        if found.run_key:
            meta["run_key"] = found.run_key
        if (c := found.challenger) is not None:  # the challenger in shadow: its live evidence and what happened to it
            e = c.verdict.evidence
            context.log.info(f"{spec.name} window {start}: {c.verdict.reason}")
            meta |= {"challenger_version": c.challenger, "challenger_action": c.verdict.action,
                     "challenger_reason": MetadataValue.text(c.verdict.reason), "challenger_rows": e.rows, "challenger_windows": c.windows}  # fmt: skip
            for name in ("gain", "low", "high"):
                if getattr(e, name) is not None:
                    meta[f"challenger_gain{'' if name == 'gain' else '_' + name}"] = float(getattr(e, name))
            if c.applied:
                meta |= alias_metadata(Registry(store), spec.name)
        if d.fired:  # Evidently's report for every window where a signal fired
            refs = References(store, spec.name, artifacts.uri(), artifacts.options())
            report_store = ArtifactStore(store.root, storage_options=store.storage_options or None)
            uri = windows_run.window_report(store, spec, refs, start, report_store)
            if uri:
                meta["report"] = reports.link(uri)
        yield MaterializeResult(metadata=meta)
        yield AssetCheckResult(
            check_name="no_signal_fired", passed=not d.fired, severity=AssetCheckSeverity.WARN,
            metadata={"signals_fired": len(d.fired), "labelled": found.labelled}, description=d.reason,
        )  # fmt: skip

    return _decisions
