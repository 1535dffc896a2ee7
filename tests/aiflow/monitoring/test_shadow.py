"""The challenger in shadow, judged per monitoring window on a real world (aiflow.monitoring.shadow through
decide_window): a challenger that beats the champion on the same labelled live rows is promoted; one that does not is
retired and the champion keeps serving; without labels it waits and a retrain verdict waits with it; a re-judged window
keeps the verdict it applied; an old window the challenger never scored judges nothing."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from aiflow.models.registry import Registry
from aiflow.monitoring import history
from aiflow.serving.inference_log import log_table
from tests.aiflow.monitoring.test_partition import WEEK, monitor
from tests.aiflow.monitoring.world import SERVED, World, serve_week


def challenger(world: World) -> int:
    """A second registered version set as the challenger (its scores are written below: only the log is read)."""
    registry = Registry(world.lake)
    mv = registry.get(world.spec.name, world.version)
    second = registry.register(
        world.spec.name, artifact_uri=mv.artifact_uri + "-2", artifact_sha256="c" * 64, training_table=mv.training_table,
        training_version=mv.training_version, metrics={}, baseline_metrics={}, params={}, gate_results={}, gates_passed=True,
        reason="retrain", artifact_root=str(world.artifacts),
    )  # fmt: skip
    registry.promote(world.spec.name, second.version, reason="test: shadow", actor="test", alias="challenger")
    return second.version


def shadow(world: World, ids: list[str], version: int, quality: str, seed: int = 0) -> None:
    """Log the challenger's shadow answers for ``ids``: ``oracle`` scores from the true labels (plus noise), ``noise``
    random scores."""
    lake = world.lake
    champ = lake.scan(log_table(world.spec.name)).filter(pl.col("request_id").is_in(ids)).collect()
    labels = lake.scan("labels/rides").filter(pl.col("request_id").is_in(ids)).select("request_id", "label").collect()
    rows = champ.join(labels, on="request_id", how="left")
    rng = np.random.default_rng(seed)
    truth = rows["label"].fill_null(0).to_numpy()
    score = np.clip(0.7 * truth + 0.3 * rng.random(rows.height), 0, 1) if quality == "oracle" else rng.random(rows.height)
    lake.append(
        log_table(world.spec.name),
        rows.drop("label").with_columns(pl.lit("shadow").alias("variant"), pl.lit(version, pl.Int64).alias("model_version"),
                                        pl.Series("probability", score), pl.Series("prediction", (score >= 0.5).astype(float))),  # fmt: skip
        partition_by=["date"],
    )


def decision(world: World, window: dt.date) -> dict:
    return history.read_decisions(world.lake, world.spec.name).filter(pl.col("window_start") == window).row(-1, named=True)


def test_a_challenger_that_wins_on_live_labelled_rows_is_promoted(world: World):
    v2 = challenger(world)
    shadow(world, serve_week(world, 0, shifted=False), v2, "oracle")
    serve_week(world, 1, shifted=False, labels=False)  # data time moves past the first week
    found = monitor(world, SERVED)
    registry = Registry(world.lake)
    assert found.challenger is not None and found.challenger.verdict.action == "promote", found.challenger
    # judged at the live confidence: 90 % split over the 4 windows it may be judged in
    assert found.challenger.verdict.evidence.confidence == 0.975 and "better with 97.5% confidence" in found.challenger.verdict.reason
    assert registry.alias("rides", "champion") == v2 and registry.alias("rides", "challenger") is None
    row = decision(world, SERVED)
    assert row["challenger_action"] == "promote" and row["challenger_version"] == v2 and row["challenger_gain_low"] > 0.05
    assert row["challenger_rows"] == 7 * 150 and row["challenger_windows"] == 1
    events = registry.history("rides")
    assert any("promote challenger v2" in r for r in events.filter(pl.col("alias") == "champion")["reason"])
    # the window re-judged (late labels: computed again) keeps the verdict it applied, though the alias has moved on
    again = monitor(world, SERVED)
    assert again.challenger is None and decision(world, SERVED)["challenger_action"] == "promote"


def test_a_challenger_that_does_not_win_is_retired_and_the_champion_keeps_serving(world: World):
    v2 = challenger(world)
    shadow(world, serve_week(world, 0, shifted=False), v2, "noise")
    serve_week(world, 1, shifted=False, labels=False)
    found = monitor(world, SERVED)
    registry = Registry(world.lake)
    assert found.challenger.verdict.action == "retire", found.challenger.verdict.reason
    assert registry.alias("rides", "champion") == world.version and registry.alias("rides", "challenger") is None
    assert decision(world, SERVED)["challenger_gain_high"] < 0.002  # the default cost
    assert any("not better by the cost" in r for r in registry.history("rides", "challenger")["reason"])


def test_without_labels_the_challenger_waits_and_so_does_a_retrain(world: World):
    serve_week(world, 0, shifted=False)
    v2 = challenger(world)
    shadow(world, serve_week(world, 1, shifted=True, labels=False), v2, "noise")  # the shifted week fires drift
    serve_week(world, 2, shifted=True, labels=False)
    found = monitor(world, SERVED)
    assert found.challenger is None  # the challenger scored nothing in the first week: nothing judged there
    found = monitor(world, SERVED + WEEK)
    assert found.challenger.verdict.action == "wait" and "too little evidence" in found.challenger.verdict.reason
    assert found.decision.action == "skip" and "challenger v2 stays in shadow" in found.decision.reason
    assert found.decision.fired == ("drift",) and found.run_key is None
    assert Registry(world.lake).alias("rides", "challenger") == v2


def challenger_after_a_retrain(world: World, **retrain) -> tuple[World, int]:
    """The world under a spec with ``retrain`` settings, its first served week judged, a retrain recorded as asked for
    at that window (by the age signal, say) and its product registered as the challenger (returned)."""
    from aiflow.monitoring.policy import Decision
    from tests.aiflow.monitoring.world import rides_spec

    world = World(world.home, rides_spec(retrain=retrain), world.version)
    serve_week(world, 0, shifted=False)
    monitor(world, SERVED)
    asked = Decision(SERVED, SERVED + WEEK, world.version, "retrain", "retrain: age")
    history.replace_decision(world.lake, "rides", asked.to_row() | {"run_key": "rides-retrain-x", "labelled": 0})
    return world, challenger(world)


def test_a_retired_challenger_ends_its_retrains_cooldown_so_a_change_right_after_it_retrains(world: World):
    """An age challenger trained just before the world changed loses; under a 28-day cooldown (4 weekly windows) the
    change it was not trained on waited out the cooldown (the sparse_late_labels world: detected 5 windows late, now 3).
    Its retirement ends the cooldown: the drift at the change's onset retrains in the same window."""
    world, v2 = challenger_after_a_retrain(world, signals=["drift"], hysteresis=1, min_rows=300, cooldown_days=28)
    shadow(world, serve_week(world, 1, shifted=True), v2, "noise")  # the world changes; the challenger scores noise
    serve_week(world, 2, shifted=True, labels=False)
    found = monitor(world, SERVED + WEEK)
    assert found.challenger.verdict.action == "retire", found.challenger.verdict.reason
    assert found.decision.action == "retrain" and found.decision.fired == ("drift",), found.decision.reason
    assert found.run_key is not None
    row = decision(world, SERVED + WEEK)
    assert row["action"] == "retrain" and row["challenger_action"] == "retire"


def test_a_decisive_drop_after_the_challengers_retrain_supersedes_it_and_retrains(world: World):
    """A challenger still waiting for evidence (too few labelled rows both scored) while the champion's realized metric
    collapses on a window after the one its retrain was decided on: the world moved past its training data. It is
    retired as superseded (the champion keeps serving), its cooldown ends, and the window retrains at once."""
    from aiflow.serving.feedback import record_feedback

    world, v2 = challenger_after_a_retrain(world, signals=["realized"], hysteresis=2, min_rows=300, min_labels=50, cooldown_days=28)
    ids = serve_week(world, 1, shifted=False, labels=False)
    shadow(world, ids[:40], v2, "noise")  # 40 rows both scored: under min_labels (50), the challenger would wait
    served = world.lake.scan(log_table("rides")).filter(pl.col("request_id").is_in(ids) & (pl.col("variant") == "champion")).collect()
    # the concept flips: the labels that come back are the opposite of what the champion says
    record_feedback(world.lake, "rides", list(zip(served["request_id"], (served["probability"] < 0.5).cast(pl.Float64), strict=True)),
                    known=lambda got: set(got))  # fmt: skip
    serve_week(world, 2, shifted=False, labels=False)
    found = monitor(world, SERVED + WEEK)
    assert found.challenger.verdict.action == "retire" and "superseded by a decisive realized drop" in found.challenger.verdict.reason
    assert Registry(world.lake).alias("rides", "challenger") is None and Registry(world.lake).alias("rides", "champion") == world.version
    assert found.decision.action == "retrain" and found.decision.fired == ("realized",), found.decision.reason
    assert "decisive: at least 3 times its threshold" in found.decision.reason
    assert any("superseded" in r for r in Registry(world.lake).history("rides", "challenger")["reason"])
