"""Validation stage: the candidate against the gates and against the champion, on the same held-out rows."""

import base64

import polars as pl
import pydantic
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset_check,
)

from aiflow.evaluation.gates import GateConfig
from aiflow.evaluation.validation import ModelRef, validate
from aiflow.models.registry import Registry
from aiflow.spec import DatasetSpec
from assets.keys import candidate_key, evaluation_key
from assets.metadata import markdown_table
from resources.storage import ArtifactsResource, LakeResource

#: Launchpad config: exactly the fields of GateConfig.
GatesConfig = pydantic.create_model(
    "GatesConfig", __base__=Config, **{name: (f.annotation, f) for name, f in GateConfig.model_fields.items()}
)

#: One blocking check per gate; absolute minimums are one check covering every configured metric.
GATE_CHECKS = {
    "absolute_minimums": "absolute:",
    "no_regression_vs_champion": "vs_champion",
    "no_slice_regression": "slices_vs_champion",
    "beats_baseline": "beats_baseline",
    "latency_budget": "latency",
    "input_schema": "input_schema",
}



def latest_metadata(instance, key: AssetKey) -> dict:
    """Raw values of the latest materialization's metadata of ``key`` (the upstream asset's output)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise RuntimeError(f"{key.to_user_string()} has never been materialized")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def candidate_facts(meta: dict) -> dict:
    """What the candidate's materialization says: artifact, hash, pinned data, validation and baseline metrics."""
    try:
        return {
            "artifact_uri": str(meta["artifact_uri"]),
            "artifact_sha256": str(meta["artifact_sha256"]),
            "features_uri": str(meta["features_uri"]),
            "data_version": int(meta["data_version"]),
            "valid": {k.removeprefix("valid_"): float(v) for k, v in meta.items() if k.startswith("valid_")},
            "baseline": {k.removeprefix("baseline_"): float(v) for k, v in meta.items() if k.startswith("baseline_")},
            "params": meta.get("params") or {},
        }
    except KeyError as exc:
        raise RuntimeError(f"the candidate's materialization lacks {exc}: retrain it") from None


def evaluation_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=evaluation_key(spec),
        deps=[candidate_key(spec)],
        group_name="validation",
        kinds={"pytorch"},
        description=f"The '{spec.name}' candidate evaluated on the held-out rows of its pinned data, next to the champion; gate verdicts.",
    )
    def _evaluation(context: AssetExecutionContext, config: GatesConfig, lake: LakeResource, artifacts: ArtifactsResource) -> MaterializeResult:
        store = lake.lake()
        cand = candidate_facts(latest_metadata(context.instance, candidate_key(spec)))
        registry = Registry(store)
        champion = None
        champion_version = registry.alias(spec.name, "champion")
        if champion_version is not None:
            mv = registry.get(spec.name, champion_version)
            champion = ModelRef(f"v{mv.version}", mv.artifact_uri, mv.artifact_sha256, mv.version)
        report = validate(
            ModelRef("candidate", cand["artifact_uri"], cand["artifact_sha256"]),
            features_uri=cand["features_uri"],
            data_version=cand["data_version"],
            spec=spec,
            candidate_valid_metrics=cand["valid"],
            baseline_valid_metrics=cand["baseline"],
            champion=champion,
            config=GateConfig(**config.model_dump()),
            storage_options=store.storage_options,
        )
        for gate in report.failed:
            context.log.warning(f"gate {gate.gate} failed: {gate.detail}")
        plot_path = f"{spec.name}/evaluations/{context.run_id}.png"
        plot_uri = artifacts.store().put_bytes(plot_path, report.plot_png)
        image = base64.b64encode(report.plot_png).decode()
        metric = report.primary_metric
        return MaterializeResult(
            metadata={
                **{f"test_{k}": v for k, v in report.candidate_metrics.items()},
                **({f"champion_test_{k}": v for k, v in report.champion_metrics.items()} if report.champion_metrics else {}),
                "champion_version": champion_version if champion_version is not None else -1,
                "test_rows": report.rows,
                "latency_ms_per_1k": report.latency_ms_per_1k,
                "gates_passed": report.passed,
                "gate_results": MetadataValue.json({g.gate: g.as_dict() for g in report.gates}),
                "gates": MetadataValue.md(markdown_table(_gates_frame(report.gates))),
                "slices": MetadataValue.md(markdown_table(report.candidate_slices.select("slice", "value", "rows", metric))),
                "plot": MetadataValue.md(f"![candidate vs champion](data:image/png;base64,{image})"),
                "plot_png": MetadataValue.path(plot_uri),
                "candidate": MetadataValue.json(cand),
                "notes": "; ".join(report.notes),
            }
        )

    return _evaluation


def _gates_frame(gates) -> pl.DataFrame:
    return pl.DataFrame([g.as_dict() for g in gates]).select("gate", "passed", "value", "threshold", "detail")


def evaluation_checks(spec: DatasetSpec):
    key = evaluation_key(spec)

    @multi_asset_check(
        name=f"{spec.name}_model_gates",
        specs=[AssetCheckSpec(name, asset=key, blocking=True) for name in GATE_CHECKS],
        description="Blocking model gates: a failing gate stops registration and promotion; the champion keeps serving.",
    )
    def _gates(context: AssetCheckExecutionContext):
        results = latest_metadata(context.instance, key)["gate_results"]
        for check, prefix in GATE_CHECKS.items():
            mine = [g for name, g in results.items() if name == prefix or (prefix.endswith(":") and name.startswith(prefix))]
            passed = all(g["passed"] for g in mine)
            yield AssetCheckResult(
                asset_key=key,
                check_name=check,
                passed=passed,
                description="; ".join(g["detail"] for g in mine) or "no such gate configured",
                metadata={"gates": MetadataValue.json(mine), "failed": [g["gate"] for g in mine if not g["passed"]]},
            )

    return _gates


def validation_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [evaluation_asset(spec)]


def validation_checks(spec: DatasetSpec) -> list:
    return [evaluation_checks(spec)]
