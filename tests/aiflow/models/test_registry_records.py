"""Scope: what the model registry records and gives back, exactly, on real Delta tables — every field of a version (hash
case, numbers, JSON columns, family, per-file hashes, locations relative to the artifact root), lookups by digest,
lineage with its training commit, the messages of every refusal, alias events at equal times, a table written before
newer columns existed — and the location helpers that keep a copied home loading."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import polars as pl
import pytest
from deltalake import write_deltalake

from aiflow.models.registry import (
    EVENTS_SCHEMA,
    VERSIONS_SCHEMA,
    GatesFailedError,
    ModelVersion,
    Registry,
    RegistryError,
    UnknownVersionError,
    relative_location,
    resolve_location,
)
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams

UTC = dt.UTC


def sha(seed: object) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def fields(seed: object, **overrides) -> dict:
    return {
        "artifact_uri": f"/artifacts/flights/{seed}",
        "artifact_sha256": sha(seed),
        "training_table": "/lake/features/flights",
        "training_version": 3,
        "metrics": {"auc": 0.74},
        "baseline_metrics": {"auc": 0.70},
        "params": {"epochs": 4},
        "gate_results": {"auc": {"passed": True, "value": 0.74}},
        "gates_passed": True,
        "reason": "manual",
        **overrides,
    }


@pytest.fixture
def registry(lake: Lake) -> Registry:
    return Registry(lake)


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, tzinfo=UTC)


# ------------------------------------------------------------------ versions: what is recorded
def test_every_field_of_a_registration_is_recorded_and_read_back(registry: Registry):
    class Gate:  # a gate result given as a pydantic-like model (what the evaluation returns)
        def model_dump(self, mode: str) -> dict:
            assert mode == "json"
            return {"passed": True, "value": 0.5, "when": dt.date(2024, 5, 1)}

    mv = registry.register(
        "flights",
        **fields(
            "a", artifact_sha256=sha("a").upper(), artifact_uri="/home/artifacts/flights/candidates/a", training_version=3.0,
            state_version=2, metrics={"auc": 1}, baseline_metrics={"auc": 0}, gate_results={"rows": True, "model": Gate()},
            gates_passed=1, family="sklearn", family_metrics={"pytorch": {"auc": 1}, "sklearn": {"auc": 0.8}},
            bundle_files={"model.json": "ab" * 32}, artifact_root="/home/artifacts/", model_card_uri="cards/1.md",
        ),
    )  # fmt: skip
    assert mv.artifact_sha256 == sha("a")  # stored lower case, whatever case it was given in
    assert mv.artifact_uri == "flights/candidates/a"  # relative to the artifact root it lies under
    assert mv.location("/moved/artifacts") == "/moved/artifacts/flights/candidates/a"
    assert (mv.training_version, mv.state_version) == (3, 2) and type(mv.training_version) is int
    assert mv.metrics == {"auc": 1.0} and type(mv.metrics["auc"]) is float and type(mv.baseline_metrics["auc"]) is float
    assert mv.gate_results == {"rows": {"passed": True}, "model": {"passed": True, "value": 0.5, "when": "2024-05-01"}}
    assert mv.gates_passed is True and mv.family == "sklearn" and mv.model_card_uri == "cards/1.md"
    assert mv.family_metrics == {"pytorch": {"auc": 1.0}, "sklearn": {"auc": 0.8}} and type(mv.family_metrics["pytorch"]["auc"]) is float
    assert mv.bundle_files == {"model.json": "ab" * 32}
    assert registry.get("flights", 1) == mv  # read back from the Delta table, JSON decoded, as registered
    assert registry.find("flights", sha("a").upper()) == mv and registry.find("flights", sha("b")) is None
    assert registry.find("taxis", sha("a")) is None
    row = registry.versions("flights").row(0, named=True)
    assert row["artifact_uri"] == "flights/candidates/a" and row["bundle_files"] == '{"model.json": "' + "ab" * 32 + '"}'


def test_a_registration_without_optional_fields_reads_them_as_empty(registry: Registry):
    mv = registry.register("flights", **fields("a", params=TrainParams(epochs=2)))
    assert (mv.state_version, mv.code_version, mv.run_id, mv.model_card_uri, mv.family) == (None, None, None, None, None)
    assert (mv.family_metrics, mv.bundle_files) == ({}, {})
    assert mv.artifact_uri == "/artifacts/flights/a"  # no artifact root: stored as given
    assert registry.get("flights", 1).params == TrainParams(epochs=2).model_dump(mode="json")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"artifact_sha256": "a" * 63}, "^artifact_sha256 must be 64 hex characters, got 'aaa"),
        ({"artifact_sha256": "g" * 64}, "64 hex characters"),
        ({"artifact_sha256": sha("a") + "0"}, "64 hex characters"),
        ({"training_version": -1}, r"^Delta versions are >= 0 \(training_version=-1, state_version=None\)$"),
        ({"state_version": -1}, r"^Delta versions are >= 0 \(training_version=3, state_version=-1\)$"),
        ({"reason": ""}, r"^reason is required \(schedule, drift, manual, sweep...\)$"),
        ({"gate_results": {"auc": {"passed": False}, "rows": {"passed": False}, "ok": True}},
         "^gates_passed=True but these gates failed: auc, rows$"),
        ({"gate_results": {"auc": {"passed": "yes"}}}, r"^gate 'auc': needs 'passed' true or false, got \{'passed': 'yes'\}$"),
    ],
)  # fmt: skip
def test_malformed_registrations_are_refused_saying_why(registry: Registry, overrides: dict, message: str):
    with pytest.raises(ValueError, match=message):
        registry.register("flights", **fields("a", **overrides))
    assert registry.versions().height == 0


@pytest.mark.parametrize("name", ["", "-flights", ".x", "bad name", "a/b", "é", 7])
def test_model_names_are_checked(registry: Registry, name):
    with pytest.raises(ValueError, match=r"^model name must be letters, digits, '_', '.', '-' \(got "):
        registry.register(name, **fields("a"))


def test_model_names_that_are_fine(registry: Registry):
    for i, name in enumerate(["a", "A1", "flights_2024.v-2", "9lives"]):
        assert registry.register(name, **fields(i)).name == name


def test_state_version_zero_is_a_version(registry: Registry):
    assert registry.register("flights", **fields("a", state_version=0, training_version=0)).state_version == 0


def test_latest_is_the_highest_number_and_versions_are_sorted(registry: Registry):
    for seed in ("a", "b", "c"):
        registry.register("taxis" if seed == "b" else "flights", **fields(seed))
    assert registry.latest("flights").artifact_sha256 == sha("c") and registry.latest("flights").version == 2
    assert registry.versions().select("name", "version").rows() == [("flights", 1), ("flights", 2), ("taxis", 1)]


def test_no_attempt_left_is_an_error_naming_the_model(lake: Lake):
    with pytest.raises(RegistryError, match="^could not register a version of 'flights': 0 attempts lost to concurrent registrations$"):
        Registry(lake, max_attempts=0).register("flights", **fields("a"))
    assert repr(Registry(lake)) == f"Registry({lake.uri('registry')!r})"


def test_unknown_version_messages(registry: Registry):
    registry.register("flights", **fields("a"))
    registry.register("flights", **fields("b"))
    with pytest.raises(UnknownVersionError) as raised:
        registry.get("flights", 5)
    assert str(raised.value) == "model 'flights' has no version 5 (registered: 1, 2)"
    with pytest.raises(UnknownVersionError) as raised:
        registry.get("taxis", 1)
    assert str(raised.value) == "no model named 'taxis' is registered"
    assert str(UnknownVersionError()) == ""


def test_a_table_written_before_newer_columns_existed_still_reads(registry: Registry, lake: Lake):
    old = [c for c in VERSIONS_SCHEMA if c not in ("family", "family_metrics", "bundle_files", "model_card_uri")]
    row = ModelVersion(version=1, created_at=at(1), **{**fields("a"), "name": "flights", "state_version": None, "code_version": None,
                                                     "run_id": None, "model_card_uri": None})  # fmt: skip
    frame = pl.DataFrame([row.to_row()], schema=VERSIONS_SCHEMA).select(old)
    write_deltalake(lake.uri(Tables.model_versions()), frame.to_arrow())
    got = registry.get("flights", 1)
    assert (got.family, got.family_metrics, got.bundle_files, got.model_card_uri) == (None, {}, {}, None)
    assert got.params == {"epochs": 4} and got.artifact_sha256 == sha("a")
    assert registry.register("flights", **fields("b")).version == 2  # and takes new versions


# ------------------------------------------------------------------ lineage
def test_lineage_reports_every_field_and_the_training_commit(registry: Registry, lake: Lake):
    features = Tables.features("flights")
    lake.append(features, pl.DataFrame({"x": [1]}), metadata={"state_version": 4, "rows": 1})
    mv = registry.register(
        "flights", **fields("a", training_table=lake.uri(features), training_version=0, state_version=4, code_version="abc",
                            run_id="r1", model_card_uri="/cards/1.md"),
    )  # fmt: skip
    info = registry.lineage("flights", 1)
    commit = info.pop("training_commit")
    assert info == {
        "model": "flights", "version": 1, "created_at": mv.created_at.isoformat(), "training_table": lake.uri(features),
        "training_version": 0, "state_version": 4, "code_version": "abc", "params": {"epochs": 4}, "reason": "manual",
        "run_id": "r1", "artifact_uri": "/artifacts/flights/a", "artifact_sha256": sha("a"), "model_card_uri": "/cards/1.md",
        "training_commit_error": None,
    }  # fmt: skip
    assert commit["version"] == 0 and commit["operation"] in ("WRITE", "CREATE TABLE")
    assert commit["metadata"] == {"aiflow.state_version": "4", "aiflow.rows": "1"}
    stamp = dt.datetime.fromisoformat(commit["timestamp"])
    assert stamp.tzinfo is not None and abs(stamp - mv.created_at) < dt.timedelta(minutes=5)
    registry.register("flights", **fields("b", training_table=lake.uri(features), training_version=7))
    assert registry.lineage("flights", 2)["training_commit"] is None  # a version the table never had


# ------------------------------------------------------------------ aliases
def test_an_alias_change_records_one_event_with_everything(registry: Registry):
    registry.register("flights", **fields("a"))
    registry.register("flights", **fields("b"))
    first = registry.promote("flights", 1, reason="launch", actor="alice", at=at(1))
    assert dataclasses.astuple(first)[:-1] == ("flights", "champion", 1, None, at(1), "alice", "launch", "promote")
    event = registry.promote("flights", 2, reason="better", actor="ci", alias="canary", at=at(2))
    assert (event.alias, event.version, event.previous_version, event.action) == ("canary", 2, None, "promote")
    eastern = dt.timezone(dt.timedelta(hours=-4))
    moved = registry.set_alias("flights", "champion", 2, reason="r", actor="me", at=dt.datetime(2024, 5, 3, 8, tzinfo=eastern))
    assert moved.set_at == at(3) and moved.set_at.tzinfo == UTC and moved.previous_version == 1 and moved.action == "set"
    assert abs(moved.recorded_at - dt.datetime.now(UTC)) < dt.timedelta(minutes=5)
    removed = registry.remove_alias("flights", "canary", reason="over", actor="analysis", at=at(4))
    assert (removed.version, removed.previous_version, removed.action) == (None, 2, "remove")
    assert registry.remove_alias("flights", "canary", reason="again", actor="me") is None  # already unset: nothing recorded
    frame = registry.history("flights")
    assert frame.schema == pl.Schema(EVENTS_SCHEMA) and frame.height == 4


def test_alias_refusals_say_why(registry: Registry):
    registry.register("flights", **fields("a"))
    registry.register("flights", **fields("b", gate_results={}, gates_passed=False))
    with pytest.raises(GatesFailedError) as raised:
        registry.promote("flights", 2, reason="r", actor="me", alias="canary")
    assert str(raised.value) == (
        "flights v2 failed its gates (gates_passed is false): refusing to make it 'canary'; "
        "pass force=True (aiflow models promote --force) to override"
    )
    for args, message in [
        (("champion", None), r"^remove an alias with version=None and action='remove' \(and only then\)$"),
        (("champion", 1, "remove"), r"^remove an alias with version=None and action='remove' \(and only then\)$"),
        (("9lives", 1), r"^alias must be a lowercase word \(champion, challenger, canary...\), got '9lives'$"),
        (("champion", 1, "flip"), "^action must be one of set, promote, rollback, remove, got 'flip'$"),
    ]:
        with pytest.raises(ValueError, match=message):
            registry.set_alias("flights", args[0], args[1], reason="r", actor="me", action=args[2] if len(args) > 2 else "set")
    with pytest.raises(ValueError, match="model name must be"):
        registry.remove_alias("bad name", "champion", reason="r", actor="me")
    with pytest.raises(ValueError, match=r"^times must be timezone-aware \(got naive 2024-05-01T00:00:00\)"):
        registry.rollback("flights", reason="r", actor="me", at=dt.datetime(2024, 5, 1))
    assert registry.history("flights").height == 0


def test_events_at_the_same_time_are_read_in_the_order_they_were_written(registry: Registry):
    for seed in ("a", "b", "c"):
        registry.register("flights", **fields(seed))
    for version in (3, 1, 2):  # an import of history: three changes stamped with one time
        registry.set_alias("flights", "champion", version, reason="import", actor="me", at=at(1))
    assert registry.alias("flights", "champion") == 2 and registry.alias("flights", "champion", at=at(1)) == 2
    assert registry.history("flights", "champion")["version"].to_list() == [2, 1, 3]
    assert registry.rollback("flights", reason="r", actor="me", at=at(2)) == 1


def test_rollback_reads_the_log_as_it_was_at_the_time_given(registry: Registry):
    for seed in ("a", "b", "c"):
        registry.register("flights", **fields(seed))
    registry.promote("flights", 1, reason="r", actor="me", at=at(1))
    registry.promote("flights", 2, reason="r", actor="me", at=at(2))
    registry.promote("flights", 3, reason="r", actor="me", at=at(5))  # later than the rollback below
    assert registry.rollback("flights", reason="r", actor="me", at=at(3)) == 1  # from v2, as the alias stood on day 3
    history = registry.history("flights", "champion")  # newest first by the time each change is recorded as made
    assert history.select("version", "previous_version", "action").rows() == [
        (3, 2, "promote"), (1, 2, "rollback"), (2, 1, "promote"), (1, None, "promote"),
    ]  # fmt: skip
    assert registry.alias("flights", "champion", at=at(4)) == 1 and registry.alias("flights", "champion") == 3


def test_current_aliases_of_every_model(registry: Registry):
    registry.register("flights", **fields("a"))
    registry.register("taxis", **fields("b"))
    registry.promote("taxis", 1, reason="r", actor="me")
    registry.promote("flights", 1, reason="r", actor="me")
    registry.promote("flights", 1, reason="r", actor="me", alias="canary")
    registry.remove_alias("flights", "canary", reason="r", actor="me")
    assert registry.current_aliases().rows() == [("flights", "champion", 1), ("taxis", "champion", 1)]
    assert registry.aliases("taxis") == {"champion": 1}


# ------------------------------------------------------------------ locations
@pytest.mark.parametrize(
    ("uri", "root", "stored"),
    [
        ("/home/a/flights/x", "/home/a", "flights/x"),
        ("/home/a/flights/x/", "/home/a/", "flights/x"),
        ("s3://bucket/art/flights/x", "s3://bucket/art", "flights/x"),
        ("/home/ab/flights/x", "/home/a", "/home/ab/flights/x"),  # a sibling folder is not under the root
        ("/home/a", "/home/a", "/home/a"),
        ("/elsewhere/flights/x", "/home/a", "/elsewhere/flights/x"),
        ("/home/a/flights/x", None, "/home/a/flights/x"),
        ("/home/a/flights/x", "", "/home/a/flights/x"),
        ("home/a/flights/x", "home/a", "home/a/flights/x"),  # a relative root anchors nothing
        ("C:/art/flights/x", "C:/art", "flights/x"),
    ],
)
def test_relative_location(uri, root, stored):
    assert relative_location(uri, root) == stored


@pytest.mark.parametrize(
    ("stored", "root", "uri"),
    [
        ("flights/x", "/moved/art", "/moved/art/flights/x"),
        ("flights/x", "/moved/art/", "/moved/art/flights/x"),
        ("/flights/x", "/moved/art", "/flights/x"),  # absolute: an older row, as stored
        ("s3://bucket/flights/x", "/moved/art", "s3://bucket/flights/x"),
        ("C:/art/flights/x", "/moved/art", "C:/art/flights/x"),
        ("C", "/moved/art", "/moved/art/C"),
    ],
)
def test_resolve_location(stored, root, uri):
    assert resolve_location(stored, root) == uri


def test_a_relative_location_without_a_root_is_refused_naming_it():
    for root in (None, ""):
        with pytest.raises(ValueError, match="^the bundle location 'flights/x' is relative to the artifact root, and no artifact root"):
            resolve_location("flights/x", root)
