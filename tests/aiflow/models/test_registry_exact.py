"""Scope: the model registry where its first mutation run found no test looking (aiflow.models.registry, issue 22): one
model among others with more versions and aliases (latest, lineage, history, aliases, rollback read only its own
rows), the commit metadata of a registration and of an alias change, the alias log's column types from its first event,
a rollback exactly at the time of the last event and back to a forced version, the exact refusal of an unforced alias
change, a clash found at the committed version only, and the location and time helpers' edge cases."""

from __future__ import annotations

import datetime as dt
import time

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from aiflow.models.registry import (
    EVENTS_SCHEMA,
    VERSIONS_SCHEMA,
    GatesFailedError,
    ModelVersion,
    Registry,
    RegistryError,
    relative_location,
    resolve_location,
)
from aiflow.storage.lake import Lake, Tables
from tests.aiflow.models.test_registry_records import fields, sha

UTC = dt.UTC

FAILED = {"gate_results": {"auc": {"passed": False}, "rows": False, "drift": True}, "gates_passed": False}


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, tzinfo=UTC)


@pytest.fixture
def registry(lake: Lake) -> Registry:
    return Registry(lake)


@pytest.fixture
def two_models(registry: Registry) -> Registry:
    """flights v1-v3 registered first, then taxis v1-v4 (more versions, later aliases)."""
    for i in range(3):
        registry.register("flights", **fields(f"f{i}"))
    for i in range(4):
        registry.register("taxis", **fields(f"t{i}"))
    registry.promote("flights", 1, reason="first", actor="me", at=at(1))
    registry.promote("flights", 2, reason="second", actor="me", at=at(2))
    registry.promote("taxis", 4, reason="t4", actor="me", at=at(3))
    registry.promote("taxis", 3, reason="t3", actor="me", alias="canary", at=at(4))
    return registry


def test_one_model_s_reads_never_see_another_model_s_rows(two_models: Registry):
    r = two_models
    assert (r.latest("flights").name, r.latest("flights").version, r.latest("flights").artifact_sha256) == ("flights", 3, sha("f2"))
    assert r.latest("taxis").version == 4
    lineage = r.lineage("taxis", 1)
    assert (lineage["model"], lineage["version"], lineage["artifact_sha256"]) == ("taxis", 1, sha("t0"))
    assert (r.lineage("flights", 1)["model"], r.lineage("flights", 1)["artifact_sha256"]) == ("flights", sha("f0"))
    assert r.history("flights")["name"].unique().to_list() == ["flights"] and r.history("flights").height == 2
    assert r.aliases("flights") == {"champion": 2} and r.aliases("taxis") == {"canary": 3, "champion": 4}
    assert r.current_aliases("flights").rows() == [("flights", "champion", 2)]
    # listed by alias within a model, whatever order they were set in
    assert r.current_aliases("taxis").rows() == [("taxis", "canary", 3), ("taxis", "champion", 4)]


def test_rollback_moves_only_its_own_alias_of_its_own_model(two_models: Registry):
    r = two_models
    # taxis' and flights' canary events come after flights' champion events: none of them is flights' champion history
    r.promote("flights", 3, reason="c", actor="me", alias="canary", at=at(5))
    assert r.rollback("flights", reason="back", actor="me", at=at(6)) == 1
    assert r.aliases("flights") == {"champion": 1, "canary": 3} and r.aliases("taxis") == {"canary": 3, "champion": 4}


def test_a_rollback_at_exactly_the_time_of_the_last_change_counts_that_change(two_models: Registry):
    assert two_models.rollback("flights", reason="back", actor="me", at=at(2)) == 1
    assert two_models.alias("flights", "champion", at=at(2)) == 1


def test_a_rollback_returns_to_a_version_that_served_though_its_gates_failed(registry: Registry):
    registry.register("flights", **fields("a", **FAILED))
    registry.register("flights", **fields("b"))
    registry.promote("flights", 1, reason="forced", actor="me", force=True, at=at(1))
    registry.promote("flights", 2, reason="fixed", actor="me", at=at(2))
    assert registry.rollback("flights", reason="back", actor="me", at=at(3)) == 1
    assert registry.history("flights", "champion")["action"].to_list() == ["rollback", "promote", "promote"]


def test_any_alias_change_of_a_failed_version_is_refused_unless_forced_naming_every_failed_gate(registry: Registry):
    registry.register("flights", **fields("a", **FAILED))
    with pytest.raises(GatesFailedError) as raised:
        registry.set_alias("flights", "canary", 1, reason="try", actor="me")
    assert str(raised.value) == (
        "flights v1 failed its gates (auc, rows): refusing to make it 'canary'; pass force=True (aiflow models promote --force) to override"
    )
    assert registry.set_alias("flights", "canary", 1, reason="try", actor="me", force=True).version == 1
    with pytest.raises(ValueError, match=r"^every alias change needs a reason and an actor \(who or what made it\)$"):
        registry.set_alias("flights", "canary", 1, reason="try", actor="")


def test_registrations_and_alias_changes_sign_their_commits(registry: Registry, lake: Lake):
    registry.register("flights", **fields("a"))
    registry.register("flights", **fields("b"))
    newest = lake.history(Tables.model_versions())[0]
    assert (newest["aiflow.model"], newest["aiflow.model_version"]) == ("flights", "2")
    registry.promote("flights", 2, reason="r", actor="me")
    registry.remove_alias("flights", "champion", reason="r", actor="me")
    events = lake.history(Tables.alias_events())
    assert [(c["aiflow.model"], c["aiflow.alias"], c["aiflow.action"]) for c in events[:2]] == [
        ("flights", "champion", "remove"),
        ("flights", "champion", "promote"),
    ]


def test_the_registry_tables_keep_their_column_types_from_the_first_row(registry: Registry, lake: Lake):
    """The first alias event has no previous version and the first registration no state or code version: the
    tables still hold those columns with their types, not as untyped nulls."""
    registry.register("flights", **fields("a"))
    registry.promote("flights", 1, reason="r", actor="me")
    assert dict(lake.scan(Tables.alias_events()).collect_schema()) == EVENTS_SCHEMA
    assert dict(lake.scan(Tables.model_versions()).collect_schema()) == VERSIONS_SCHEMA


def test_versions_of_a_table_written_before_newer_columns_list_every_column(registry: Registry, lake: Lake):
    old = [c for c in VERSIONS_SCHEMA if c not in ("family", "family_metrics", "bundle_files", "model_card_uri")]
    row = ModelVersion(version=1, created_at=at(1), **{**fields("a"), "name": "flights", "state_version": None, "code_version": None,
                                                     "run_id": None, "model_card_uri": None})  # fmt: skip
    write_deltalake(lake.uri(Tables.model_versions()), pl.DataFrame([row.to_row()], schema=VERSIONS_SCHEMA).select(old).to_arrow())
    versions = registry.versions("flights")
    assert versions.columns == [*old, "model_card_uri", "family", "family_metrics", "bundle_files"]
    assert versions.select("model_card_uri", "family", "family_metrics", "bundle_files").rows() == [(None, None, None, None)]
    assert dict(versions.schema) == {c: VERSIONS_SCHEMA[c] for c in versions.columns}  # typed, not untyped nulls


def test_a_clash_is_judged_at_the_committed_version_and_named_with_the_table(registry: Registry, lake: Lake):
    mv = registry.register("flights", **fields("a"))
    committed = lake.version(Tables.model_versions())
    clash = ModelVersion.from_row({**mv.to_row(), "artifact_sha256": sha("z")})  # the same number, another bundle
    write_deltalake(lake.uri(Tables.model_versions()), pl.DataFrame([clash.to_row()], schema=VERSIONS_SCHEMA).to_arrow(), mode="append")
    registry._check_unique(mv, committed)  # unique where it was committed
    with pytest.raises(RegistryError) as raised:
        registry._check_unique(mv, committed + 1)
    assert str(raised.value) == (
        f"registration clash on flights v1 at Delta version {committed + 1} of {lake.uri(Tables.model_versions())}: "
        "2 rows share its number or artifact hash"
    )


def test_lineage_names_the_error_of_an_unreachable_training_table(registry: Registry, tmp_path):
    gone = str(tmp_path / "gone")
    registry.register("flights", **fields("a", training_table=gone))
    with pytest.raises((DeltaError, OSError)) as raised:
        DeltaTable(gone)
    assert registry.lineage("flights", 1)["training_commit_error"] == f"{type(raised.value).__name__}: {raised.value}"


def test_location_edge_cases():
    assert resolve_location("C:", None) == "C:"  # a drive alone is absolute
    assert resolve_location("flights/x", "/art/BOX/") == "/art/BOX/flights/x"  # only slashes are trimmed from the root
    assert resolve_location("flights/x", "/art/XX") == "/art/XX/flights/x"


def test_a_relative_location_is_joined_to_the_root_as_stored():
    assert resolve_location("Xray/a", "/art") == "/art/Xray/a"  # only slashes are trimmed
    assert resolve_location(" spaced/a", "/art") == "/art/ spaced/a"
    assert resolve_location("flights/x/", "/art") == "/art/flights/x/"


def test_a_time_given_in_another_zone_is_recorded_in_utc_whatever_the_machine_s_zone(registry: Registry, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        registry.register("flights", **fields("a"))
        given = dt.datetime(2024, 5, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
        event = registry.promote("flights", 1, reason="r", actor="me", at=given)
        assert event.set_at == given and event.set_at.utcoffset() == dt.timedelta(0) and event.set_at.hour == 13
    finally:
        monkeypatch.undo()
        time.tzset()


def test_json_columns_are_stored_with_sorted_keys(registry: Registry, lake: Lake):
    """The same params, metrics or gates given in another order are stored as the same text."""
    registry.register("flights", **fields("a", params={"b": 1, "a": {"d": 2, "c": 3}}, metrics={"z": 1, "auc": 0.5}))
    row = lake.scan(Tables.model_versions()).collect().row(0, named=True)
    assert row["params"] == '{"a": {"c": 3, "d": 2}, "b": 1}' and row["metrics"] == '{"auc": 0.5, "z": 1.0}'


def test_params_given_as_a_pydantic_model_are_recorded_as_its_json_dump(registry: Registry):
    import enum

    from pydantic import BaseModel

    class Kind(enum.Enum):
        NET = "net"

    class Inner(BaseModel):
        width: int = 3

    class Params(BaseModel):
        kind: Kind = Kind.NET
        inner: Inner = Inner()
        day: dt.date = dt.date(2024, 5, 1)

    mv = registry.register("flights", **fields("a", params=Params()))
    assert mv.params == {"kind": "net", "inner": {"width": 3}, "day": "2024-05-01"} == registry.get("flights", 1).params


def test_relative_location_trims_only_slashes():
    assert relative_location("/art/BOX/flights/x", "/art/BOX") == "flights/x"
    assert relative_location("/art/flights/BOX/", "/art/") == "flights/BOX"


def test_a_failed_creation_of_the_versions_table_is_raised_unless_another_writer_created_it(registry: Registry, lake: Lake, monkeypatch):
    real_create = DeltaTable.create

    def failing(*args, **kwargs):
        raise DeltaError("boom: storage refused")

    monkeypatch.setattr(DeltaTable, "create", staticmethod(failing))
    with pytest.raises(DeltaError, match="^boom: storage refused$"):
        registry.register("flights", **fields("a"))

    def beaten(*args, **kwargs):  # a concurrent creator commits first, this one's commit then fails
        real_create(*args, **kwargs)
        raise DeltaError("lost the race")

    monkeypatch.setattr(DeltaTable, "create", staticmethod(beaten))
    assert registry.register("flights", **fields("a")).version == 1
