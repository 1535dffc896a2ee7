"""Model registry on real Delta tables: version numbering, idempotent registration, aliases derived from the event log, time travel, promotion gates, rollback, concurrency, lineage."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import polars as pl
import pytest

from aiflow.models.registry import (
    GatesFailedError,
    ModelVersion,
    NothingToRollBackError,
    Registry,
    RegistryError,
    UnknownVersionError,
)
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams

UTC = dt.UTC
PASSED = {"auc_vs_baseline": {"passed": True, "value": 0.74, "threshold": 0.70}}
FAILED = {"auc_vs_baseline": {"passed": False, "value": 0.61, "threshold": 0.70}, "rows": {"passed": True}}


def sha(seed: object) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def register(registry: Registry, seed: object, *, name: str = "flights", gates_passed: bool = True, **overrides) -> ModelVersion:
    fields = dict(
        artifact_uri=f"/artifacts/{name}/{seed}",
        artifact_sha256=sha(seed),
        training_table="/lake/features/flights",
        training_version=3,
        metrics={"auc": 0.74, "log_loss": 0.41},
        baseline_metrics={"auc": 0.70},
        params={"epochs": 4},
        gate_results=PASSED if gates_passed else FAILED,
        gates_passed=gates_passed,
        reason="manual",
    )
    return registry.register(name, **{**fields, **overrides})


@pytest.fixture
def registry(lake: Lake) -> Registry:
    return Registry(lake)


@pytest.fixture
def three(registry: Registry) -> Registry:
    """flights v1, v2, v3, all gates passed."""
    for seed in ("a", "b", "c"):
        register(registry, seed)
    return registry


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, tzinfo=UTC)


# ------------------------------------------------------------------ versions
def test_versions_are_numbered_from_one_per_name(registry: Registry, lake: Lake):
    assert [register(registry, s).version for s in ("a", "b", "c")] == [1, 2, 3]
    assert register(registry, "x", name="taxis").version == 1
    assert registry.versions("flights")["version"].to_list() == [1, 2, 3]
    assert registry.versions().select("name", "version").rows() == [("flights", 1), ("flights", 2), ("flights", 3), ("taxis", 1)]
    assert lake.exists(Tables.model_versions()) and Tables.model_versions() == "registry/model_versions"


def test_registering_the_same_artifact_again_returns_the_existing_version(three: Registry):
    again = register(three, "b", metrics={"auc": 0.99}, reason="schedule")
    assert again == three.get("flights", 2)
    assert again.metrics["auc"] == 0.74 and again.reason == "manual"
    assert three.versions("flights").height == 3
    assert register(three, "b", name="taxis").version == 1  # the same file under another name is another model


def test_get_and_latest_return_the_row_with_json_decoded(registry: Registry):
    register(registry, "a")
    mv = register(
        registry, "b", params=TrainParams(epochs=2), state_version=5, code_version="abc123", run_id="run-9", model_card_uri="/cards/2.md"
    )
    got = registry.get("flights", 2)
    assert got == mv == registry.latest("flights")
    assert got.params["epochs"] == 2 and got.params["hidden"] == [128, 64]
    assert (got.metrics, got.baseline_metrics) == ({"auc": 0.74, "log_loss": 0.41}, {"auc": 0.70})
    assert got.gate_results == PASSED and got.gates_passed is True and got.failed_gates == []
    assert (got.state_version, got.code_version, got.run_id, got.model_card_uri) == (5, "abc123", "run-9", "/cards/2.md")
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == dt.timedelta(0)
    assert registry.get("flights", 1).state_version is None


@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [("flights", 7, ["'flights'", "no version 7", "registered: 1, 2, 3"]), ("taxis", 1, ["no model named 'taxis'"])],
)
def test_unknown_version_raises_a_key_error_naming_it(three: Registry, name: str, version: int, expected: list[str]):
    with pytest.raises(KeyError) as raised:
        three.get(name, version)
    assert isinstance(raised.value, UnknownVersionError)
    assert all(part in str(raised.value) for part in expected)


def test_an_empty_registry_reads_as_empty(registry: Registry):
    assert registry.versions().height == 0 and registry.versions("flights").columns[:2] == ["name", "version"]
    with pytest.raises(UnknownVersionError, match="no model named 'flights'"):
        registry.latest("flights")
    assert registry.history("flights").height == 0 and registry.aliases("flights") == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"artifact_sha256": "not-a-hash"}, "64 hex"),
        ({"training_version": -1}, ">= 0"),
        ({"gate_results": FAILED, "gates_passed": True}, "auc_vs_baseline"),
        ({"gate_results": {"auc": {"value": 0.7}}}, "'passed'"),
        ({"reason": ""}, "reason"),
        ({"name": "bad name!"}, "model name"),
    ],
)
def test_register_rejects_malformed_input(registry: Registry, overrides: dict, message: str):
    name = overrides.pop("name", "flights")
    with pytest.raises(ValueError, match=message):
        register(registry, "a", name=name, **overrides)


def test_concurrent_registrations_get_distinct_numbers(registry: Registry):
    seeds = ["a", "b", "c", "d", "e", "f", "a", "c"]  # two artifacts registered twice, concurrently
    barrier = threading.Barrier(len(seeds))

    def run(seed: str) -> int:
        barrier.wait()
        return register(registry, seed).version

    with ThreadPoolExecutor(len(seeds)) as pool:
        numbers = list(pool.map(run, seeds))
    rows = registry.versions("flights")
    assert sorted(rows["version"]) == [1, 2, 3, 4, 5, 6]
    assert rows["artifact_sha256"].n_unique() == 6
    by_seed = dict(zip(seeds, numbers, strict=False))
    assert numbers[6] == by_seed["a"] == numbers[0] and numbers[7] == numbers[2]


def test_a_clash_that_bypassed_the_claim_is_detected(registry: Registry, lake: Lake):
    mv = register(registry, "a")
    rogue = pl.DataFrame([{**mv.to_row(), "artifact_sha256": sha("rogue")}], schema=registry.versions().schema)
    version = lake.append(Tables.model_versions(), rogue)  # a writer that did not go through register()
    with pytest.raises(RegistryError, match="registration clash on flights v1"):
        registry._check_unique(mv, version)


def test_lineage_names_the_training_data_and_its_commit(registry: Registry, lake: Lake):
    features = Tables.features("flights")
    lake.append(features, pl.DataFrame({"x": [1, 2]}))
    data_version = lake.append(features, pl.DataFrame({"x": [3]}), metadata={"state_version": 4})
    register(registry, "a", training_table=lake.uri(features), training_version=data_version, state_version=4, code_version="abc", run_id="r1")
    info = registry.lineage("flights", 1)
    assert (info["training_table"], info["training_version"], info["state_version"]) == (lake.uri(features), 1, 4)
    assert (info["code_version"], info["run_id"], info["reason"], info["params"]) == ("abc", "r1", "manual", {"epochs": 4})
    assert info["artifact_sha256"] == sha("a")
    assert info["training_commit"]["version"] == 1 and info["training_commit"]["metadata"] == {"aiflow.state_version": "4"}
    assert pl.read_delta(info["training_table"], version=info["training_version"]).height == 3

    register(registry, "b", training_table="/nowhere/features", training_version=0)
    gone = registry.lineage("flights", 2)
    assert gone["training_commit"] is None and "nowhere" in gone["training_commit_error"]


# ------------------------------------------------------------------ aliases
def test_first_model_has_no_champion_and_nothing_to_roll_back(registry: Registry):
    register(registry, "a")
    assert registry.alias("flights", "champion") is None and registry.aliases("flights") == {}
    with pytest.raises(NothingToRollBackError, match="'champion' was never set"):
        registry.rollback("flights", reason="oops", actor="me")
    registry.promote("flights", 1, reason="first model", actor="me")
    with pytest.raises(NothingToRollBackError, match="only ever pointed at v1"):
        registry.rollback("flights", reason="oops", actor="me")
    assert registry.aliases("flights") == {"champion": 1}


def test_current_aliases_are_derived_from_the_event_log(three: Registry, lake: Lake):
    three.set_alias("flights", "champion", 1, reason="r", actor="me")
    three.set_alias("flights", "challenger", 2, reason="r", actor="me")
    three.set_alias("flights", "canary", 3, reason="r", actor="me")
    three.set_alias("flights", "champion", 2, reason="r", actor="me")
    assert three.remove_alias("flights", "canary", reason="canary over", actor="me").action == "remove"
    assert three.aliases("flights") == {"champion": 2, "challenger": 2}
    assert three.alias("flights", "canary") is None
    commits = lake.version(Tables.alias_events())
    assert three.set_alias("flights", "champion", 2, reason="again", actor="me") is None  # no change, nothing recorded
    assert lake.version(Tables.alias_events()) == commits
    assert three.history("flights").height == 5 and three.history("flights", "champion")["version"].to_list() == [2, 1]


def test_alias_answers_what_was_champion_at_a_given_time(three: Registry):
    three.promote("flights", 1, reason="launch", actor="alice", at=at(6))  # Monday
    three.promote("flights", 2, reason="retrained", actor="dagster-run-1", at=at(8))  # Wednesday
    three.rollback("flights", reason="latency", actor="bob", at=at(10))  # Friday
    assert three.alias("flights", "champion", at=at(5)) is None
    assert three.alias("flights", "champion", at=at(7)) == 1  # last Tuesday
    assert three.alias("flights", "champion", at=at(8)) == 2
    assert three.alias("flights", "champion", at=at(9, 23)) == 2
    assert three.alias("flights", "champion", at=at(11)) == 1 == three.alias("flights", "champion")
    eastern = dt.timezone(dt.timedelta(hours=-4))
    assert three.alias("flights", "champion", at=dt.datetime(2024, 5, 8, 7, tzinfo=eastern)) == 1  # 11:00 UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        three.alias("flights", "champion", at=dt.datetime(2024, 5, 7))


def test_promote_then_rollback_restores_the_previous_version_and_keeps_history(three: Registry):
    for version in (1, 2, 3):
        three.promote("flights", version, reason=f"promote v{version}", actor="ci")
    assert three.rollback("flights", reason="v3 misbehaves", actor="oncall") == 2
    assert three.alias("flights", "champion") == 2
    history = three.history("flights", "champion")
    assert history["action"].to_list() == ["rollback", "promote", "promote", "promote"]
    assert history["version"].to_list() == [2, 3, 2, 1]
    assert history["previous_version"].to_list() == [3, 2, 1, None]
    assert history["set_by"].to_list() == ["oncall", "ci", "ci", "ci"]
    assert history["reason"][0] == "v3 misbehaves"
    assert history["set_at"].is_sorted(descending=True)
    # the log is the truth: rolling back again returns to the version just left (like `kubectl rollout undo`)
    assert three.rollback("flights", reason="false alarm", actor="oncall") == 3


def test_rollback_skips_the_current_version_wherever_it_appears(three: Registry):
    three.promote("flights", 1, reason="r", actor="me", at=at(1))
    three.promote("flights", 2, reason="r", actor="me", at=at(2))
    three.promote("flights", 1, reason="r", actor="me", at=at(3))
    assert three.rollback("flights", reason="r", actor="me", at=at(4)) == 2
    assert three.rollback("flights", reason="r", actor="me", at=at(5)) == 1


def test_rollback_of_an_alias_that_is_not_set_is_refused_and_changes_nothing(three: Registry, lake: Lake):
    three.set_alias("flights", "canary", 1, reason="r", actor="me", at=at(1))
    three.set_alias("flights", "canary", 2, reason="r", actor="me", at=at(2))
    three.remove_alias("flights", "canary", reason="canary error rate 0.47", actor="analysis", at=at(3))
    commits = lake.version(Tables.alias_events())
    message = (
        r"flights: alias 'canary' is not set \(removed from v2 by analysis at 2024-05-03 .* UTC: canary error rate 0.47\).*"
        r"nothing was changed; to set it, run `aiflow models promote flights VERSION --alias canary --reason WHY`"
    )
    with pytest.raises(NothingToRollBackError, match=message):
        three.rollback("flights", reason="restore", actor="me", alias="canary", at=at(4))
    assert three.alias("flights", "canary") is None and lake.version(Tables.alias_events()) == commits
    # set again, it rolls back as usual: to v2, skipping the removal
    three.set_alias("flights", "canary", 3, reason="r", actor="me", at=at(5))
    assert three.rollback("flights", reason="r", actor="me", alias="canary", at=at(6)) == 2


def test_promotion_refuses_a_version_whose_gates_failed_unless_forced(three: Registry):
    three.promote("flights", 3, reason="good", actor="me")
    bad = register(three, "bad", gates_passed=False)
    assert bad.failed_gates == ["auc_vs_baseline"]
    with pytest.raises(GatesFailedError, match=r"v4 failed its gates \(auc_vs_baseline\).*force"):
        three.promote("flights", 4, reason="yolo", actor="me")
    assert three.alias("flights", "champion") == 3
    event = three.promote("flights", 4, reason="accepted risk", actor="me", force=True)
    assert (event.version, event.previous_version, event.action) == (4, 3, "promote")
    assert three.rollback("flights", reason="back", actor="me") == 3


def test_set_alias_refuses_unknown_versions_and_malformed_input(three: Registry):
    with pytest.raises(UnknownVersionError, match="no version 9"):
        three.promote("flights", 9, reason="r", actor="me")
    with pytest.raises(UnknownVersionError, match="no model named 'taxis'"):
        three.set_alias("taxis", "champion", 1, reason="r", actor="me")
    for kwargs, message in [
        ({"alias": "Champion"}, "lowercase word"),
        ({"action": "deploy"}, "action must be one of"),
        ({"reason": ""}, "reason and an actor"),
        ({"actor": ""}, "reason and an actor"),
        ({"at": dt.datetime(2024, 1, 1)}, "timezone-aware"),
    ]:
        args = {"alias": "champion", "reason": "r", "actor": "me", **kwargs}
        with pytest.raises(ValueError, match=message):
            three.set_alias("flights", args.pop("alias"), 1, **args)
    assert three.history("flights").height == 0


def test_concurrent_alias_appends_from_two_threads_both_land(three: Registry):
    barrier = threading.Barrier(2)

    def flip(alias: str, versions: list[int]) -> None:
        barrier.wait()
        for version in versions:
            three.set_alias("flights", alias, version, reason="flip", actor=threading.current_thread().name)

    threads = [
        threading.Thread(target=flip, args=("canary", [1, 2, 3])),
        threading.Thread(target=flip, args=("challenger", [3, 2, 1])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = three.history("flights")
    assert history.height == 6
    assert history.filter(pl.col("alias") == "canary")["version"].to_list() == [3, 2, 1]
    assert three.aliases("flights") == {"canary": 3, "challenger": 1}
