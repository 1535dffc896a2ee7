"""Backfill job: silver and features of one dataset rebuilt over their whole history, one step per slice of dates.

``<dataset>_backfill_job`` is an op graph over :mod:`aiflow.data.backfill`: plan the silver slices (pinning ledger
and bronze) → one step per slice → check and write the silver watermark → plan the features slices (pinning silver
and the feature state) → one step per slice → check and write the features watermark. Each finish step reports the
silver and features assets as materialized (rows and peak memory per slice, Delta version), so the UI shows the
backfill like any refresh. The result equals a full refresh; the next incremental refresh starts after it.

Where the steps run: locally a multiprocess executor (``forkserver``; ``max_concurrent`` in the run config's
``execution`` section, default :data:`LOCAL_PARALLEL`); on the k8s profile ``dagster_k8s.k8s_job_executor``, so each
slice is its own Kubernetes Job with the memory request and limit of :data:`SLICE_K8S_CONFIG` (the op tag
``dagster-k8s/config``; size slices with ``rows_per_slice`` to fit it: benchmarks/README.md, "Backfill in slices").
"""

import polars as pl
from dagster import (
    AssetMaterialization,
    Config,
    DynamicOut,
    DynamicOutput,
    ExecutorDefinition,
    In,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    job,
    multiprocess_executor,
    op,
)
from pydantic import Field

from aiflow.data import backfill as bf
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Lake, Tables
from assets.keys import features_key, silver_key
from assets.metadata import frame_table, table_data_version, uri_value
from resources.storage import LakeResource

#: Slice steps run at once on this machine unless the run config says otherwise.
LOCAL_PARALLEL = 2
#: Resources of one slice's Kubernetes Job. A slice holds one batch of at most ``aiflow.data.refine.BATCH_ROWS`` rows
#: (1M) at a time, so its memory follows the batch, not the slice: 10M demo rows in 2.5M-row slices peaked at 1.6-1.9 GB
#: per slice (benchmarks/README.md, "Backfill in slices"). Wider rows need more: raise both with the row width.
SLICE_REQUESTS = {"cpu": "1", "memory": "2Gi"}
SLICE_LIMITS = {"memory": "3Gi"}
SLICE_K8S_CONFIG = {"container_config": {"resources": {"requests": SLICE_REQUESTS, "limits": SLICE_LIMITS}}}
SLICE_OP_TAGS = {"dagster-k8s/config": SLICE_K8S_CONFIG}


class BackfillConfig(Config):
    slices: int | None = Field(
        None, ge=1, description="Cut each table's dates into this many slices of about equal rows (takes precedence over rows_per_slice)."
    )
    rows_per_slice: int = Field(
        2_000_000, ge=1, description="Rows per slice when 'slices' is not set (a month stays whole on month partitions)."
    )
    refit: bool = Field(False, description="Refit the feature state (vocabularies, scaling) on the rebuilt silver before the features.")

    def sizing(self) -> dict[str, int]:
        return {"slices": self.slices} if self.slices is not None else {"rows_per_slice": self.rows_per_slice}


def backfill_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_backfill_job"


def backfill_executor(profile: str) -> ExecutorDefinition:
    """Separate processes locally (parallel slices), one Kubernetes Job per step on the k8s profile."""
    if profile == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return multiprocess_executor


def _slice_table(reports: list[bf.SliceReport]):
    rows = [
        {"slice": r.slice.key, "first_date": str(r.slice.dates[0]), "last_date": str(r.slice.dates[-1]), "dates": len(r.slice.dates),
         "rows_in": r.rows_in, "rows_out": r.rows_out, "commits": r.commits, "seconds": r.seconds, "peak_rss_mb": r.peak_rss_mb}
        for r in reports
    ]  # fmt: skip
    return frame_table(pl.DataFrame(rows))


def _materialization(lake: Lake, key, table: str, reports: list[bf.SliceReport], version: int | None, extra: dict) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=key,
        description=f"backfill in {len(reports)} slice(s)",
        metadata={
            "delta_uri": uri_value(lake.uri(table)),
            "delta_version": version if version is not None else -1,
            "run_rows_out": sum(r.rows_out for r in reports),
            "run_dates_rewritten": sum(len(r.slice.dates) for r in reports),
            "run_full_refresh": True,
            "backfill_slices": _slice_table(reports),
            "max_slice_peak_rss_mb": max((r.peak_rss_mb for r in reports), default=0.0),
            "upstream_versions": MetadataValue.json(reports[0].slice.upstream if reports else {}),
            **extra,
        },
        tags={"dagster/data_version": table_data_version(lake, table).value},
    )


def backfill_job(spec: DatasetSpec, profile: str = "local"):
    """The backfill job of one dataset (see the module docstring)."""
    name = spec.name.replace("-", "_")

    @op(
        name=f"{name}_plan_silver_backfill",
        out=DynamicOut(str),
        description="Pin ledger and bronze and cut every table's dates into slices.",
    )
    def plan_silver(context: OpExecutionContext, config: BackfillConfig, lake: LakeResource):
        for piece in bf.plan_silver(lake.lake(), spec, **config.sizing()):
            context.log.info(f"{piece.key}: {piece.dates[0]}..{piece.dates[-1]} ({len(piece.dates)} dates, {piece.rows} rows)")
            yield DynamicOutput(piece.model_dump_json(), mapping_key=piece.key)

    @op(
        name=f"{name}_silver_slice",
        ins={"piece": In(str)},
        out=Out(str),
        tags=SLICE_OP_TAGS,
        description="Cleanse one slice of dates into silver.",
    )
    def silver_slice(context: OpExecutionContext, piece: str, lake: LakeResource) -> str:
        report = bf.rebuild_silver_slice(lake.lake(), spec, bf.Slice.model_validate_json(piece))
        context.log.info(
            f"{report.slice.key}: {report.rows_in} rows in, {report.rows_out} out in {report.seconds} s, peak {report.peak_rss_mb} MB"
        )
        return report.model_dump_json()

    @op(
        name=f"{name}_finish_silver_backfill",
        ins={"reports": In(list)},
        out=Out(Nothing),
        description="Check every silver slice and write the silver watermark.",
    )
    def finish_silver(context: OpExecutionContext, reports: list, lake: LakeResource) -> None:
        store, parsed = lake.lake(), [bf.SliceReport.model_validate_json(r) for r in reports]
        versions = bf.finish_silver(store, spec, parsed)
        for table in spec.tables:
            mine = [r for r in parsed if r.slice.table == table.name]
            extra = {
                "run_rows_quarantined": sum(r.rows_quarantined for r in mine),
                "run_rows_superseded": sum(r.rows_superseded for r in mine),
            }
            key, silver = silver_key(spec, table), Tables.silver(table.name)
            context.log_event(_materialization(store, key, silver, mine, versions.get(table.name), extra))

    @op(
        name=f"{name}_plan_features_backfill",
        ins={"silver_done": In(Nothing)},
        out=DynamicOut(str),
        description="Pin silver and the feature state (fitted first if missing) and cut the dates into slices.",
    )
    def plan_features(context: OpExecutionContext, config: BackfillConfig, lake: LakeResource):
        for piece in bf.plan_features(lake.lake(), spec, refit=config.refit, **config.sizing()):
            context.log.info(f"{piece.key}: {piece.dates[0]}..{piece.dates[-1]} ({piece.rows} rows), state version {piece.state_version}")
            yield DynamicOutput(piece.model_dump_json(), mapping_key=piece.key)

    @op(
        name=f"{name}_features_slice",
        ins={"piece": In(str)},
        out=Out(str),
        tags=SLICE_OP_TAGS,
        description="Build the features of one slice of dates.",
    )
    def features_slice(context: OpExecutionContext, piece: str, lake: LakeResource) -> str:
        report = bf.rebuild_features_slice(lake.lake(), spec, bf.Slice.model_validate_json(piece))
        context.log.info(f"{report.slice.key}: {report.rows_out} rows in {report.seconds} s, peak {report.peak_rss_mb} MB")
        return report.model_dump_json()

    @op(
        name=f"{name}_finish_features_backfill",
        ins={"reports": In(list)},
        description="Check every features slice and write the features watermark.",
    )
    def finish_features(context: OpExecutionContext, reports: list, lake: LakeResource) -> None:
        store, parsed = lake.lake(), [bf.SliceReport.model_validate_json(r) for r in reports]
        version = bf.finish_features(store, spec, parsed)
        extra = {"state_version": parsed[0].slice.state_version if parsed else -1}
        context.log_event(_materialization(store, features_key(spec), Tables.features(spec.name), parsed, version, extra))

    config = None if profile == "k8s" else {"execution": {"config": {"max_concurrent": LOCAL_PARALLEL, "start_method": {"forkserver": {}}}}}

    @job(
        name=backfill_job_name(spec),
        executor_def=backfill_executor(profile),
        config=config,
        description=f"Rebuild silver and features of '{spec.name}' over the whole history in slices of dates, in parallel "
        "(processes locally, one Kubernetes Job per slice on the k8s profile); equals a full refresh.",
    )
    def _backfill():
        silver_reports = plan_silver().map(silver_slice).collect()
        finish_features(plan_features(finish_silver(silver_reports)).map(features_slice).collect())

    return _backfill
