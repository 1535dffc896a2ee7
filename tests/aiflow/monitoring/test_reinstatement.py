"""Scope: earlier champions as candidates (aiflow.monitoring.challenger.reinstatement) through the real validation step
and the promotion rule: a strong earlier champion scored on the retrain's held-out rows beside a weak current champion,
its paired evidence recorded with the evaluation's metrics and read back, and the promotion rule reinstating it; an
earlier champion whose bundle no longer verifies is left out with a note and never fails the evaluation.

Real: a lake, two really trained scikit-learn models registered (the second on shuffled labels), real bundles.
Not the demo: the rides dataset (Asia/Tokyo, other column names), as a classification and as a regression."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from aiflow.evaluation.gates import GateConfig
from aiflow.evaluation.metrics import compute_metrics
from aiflow.evaluation.validation import ModelRef, evidence_of_metrics, held_out_rows, load_model, validate
from aiflow.models.candidates import Evaluation
from aiflow.models.registry import Registry
from aiflow.monitoring.challenger import challenger_policy_of, earlier_champions, reinstatement
from aiflow.storage.lake import Tables
from aiflow.train.contract import TrainParams
from aiflow.train.loop import train
from aiflow.train.request import pinned_request
from assets.deployment import promotion_alias, reinstated
from tests.aiflow.monitoring.world import FAST


@pytest.fixture
def two_champions(world):
    """v1 (the world's model) served first; then v2 became the champion: a model of another concept (trained on the same
    rows with their labels shuffled, as a stale concept looks once the world went back to v1's)."""
    return _second_champion(world)


@pytest.fixture(scope="module")
def two_regression_champions(tmp_path_factory):
    """The same on the regression rides world (the target is the delay in minutes): RMSE, a relative gain."""
    from tests.aiflow.monitoring.world import build_world, rides_spec

    return _second_champion(build_world(tmp_path_factory.mktemp("reg-world"), rides_spec("regression")))


def _second_champion(world):
    lake, spec = world.lake, world.spec
    real = pinned_request(lake, spec, TrainParams(**FAST), str(world.artifacts), "other-concept", "test")
    rows = lake.scan(Tables.features(spec.name), real.data_version).collect()
    target = spec.target.name
    shuffled = f"features/{spec.name}_other_concept"
    lake.overwrite(shuffled, rows.with_columns(pl.Series(target, np.random.default_rng(7).permutation(rows[target].to_numpy()))),
                   metadata={"state_version": str(real.state_version)})  # fmt: skip
    result = train(real.model_copy(update={"features_uri": lake.uri(shuffled), "data_version": lake.version(shuffled)}), log=lambda _: None)
    registry = Registry(lake)
    weak = registry.register(
        spec.name, artifact_uri=result.artifact_uri, artifact_sha256=result.artifact_sha256,
        training_table=lake.uri(Tables.features(spec.name)), training_version=result.data_version, metrics=result.metrics,
        baseline_metrics=result.naive_metrics, params={}, gate_results={}, gates_passed=True, reason="test",
        artifact_root=str(world.artifacts), bundle_files=result.bundle_files, family=result.family,
    )  # fmt: skip
    registry.promote(spec.name, weak.version, reason="test", actor="test")
    return world, registry, weak


def ref(registry: Registry, world, version: int) -> ModelRef:
    return ModelRef.of(registry.get(world.spec.name, version), str(world.artifacts))


def validated_beside(registry: Registry, world, weak, earlier: list[ModelRef]):
    """The real validation step with the champion's own bundle as the candidate and ``earlier`` scored beside it on the
    held-out rows of the champion's training version; returns its report and those rows."""
    spec, mv = world.spec, registry.get(world.spec.name, weak.version)
    report = validate(
        ref(registry, world, weak.version), features_uri=mv.training_table, data_version=mv.training_version, spec=spec,
        candidate_valid_metrics={}, baseline_valid_metrics={}, champion=ref(registry, world, weak.version),
        config=GateConfig(), storage_options=None, artifact_options=None, earlier=earlier,
    )  # fmt: skip
    return report, held_out_rows(mv.training_table, mv.training_version, spec)


def held_out_metric(registry: Registry, world, version: int, rows, metric: str) -> float:
    """Version ``version``'s ``metric`` on ``rows``, computed here by hand (loaded bundle, the project's metrics)."""
    y = rows[world.spec.target.name].to_numpy()
    return compute_metrics(y, load_model(ref(registry, world, version)).predict(rows), world.spec.problem_type)[metric]


def test_a_strong_earlier_champion_is_scored_beside_a_weak_one_and_reinstated(two_champions):
    world, registry, weak = two_champions
    spec = world.spec
    events = list(reversed(registry.history(spec.name, "champion")["version"].to_list()))
    assert earlier_champions(events, current=weak.version, pool=3) == [world.version]
    tampered = dataclasses.replace(ref(registry, world, world.version), label="v99", version=99, artifact_sha256="0" * 64)
    report, rows = validated_beside(registry, world, weak, [ref(registry, world, world.version), tampered])
    # the earlier champion's evidence is on exactly the held-out rows, against the champion's own scores
    strong, champ = (held_out_metric(registry, world, v, rows, "roc_auc") for v in (world.version, weak.version))
    e = report.earlier[world.version]
    assert e.rows == report.rows == rows.height
    assert e.champion == pytest.approx(champ) and e.challenger == pytest.approx(strong) and e.gain == pytest.approx(strong - champ)
    assert e.gain > 0.05 and e.low > 0, e  # the concept that holds against one that does not
    # the tampered one is left out, named, and the evaluation itself stands
    assert 99 not in report.earlier
    assert any(n.startswith("earlier champion v99 not compared") for n in report.notes), report.notes
    # what the evaluation records reads back the same
    retrain, earlier = evidence_of_metrics(report.evidence_metrics(), "roc_auc", report.rows)
    assert retrain is not None and retrain.gain == pytest.approx(0.0)  # the candidate is the champion's own bundle here
    assert set(earlier) == {world.version}
    assert (earlier[world.version].gain, earlier[world.version].low, earlier[world.version].high) == (e.gain, e.low, e.high)
    # the promotion rule reinstates it (shadow, the spec's default), naming both bounds
    assert reinstatement(challenger_policy_of(spec), retrain, earlier) == world.version
    evaluation = Evaluation(
        evaluation_id="e", candidate_id="c", name=spec.name, run_id="r", created_at=dt.datetime.now(dt.UTC), artifact_sha256="a" * 64,
        test_metrics=report.candidate_metrics | report.evidence_metrics(), champion_version=weak.version, champion_metrics={},
        rows=report.rows, latency_ms_per_1k=1.0, gate_results={}, gates_passed=True, slices=[], plot_uri=None, notes=[],
    )  # fmt: skip
    back = reinstated(spec, "spec", weak.version, evaluation)
    assert back is not None and back[0] == world.version
    assert f"earlier champion v{world.version} reinstated" in back[1] and "the retrain's lower bound" in back[1]
    # never under direct promotion, nor on an evaluation made against another champion
    assert reinstated(spec, "direct", weak.version, evaluation) is None
    assert reinstated(spec, "spec", world.version, evaluation) is None
    assert promotion_alias(spec, "spec", weak.version, evaluation, "r")[0] == "challenger"  # what would happen without it


def test_an_earlier_champion_whose_inputs_are_gone_is_not_compared(two_champions):
    world, registry, weak = two_champions
    mv = registry.get(world.spec.name, weak.version)
    rows = held_out_rows(mv.training_table, mv.training_version, world.spec)
    from aiflow.evaluation.validation import _earlier_evidence

    notes: list[str] = []
    y = rows[world.spec.target.name].to_numpy()
    gone = load_model(ref(registry, world, world.version)).input_columns[-1]  # a column the feature set no longer has
    got = _earlier_evidence([ref(registry, world, world.version)], rows.drop(gone), y, np.full(len(y), 0.5), "roc_auc", notes, None)
    assert got == {} and notes == [f"earlier champion v{world.version} not compared: its input column(s) {gone} are gone"]


def test_a_regression_s_earlier_champion_is_reinstated_on_its_relative_rmse_gain(two_regression_champions):
    """Not only ROC AUC: the regression's evidence is the relative RMSE reduction (one cost reads the same for both),
    measured on the retrain's held-out rows, recorded, read back and reinstated by the same rule."""
    from aiflow.evaluation.paired import gain_of

    world, registry, weak = two_regression_champions
    spec = world.spec
    assert spec.problem_type == "regression"
    report, rows = validated_beside(registry, world, weak, [ref(registry, world, world.version)])
    strong, champ = (held_out_metric(registry, world, v, rows, "rmse") for v in (world.version, weak.version))
    e = report.earlier[world.version]
    assert e.rows == rows.height and e.champion == pytest.approx(champ) and e.challenger == pytest.approx(strong)
    assert e.gain == pytest.approx(float(gain_of("rmse", champ, strong))) and e.gain == pytest.approx((champ - strong) / champ)
    assert strong < champ and e.low > 0, e  # the model of the concept that holds has the lower error, surely
    retrain, earlier = evidence_of_metrics(report.evidence_metrics(), "rmse", report.rows)
    assert retrain is not None and retrain.gain == pytest.approx(0.0) and set(earlier) == {world.version}
    assert earlier[world.version].gain == pytest.approx(e.gain)
    assert reinstatement(challenger_policy_of(spec), retrain, earlier) == world.version
