"""Commit history carries each commit's true version. delta-rs 1.6 ``DeltaTable.history()`` reads the newest commits of the
log as it is when called but numbers them down from the version the handle was loaded at, so a handle pinned to an older
version, or overtaken by another writer, mislabels every commit (the race that let two concurrent ingestions both ingest a
file: a claim committed meanwhile was read under another version's number). ``Lake.history``/``Lake.commits`` and
``history_of`` must return each version with its own content."""

from __future__ import annotations

import polars as pl
from deltalake import DeltaTable

from aiflow.storage.lake import META, Lake, history_of


def _lake(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    for i in range(6):
        lake.append("t", pl.DataFrame({"x": [i]}), metadata={"n": i})  # version i carries aiflow.n = i
    return lake


def _labels_match_content(commits: list[dict]) -> list[int]:
    assert all(int(c[META + "n"]) == c["version"] for c in commits), [(c["version"], c[META + "n"]) for c in commits]
    return [c["version"] for c in commits]


def test_delta_rs_mislabels_the_history_of_a_handle_behind_the_log(tmp_path):
    """The library behaviour the engine works around (if this fails, delta-rs fixed it and history_of may be simplified)."""
    lake = _lake(tmp_path)
    pinned = DeltaTable(lake.uri("t"), version=3)
    newest = pinned.history(1)[0]
    assert newest["version"] == 3 and newest[META + "n"] == "5"


def test_commits_of_a_range_survive_commits_made_while_the_log_is_read(tmp_path, monkeypatch):
    lake = Lake(_lake(tmp_path).root)  # a new Lake: no handle kept from the writes, every one comes from Lake.table
    real = Lake.table

    def loaded_before_the_last_two(self, table, version=None):
        # the handle was loaded when the table was at version 3; versions 4 and 5 landed before history() ran
        return real(self, table, version=3 if version is None else version)

    monkeypatch.setattr(Lake, "table", loaded_before_the_last_two)
    assert _labels_match_content(lake.commits("t", after=1, until=3)) == [2, 3]
    assert _labels_match_content(lake.commits("t", after=None, until=3)) == [0, 1, 2, 3]
    assert _labels_match_content(lake.commits("t", after=3)) == [4, 5]
    assert lake.commits("t", after=3, until=3) == []
    assert _labels_match_content(lake.history("t")) == [5, 4, 3, 2, 1, 0]


def test_history_of_a_pinned_handle_is_labelled_by_content(tmp_path):
    lake = _lake(tmp_path)
    assert _labels_match_content(history_of(DeltaTable(lake.uri("t"), version=1), since=2)) == [5, 4, 3, 2]
