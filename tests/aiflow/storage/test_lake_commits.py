"""``Lake.commits`` returns every commit of a version range even when other writers commit while it reads the log
(the race that let two concurrent ingestions both ingest a file: a claim committed meanwhile was skipped)."""

from __future__ import annotations

import polars as pl
from deltalake import DeltaTable

from aiflow.storage.lake import Lake


def test_commits_of_a_range_survive_commits_made_while_the_log_is_read(tmp_path, monkeypatch):
    lake = Lake(tmp_path / "lake")
    for i in range(6):
        lake.append("t", pl.DataFrame({"x": [i]}), metadata={"n": i})  # versions 0..5
    loaded = {}
    real = Lake.table

    def loaded_before_the_last_two(self, table, version=None):
        # the handle was loaded when the table was at version 3; versions 4 and 5 landed before history() ran
        handle = real(self, table, version=3 if version is None else version)
        loaded["version"] = handle.version()
        return handle

    monkeypatch.setattr(Lake, "table", loaded_before_the_last_two)
    got = [c["version"] for c in lake.commits("t", after=1, until=3)]
    assert loaded["version"] == 3 and DeltaTable(lake.uri("t")).version() == 5
    assert got == [2, 3]
    assert [c["version"] for c in lake.commits("t", after=None, until=3)] == [0, 1, 2, 3]
    assert lake.commits("t", after=3, until=3) == []
