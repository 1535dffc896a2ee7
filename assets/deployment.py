"""Deployment stage: register the gated candidate, flip the champion alias, score new partitions."""

import getpass
import json
from typing import Literal

from dagster import AssetExecutionContext, AssetsDefinition, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.model_card import model_card
from aiflow.models.registry import Registry
from aiflow.serving.batch import score_new_partitions
from aiflow.spec import DatasetSpec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Tables
from assets.keys import candidate_key, champion_key, evaluation_key, features_key, predictions_key, registered_key
from assets.metadata import markdown_table, table_metadata
from assets.validation import candidate_facts, latest_metadata
from resources.storage import ArtifactsResource, LakeResource


def actor(context) -> str:
    """Who changes an alias from Dagster: the run and the OS user behind it."""
    return f"dagster run {context.run_id} ({getpass.getuser()})"


def alias_history(registry: Registry, name: str) -> MetadataValue:
    """The latest alias events of a model, for the UI."""
    return MetadataValue.md(markdown_table(registry.history(name).head(10)))


def registered_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=registered_key(spec),
        deps=[evaluation_key(spec)],
        group_name="deployment",
        kinds={"delta"},
        description=f"The '{spec.name}' candidate registered as a model version, with its lineage, gate results and model card.",
    )
    def _registered(context: AssetExecutionContext, lake: LakeResource, artifacts: ArtifactsResource) -> MaterializeResult:
        store, files = lake.lake(), artifacts.store()
        evaluation = latest_metadata(context.instance, evaluation_key(spec))
        cand = candidate_facts(latest_metadata(context.instance, candidate_key(spec)))
        if evaluation["candidate"]["artifact_sha256"] != cand["artifact_sha256"]:
            raise RuntimeError("the evaluation is of another candidate than the latest one: re-run the evaluation")
        gates = evaluation["gate_results"]
        lineage = bundle_lineage(cand["artifact_uri"])
        registry = Registry(store)
        card_path = f"{spec.name}/cards/{cand['artifact_sha256'][:16]}.md"
        test = {k.removeprefix("test_"): v for k, v in evaluation.items() if k.startswith("test_") and k != "test_rows"}
        version = registry.register(
            spec.name,
            artifact_uri=cand["artifact_uri"],
            artifact_sha256=cand["artifact_sha256"],
            training_table=cand["features_uri"],
            training_version=cand["data_version"],
            metrics={**{f"valid_{k}": v for k, v in cand["valid"].items()}, **{f"test_{k}": v for k, v in test.items()}},
            baseline_metrics=cand["baseline"],
            params=cand["params"],
            gate_results=gates,
            gates_passed=bool(evaluation["gates_passed"]),
            reason=str(lineage.get("reason") or "manual"),
            code_version=lineage.get("code_version"),
            state_version=lineage.get("state_version"),
            run_id=context.run_id,
            model_card_uri=files.uri(card_path),
        )
        champion_version = registry.alias(spec.name, "champion")
        champion = registry.get(spec.name, champion_version) if champion_version not in (None, version.version) else None
        card = model_card(version, spec_name=spec.name, champion=champion)
        files.put_bytes(card_path, card.encode())
        context.log.info(f"registered {spec.name} v{version.version} ({version.artifact_uri})")
        return MaterializeResult(
            metadata={
                "model_name": spec.name,
                "model_version": version.version,
                "artifact_uri": MetadataValue.path(version.artifact_uri),
                "artifact_sha256": version.artifact_sha256,
                "training_table": version.training_table,
                "training_version": version.training_version,
                "gates_passed": version.gates_passed,
                "model_card": MetadataValue.md(card),
                "model_card_uri": MetadataValue.path(files.uri(card_path)),
            }
        )

    return _registered


def bundle_lineage(artifact_uri: str) -> dict:
    """The lineage the training recorded in its bundle manifest (code version, reason, state version...)."""
    manifest = json.loads(ArtifactStore(artifact_uri).get_bytes("manifest.json"))
    return manifest.get("lineage") or {}


class PromotionConfig(Config):
    policy: Literal["direct", "canary"] = Field(
        "direct",
        description="direct: the registered version becomes champion at once; canary: it becomes canary and the champion stays.",
    )
    reason: str = Field("passed the gates", description="Recorded with the alias change.")


def champion_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=champion_key(spec),
        deps=[registered_key(spec)],
        group_name="deployment",
        kinds={"delta"},
        description=f"Which '{spec.name}' version serves: the champion alias, flipped atomically under the promotion policy.",
    )
    def _champion(context: AssetExecutionContext, config: PromotionConfig, lake: LakeResource) -> MaterializeResult:
        registry = Registry(lake.lake())
        version = int(latest_metadata(context.instance, registered_key(spec))["model_version"])
        alias = "champion" if config.policy == "direct" else "canary"
        before = registry.alias(spec.name, alias)
        registry.promote(spec.name, version, reason=config.reason, actor=actor(context), alias=alias)
        context.log.info(f"{spec.name} {alias}: v{before} -> v{version}" if before != version else f"{alias} already v{version}")
        return MaterializeResult(
            metadata={
                "champion_version": registry.alias(spec.name, "champion") or -1,
                "canary_version": registry.alias(spec.name, "canary") or -1,
                "previous_version": before if before is not None else -1,
                "policy": config.policy,
                "alias_history": alias_history(registry, spec.name),
            }
        )

    return _champion


class ScoringConfig(Config):
    rescore_all: bool = Field(False, description="Score every feature partition again with the current champion.")


def predictions_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=predictions_key(spec),
        deps=[champion_key(spec), features_key(spec)],
        group_name="deployment",
        kinds={"delta", "pytorch"},
        description=f"Batch predictions of the '{spec.name}' champion on new feature partitions, with the model version on every row.",
    )
    def _predictions(context: AssetExecutionContext, config: ScoringConfig, lake: LakeResource) -> MaterializeResult:
        store = lake.lake()
        registry = Registry(store)
        version = registry.alias(spec.name, "champion")
        if version is None:
            raise RuntimeError(f"'{spec.name}' has no champion yet: promote a model version first")
        mv = registry.get(spec.name, version)
        model = load_model(ModelRef(f"v{version}", mv.artifact_uri, mv.artifact_sha256, version))
        report = score_new_partitions(store, spec, model, spec.name, version, rescore_all=config.rescore_all)
        context.log.info(f"scored {report.rows_out} rows over {len(report.dates)} date(s) with v{version}")
        return MaterializeResult(
            metadata={
                **table_metadata(store, Tables.predictions(spec.name)),
                "model_version": version,
                "rows_scored": report.rows_out,
                "dates_scored": len(report.dates),
                "full_refresh": report.full_refresh,
            }
        )

    return _predictions


def deployment_assets(spec: DatasetSpec) -> list[AssetsDefinition]:
    return [registered_asset(spec), champion_asset(spec), predictions_asset(spec)]
