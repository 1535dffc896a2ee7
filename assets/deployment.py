"""Deployment stage: register the gated candidate, flip the champion alias, score new partitions."""

import datetime as dt
import getpass
from typing import Literal

import pydantic
from dagster import (
    AssetExecutionContext,
    AssetObservation,
    AssetsDefinition,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from aiflow.evaluation.metrics import PRIMARY
from aiflow.evaluation.paired import Evidence
from aiflow.evaluation.validation import ModelRef, evidence_of_metrics, load_model
from aiflow.models.bundle import verify_bundle
from aiflow.models.candidates import HandoffNotFoundError, Handoffs
from aiflow.models.metric_names import NAIVE, prefixed, registry_metrics
from aiflow.models.model_card import model_card
from aiflow.models.registry import Registry
from aiflow.monitoring import history
from aiflow.monitoring.challenger import challenger_policy_of, decisive_offline, reinstatement
from aiflow.serving.batch import score_new_partitions
from aiflow.spec import DatasetSpec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Tables
from assets.keys import champion_key, decisions_key, evaluation_key, features_key, predictions_key, registered_key
from assets.metadata import frame_table, table_metadata
from assets.training import WINDOW_TAG, link, run_ids
from assets.validation import CANDIDATE_ID, USE_LATEST
from resources.notify import NotifierResource
from resources.storage import ArtifactsResource, LakeResource


def actor(context) -> str:
    """Who changes an alias from Dagster: the run and the OS user behind it."""
    return f"dagster run {context.run_id} ({getpass.getuser()})"


def alias_history(registry: Registry, name: str) -> MetadataValue:
    """The latest alias events of a model, as an inline table for the UI."""
    return frame_table(registry.history(name).head(10))


def alias_metadata(registry: Registry, name: str) -> dict:
    """Current champion and canary versions (keys left out when unset) and the alias history."""
    meta: dict = {"alias_history": alias_history(registry, name)}
    for alias in ("champion", "canary", "challenger"):
        version = registry.alias(name, alias)
        if version is not None:
            meta[f"{alias}_version"] = version
    return meta


def card_slices(slices: list[dict]) -> dict[str, dict]:
    """Evaluation slice rows as the model card takes them: ``column=value`` -> figures."""
    return {f"{s['slice']}={s['value']}": {k: v for k, v in s.items() if k not in ("slice", "value")} for s in slices}


#: Which evaluation to register when the step runs on its own.
RegistrationConfig = pydantic.create_model("RegistrationConfig", __base__=Config, candidate_id=CANDIDATE_ID, use_latest=USE_LATEST)


def registered_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=registered_key(spec),
        deps=[evaluation_key(spec)],
        group_name="deployment",
        kinds={"delta"},
        description=f"The '{spec.name}' candidate registered as a model version, with its lineage, gate results and model card.",
    )
    def _registered(context: AssetExecutionContext, config: RegistrationConfig, lake: LakeResource, artifacts: ArtifactsResource) -> MaterializeResult:
        """This run's evaluated candidate registered as a model version (exactly the evaluated artifact)."""
        store, files = lake.lake(), artifacts.store()
        handoffs = Handoffs(store)
        found = handoffs.resolve_evaluation(spec.name, run_ids=run_ids(context), candidate_id=config.candidate_id, latest=config.use_latest)
        evaluation = found.record
        cand = handoffs.candidate(evaluation.candidate_id)
        context.log.info(f"registering {found.how}: evaluation {evaluation.evaluation_id} of candidate {cand.candidate_id}")
        if cand.artifact_sha256 != evaluation.artifact_sha256:
            raise RuntimeError(
                f"evaluation {evaluation.evaluation_id} judged artifact {evaluation.artifact_sha256[:12]} but candidate "
                f"{cand.candidate_id} is {cand.artifact_sha256[:12]}: the hand-off records disagree"
            )
        bundle = verify_bundle(ArtifactStore(cand.artifact_uri, storage_options=artifacts.options()), "", cand.artifact_sha256)
        lineage = bundle.manifest.get("lineage") or {}
        registry = Registry(store)
        card_path = f"{spec.name}/cards/{cand.artifact_sha256[:16]}.md"
        existing = registry.find(spec.name, cand.artifact_sha256)
        version = registry.register(
            spec.name,
            artifact_uri=cand.artifact_uri,
            artifact_sha256=cand.artifact_sha256,
            training_table=cand.features_uri,
            training_version=cand.data_version,
            metrics=registry_metrics(cand.valid_metrics, evaluation.test_metrics),
            baseline_metrics=cand.baseline_metrics,
            params=cand.params,
            gate_results=evaluation.gate_results,
            gates_passed=evaluation.gates_passed,
            reason=str(lineage.get("reason") or "manual"),
            code_version=lineage.get("code_version"),
            state_version=lineage.get("state_version"),
            run_id=context.run_id,
            model_card_uri=files.uri(card_path),
            family=cand.family or bundle.family,
            family_metrics=cand.family_metrics,
            bundle_files=bundle.file_hashes,
            artifact_root=artifacts.uri(),
        )
        handoffs.record_registration(evaluation, run_id=context.run_id, version=version.version)
        champion = None
        if evaluation.champion_version is not None and evaluation.champion_version != version.version:
            champion = registry.get(spec.name, evaluation.champion_version)
        card = model_card(
            version,
            spec_name=spec.name,
            slices=card_slices(evaluation.slices),
            champion=champion,
            champion_test_metrics=evaluation.champion_metrics if champion is not None else None,
        )
        files.put_bytes(card_path, card.encode())
        if existing is not None:
            context.log.info(f"{spec.name}: this bundle is identical to v{existing.version} (same digest); nothing new registered")
        else:
            context.log.info(f"registered {spec.name} v{version.version} ({version.family}, {version.artifact_uri})")
        metrics = {**version.metrics, **prefixed(NAIVE, version.baseline_metrics)}
        return MaterializeResult(
            metadata={
                "model_name": spec.name,
                "model_version": version.version,
                "family": version.family or "",
                "identical_to_existing": existing is not None,
                "candidate_id": cand.candidate_id,
                "evaluation_id": evaluation.evaluation_id,
                "artifact_uri": link(version.location(artifacts.uri())),
                "artifact_sha256": version.artifact_sha256,
                "training_table": version.training_table,
                "training_version": version.training_version,
                "gates_passed": version.gates_passed,
                **{k: MetadataValue.float(round(v, 6)) for k, v in sorted(metrics.items())},
                "model_card": MetadataValue.md(card),
                "model_card_uri": link(files.uri(card_path)),
            }
        )

    return _registered


PromotionConfig = pydantic.create_model(
    "PromotionConfig",
    __base__=Config,
    policy=(
        Literal["spec", "direct", "shadow", "canary"],
        Field(
            "spec",
            description="spec: the dataset's monitoring.retrain.promotion (shadow by default); direct: the registered version becomes "
            "champion at once; shadow: it becomes the challenger (scored in shadow, promoted on live evidence) unless its offline "
            "margin over the champion is decisive or there is no champion; canary: it becomes canary and the champion stays.",
        ),
    ),
    reason=(str, Field("passed the gates", description="Recorded with the alias change.")),
    candidate_id=CANDIDATE_ID,
    use_latest=USE_LATEST,
)


def champion_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=champion_key(spec),
        deps=[registered_key(spec)],
        group_name="deployment",
        kinds={"delta"},
        description=f"Which '{spec.name}' version serves: the champion alias, flipped atomically under the promotion policy.",
    )
    def _champion(context: AssetExecutionContext, config: PromotionConfig, lake: LakeResource, notifier: NotifierResource) -> MaterializeResult:
        """The version registered in this run (or the configured candidate's) promoted under the policy."""
        store = lake.lake()
        registry = Registry(store)
        found = Handoffs(store).resolve_registration(
            spec.name, run_ids=run_ids(context), candidate_id=config.candidate_id, latest=config.use_latest
        )
        version = found.record.version
        context.log.info(f"promoting {found.how}: v{version} (candidate {found.record.candidate_id})")
        try:  # the evaluation the registered candidate passed (its offline evidence against the champion)
            evaluation = Handoffs(store).resolve_evaluation(spec.name, run_ids=(), candidate_id=found.record.candidate_id).record
        except HandoffNotFoundError:
            evaluation = None
        champion = registry.alias(spec.name, "champion")
        back = reinstated(spec, config.policy, champion, evaluation)
        if back is not None:  # an earlier champion serves again; the retrain stays registered, without an alias
            target, alias, reason = back[0], "champion", f"{config.reason}; {back[1]}"
            context.log.info(f"{spec.name} v{version} is registered without an alias: earlier champion v{target} is reinstated")
        else:
            target = version
            alias, reason = promotion_alias(spec, config.policy, champion, evaluation, config.reason)
        before = registry.alias(spec.name, alias)
        registry.promote(spec.name, target, reason=reason, actor=actor(context), alias=alias)
        context.log.info(promotion_message(spec.name, alias, before, target))
        context.log.info(reason)
        if before != target:
            notifier.notifier().send("promotion", promotion_message(spec.name, alias, before, target), {"version": target, "reason": reason})
        window = context.run.tags.get(WINDOW_TAG) if context.run else None
        if window:  # a retrain a monitoring window asked for: its outcome beside the window's decision
            outcome = "reinstated" if back is not None else {"champion": "promoted"}.get(alias, alias)
            served = target if alias == "champion" else champion  # who serves after this flip
            history.record_outcome(store, spec.name, dt.date.fromisoformat(window), run_id=context.run_id, registered_version=version,
                                   alias=alias, served_version=served, outcome=outcome, reason=reason)  # fmt: skip
            # and on the window's page of the decisions asset in the UI (an observation: the decision itself is unchanged)
            context.log_event(AssetObservation(
                asset_key=decisions_key(spec), partition=window, description=f"the retrain this window asked for: {outcome} ({reason})",
                metadata={"retrain_outcome": outcome, "retrain_version": version, "served_version": served, "retrain_run": context.run_id},
            ))  # fmt: skip
        meta = {**alias_metadata(registry, spec.name), "promoted_version": target, "policy": config.policy, "alias": alias, "reason": reason,
                "registered_version": version, "reinstated": back is not None}  # fmt: skip
        if before is not None:
            meta["previous_version"] = before
        return MaterializeResult(metadata=meta)

    return _champion


def promotion_alias(spec: DatasetSpec, policy: str, champion: int | None, evaluation, reason: str) -> tuple[str, str]:
    """The alias a registered version takes under ``policy`` and the reason recorded with it.

    ``shadow`` (the spec's default): the first model becomes the champion; otherwise the version becomes the
    challenger, unless the validation step's paired evidence against the *current* champion is already decisive
    (its lower bound clears ``monitoring.retrain.cost``), which promotes it at once."""
    if policy == "spec":
        policy = spec.monitoring.retrain.promotion
    if policy == "canary":
        return "canary", reason
    if policy == "direct" or champion is None:
        return "champion", reason
    m = evaluation.test_metrics if evaluation is not None and evaluation.champion_version == champion else {}
    rule = challenger_policy_of(spec)
    if "gain_vs_champion_low" in m:
        e = Evidence(PRIMARY[spec.problem_type][0], evaluation.rows, gain=m["gain_vs_champion"], low=m["gain_vs_champion_low"],
                     high=m["gain_vs_champion_high"], confidence=0.9)  # fmt: skip
        said = f"offline gain over champion v{champion} {e.gain:+.4f} on {e.rows:,} test rows, 90% lower bound {e.low:+.4f}"
        if decisive_offline(rule, e):
            return "champion", f"{reason}; decisive offline: {said} >= cost {rule.cost}"
        return "challenger", f"{reason}; challenger in shadow: {said}, not decisive (cost {rule.cost}): live evidence decides"
    return "challenger", f"{reason}; challenger in shadow: no offline comparison with champion v{champion}: live evidence decides"


def reinstated(spec: DatasetSpec, policy: str, champion: int | None, evaluation) -> tuple[int, str] | None:
    """The earlier champion to serve again instead of the registered retrain, and why (None: the retrain's own promotion
    applies). Only under shadow promotion (``spec`` resolving to it, or ``shadow``), where evidence decides, and only on an
    evaluation made against the *current* champion (:func:`aiflow.monitoring.challenger.reinstatement`)."""
    if policy == "spec":
        policy = spec.monitoring.retrain.promotion
    if policy != "shadow" or champion is None or evaluation is None or evaluation.champion_version != champion:
        return None
    retrain, earlier = evidence_of_metrics(evaluation.test_metrics, PRIMARY[spec.problem_type][0], evaluation.rows)
    back = reinstatement(challenger_policy_of(spec), retrain, earlier)
    if back is None:
        return None
    e = earlier[back]
    said = f"offline gain of v{back} over champion v{champion} {e.gain:+.4f} on {e.rows:,} test rows, 90% lower bound {e.low:+.4f}"
    if retrain is not None and retrain.low is not None:
        said += f" (the retrain's lower bound {retrain.low:+.4f})"
    return back, f"earlier champion v{back} reinstated: {said} >= cost {challenger_policy_of(spec).cost}"


def promotion_message(name: str, alias: str, before: int | None, after: int) -> str:
    """``flights champion: none -> v1`` (or ``v1 -> v2``, or ``already v2``) for the run log."""
    if before == after:
        return f"{name} {alias} already v{after}"
    return f"{name} {alias}: {'none' if before is None else f'v{before}'} -> v{after}"


#: Among steps ready to run, the in-process executor runs the highest ``dagster/priority`` first: scoring
#: goes last, so a lifecycle run scores with the champion it just promoted, or with the one that stays.
SCORING_PRIORITY = "-100"


#: Score new feature rows as soon as the features change, without waiting for a retrain. A latch reset only by a
#: request (not by a materialization in the same tick, nor lost while a run is in flight: ``eager()`` drops both,
#: measured in ../shared/DAGSTER-AUTOMATION.md), and never re-requested after a failed run until the features change again.
FOLLOWS_FEATURES = (
    AutomationCondition.any_deps_updated().since(AutomationCondition.newly_requested() | AutomationCondition.initial_evaluation())
    & ~AutomationCondition.in_progress()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.any_deps_missing()
).with_label("new feature rows")


class ScoringConfig(Config):
    rescore_all: bool = Field(False, description="Score every feature partition again with the current champion.")


def predictions_asset(spec: DatasetSpec) -> AssetsDefinition:
    @asset(
        key=predictions_key(spec),
        # features only, not the champion: a candidate blocked by its gates skips registration and promotion, never
        # scoring; the champion is read from the registry alias (the priority puts this step after any promotion)
        deps=[features_key(spec)],
        op_tags={"dagster/priority": SCORING_PRIORITY},
        group_name="deployment",
        kinds={"delta", "pytorch"},
        automation_condition=FOLLOWS_FEATURES,
        output_required=False,
        description=f"Batch predictions of the '{spec.name}' champion on new feature partitions, with the model version on every "
        "row. Follows the features under the daemon (automation); not materialized while no champion exists.",
    )
    def _predictions(context: AssetExecutionContext, config: ScoringConfig, lake: LakeResource, artifacts: ArtifactsResource):
        """New feature partitions scored by the current champion alias, whatever this run's gates said."""
        store = lake.lake()
        registry = Registry(store)
        version = registry.alias(spec.name, "champion")
        if version is None:  # one cause, one message: the training or gate step that failed already said why
            context.log.warning(f"'{spec.name}' has no champion yet: nothing scored (the first model that passes its gates is promoted)")
            return
        mv = registry.get(spec.name, version)
        model = load_model(ModelRef.of(mv, artifacts.uri()), artifacts.options())
        report = score_new_partitions(store, spec, model, spec.name, version, rescore_all=config.rescore_all)
        context.log.info(f"scored {report.rows_out} rows over {len(report.dates)} date(s) with v{version}")
        yield MaterializeResult(
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
