"""Validation stage: the candidate against the gates and against the champion, on the same held-out rows."""

import polars as pl
import pydantic
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset_check,
)
from pydantic import Field

from aiflow.evaluation.gates import GateConfig
from aiflow.evaluation.validation import ModelRef, validate
from aiflow.models.candidates import Evaluation, Handoffs
from aiflow.models.metric_names import CHAMPION_TEST, TEST, prefixed
from aiflow.models.registry import ModelVersion, Registry
from aiflow.monitoring.challenger import challenger_policy_of, earlier_champions
from aiflow.spec import DatasetSpec
from assets.keys import candidate_key, evaluation_key
from assets.metadata import frame_table
from assets.training import launchpad_fields, link, run_ids
from resources.storage import ArtifactsResource, LakeResource

#: How a step picks its upstream record when its run did not write one (shared by evaluation, registration, promotion).
CANDIDATE_ID = (
    str | None,
    Field(None, description="Work on this candidate (its id is in the candidate's materialization); empty: the one of this run."),
)
USE_LATEST = (
    bool,
    Field(False, description="When this run recorded none and no candidate_id is given, take the latest recorded one (logged)."),
)

#: Launchpad config: the gates (exactly the fields of GateConfig, defaults shown) and which candidate to evaluate.
GatesConfig = pydantic.create_model(
    "GatesConfig", __base__=Config, candidate_id=CANDIDATE_ID, use_latest=USE_LATEST, **launchpad_fields(GateConfig)
)

#: One blocking check per gate (name -> the gates it covers, a prefix when it ends with ':') and what it means.
GATE_CHECKS = {
    "absolute_minimums": ("absolute:", "Every configured absolute bound (gates.absolute) holds on the test rows."),
    "no_regression_vs_champion": ("vs_champion", "The primary test metric does not regress beyond the tolerance vs the champion, same rows."),
    "no_slice_regression": ("slices_vs_champion", "No slice regresses beyond the slice tolerance vs the champion."),
    "beats_baseline": ("beats_baseline", "The primary validation metric beats the naive reference's (base rate or mean)."),
    "latency_budget": ("latency", "Predicting 1,000 rows takes at most latency_factor (1.5) times the champion's time (the median of the ratios of runs timed back to back, interleaved in the same run), or the fastest run is within the absolute latency budget (the first model: the budget alone)."),
    "input_schema": ("input_schema", "The model's inputs exist in the features table and match the champion's."),
}


def evaluation_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=evaluation_key(spec),
        deps=[candidate_key(spec)],
        group_name="validation",
        kinds={"pytorch", "sklearn"},
        description=f"The '{spec.name}' candidate evaluated on the held-out rows of its pinned data, next to the champion; gate verdicts.",
    )
    def _evaluation(context: AssetExecutionContext, config: GatesConfig, lake: LakeResource, artifacts: ArtifactsResource) -> MaterializeResult:
        """This run's candidate (or the configured one) evaluated; recorded in registry/evaluations."""
        store = lake.lake()
        handoffs = Handoffs(store)
        found = handoffs.resolve_candidate(spec.name, run_ids=run_ids(context), candidate_id=config.candidate_id, latest=config.use_latest)
        cand = found.record
        context.log.info(f"evaluating {found.how}: candidate {cand.candidate_id} ({cand.artifact_uri})")
        registry = Registry(store)
        champion = None
        champion_version = registry.alias(spec.name, "champion")
        if champion_version is not None:
            champion = ModelRef.of(registry.get(spec.name, champion_version), artifacts.uri())
        events = reversed(registry.history(spec.name, "champion")["version"].to_list())  # oldest first
        registered = {r["version"]: ModelVersion.from_row(r) for r in registry.versions(spec.name).iter_rows(named=True)}  # one read
        # earlier champions that passed their gates (one forced past them is never reinstated on its own)
        passed = [v for v in events if v is None or registered[v].gates_passed]
        earlier = [ModelRef.of(registered[v], artifacts.uri())
                   for v in earlier_champions(passed, current=champion_version, pool=challenger_policy_of(spec).pool)]  # fmt: skip
        report = validate(
            ModelRef("candidate", cand.artifact_uri, cand.artifact_sha256),
            features_uri=cand.features_uri,
            data_version=cand.data_version,
            spec=spec,
            candidate_valid_metrics=cand.valid_metrics,
            baseline_valid_metrics=cand.baseline_metrics,
            champion=champion,
            earlier=earlier,
            config=GateConfig(**config.model_dump(exclude={"candidate_id", "use_latest"})),
            storage_options=store.storage_options,
            artifact_options=artifacts.options(),
        )
        for gate in report.failed:
            context.log.warning(f"gate {gate.gate} failed: {gate.detail}")
        plot_uri = artifacts.store().put_bytes(f"{spec.name}/evaluations/{cand.candidate_id}-{context.run_id}.png", report.plot_png)
        slices = report.slice_table()
        evaluation = handoffs.record_evaluation(
            cand,
            run_id=context.run_id,
            test_metrics=report.candidate_metrics | report.evidence_metrics(),
            champion_version=champion_version,
            champion_metrics=report.champion_metrics,
            rows=report.rows,
            latency_ms_per_1k=report.latency_ms_per_1k,
            gate_results={g.gate: g.as_dict() for g in report.gates},
            slices=slices.to_dicts(),
            plot_uri=plot_uri,
            notes=report.notes,
        )
        return MaterializeResult(metadata=evaluation_metadata(evaluation, slices))

    return _evaluation


def evaluation_metadata(evaluation: Evaluation, slices: pl.DataFrame) -> dict:
    """What the UI shows of an evaluation: numeric metrics (they plot), inline tables, the plot as a link."""
    meta: dict = {
        "candidate_id": evaluation.candidate_id,
        "evaluation_id": evaluation.evaluation_id,
        "artifact_sha256": evaluation.artifact_sha256,
        **{k: MetadataValue.float(round(v, 6)) for k, v in prefixed(TEST, evaluation.test_metrics).items()},
        **{k: MetadataValue.float(round(v, 6)) for k, v in prefixed(CHAMPION_TEST, evaluation.champion_metrics).items()},
        "test_rows": evaluation.rows,
        "latency_ms_per_1k": MetadataValue.float(round(evaluation.latency_ms_per_1k, 2)),
        "gates_passed": evaluation.gates_passed,
        "gates": frame_table(gates_frame(evaluation.gate_results)),
        "slices": frame_table(slices),
    }
    if evaluation.champion_version is not None:
        meta["champion_version"] = evaluation.champion_version
    if evaluation.plot_uri:
        meta["plot"] = link(evaluation.plot_uri)
    if evaluation.notes:
        meta["notes"] = "; ".join(evaluation.notes)
    return meta


def gates_frame(gate_results: dict) -> pl.DataFrame:
    """gate, passed, value, threshold, margin, detail: one row per gate."""
    schema = {"gate": pl.String, "passed": pl.Boolean, "value": pl.Float64, "threshold": pl.Float64, "margin": pl.Float64, "detail": pl.String}
    rows = [{"gate": name, **{k: g.get(k) for k in list(schema)[1:]}} for name, g in gate_results.items()]
    return pl.DataFrame(rows, schema=schema)


def gate_check_result(check: str, gate_results: dict) -> dict:
    """The verdict of one check over the gates it covers: passed, a plain description, numeric value/threshold/margin.

    Several gates (absolute bounds on several metrics) are summed up by the tightest one (smallest margin).
    """
    prefix, meaning = GATE_CHECKS[check]
    mine = {n: g for n, g in gate_results.items() if n == prefix or (prefix.endswith(":") and n.startswith(prefix))}
    if not mine:
        return {"passed": True, "description": f"Not configured: no {prefix.rstrip(':')} gate is set.", "metadata": {"configured": False}}
    configured = [g for g in mine.values() if g.get("configured", True)]
    if not configured:
        return {"passed": True, "description": " ".join(g["detail"] for g in mine.values()), "metadata": {"configured": False}}
    with_margin = [g for g in configured if g.get("margin") is not None]
    tightest = min(with_margin, key=lambda g: g["margin"]) if with_margin else configured[0]
    metadata: dict = {"configured": True, "failed": ", ".join(n for n, g in mine.items() if not g["passed"]) or "none"}
    for key in ("value", "threshold", "margin"):
        if tightest.get(key) is not None:
            metadata[key] = MetadataValue.float(round(float(tightest[key]), 6))
    return {
        "passed": all(g["passed"] for g in configured),
        "description": " ".join(g["detail"] for g in mine.values()),
        "metadata": metadata,
    }


def evaluation_checks(spec: DatasetSpec):
    key = evaluation_key(spec)

    @multi_asset_check(
        name=f"{spec.name}_model_gates",
        specs=[AssetCheckSpec(name, asset=key, blocking=True, description=meaning) for name, (_, meaning) in GATE_CHECKS.items()],
        description="Blocking model gates: a failing gate stops registration and promotion; the champion keeps serving.",
    )
    def _gates(context: AssetCheckExecutionContext, lake: LakeResource):
        """The gate verdicts of this run's evaluation, one blocking check per gate."""
        found = Handoffs(lake.lake()).resolve_evaluation(spec.name, run_ids=run_ids(context), latest=True)
        context.log.info(f"checking {found.how}: evaluation {found.record.evaluation_id} of candidate {found.record.candidate_id}")
        for check in GATE_CHECKS:
            verdict = gate_check_result(check, found.record.gate_results)
            yield AssetCheckResult(
                asset_key=key,
                check_name=check,
                passed=verdict["passed"],
                description=verdict["description"],
                metadata={**verdict["metadata"], "evaluation_id": found.record.evaluation_id},
            )

    return _gates


def validation_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [evaluation_asset(spec)]


def validation_checks(spec: DatasetSpec) -> list:
    return [evaluation_checks(spec)]
