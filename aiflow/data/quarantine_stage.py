"""The quarantine rows of a batch, staged in the lake before the bronze commit that claims them.

The bronze commit is the batch's commit point; its quarantine rows are written to ``quarantine/<table>`` after it. A
process stopped in between used to leave the next run rebuilding those rows from the landing files — and a file moved,
deleted or rewritten in the meantime lost its rows (in neither table, the ledger counting them). Now the rows, typed and
with their reasons, are first written to one Parquet file under the lake (``_staging/quarantine/<table>/<batch>/``),
then bronze commits: whatever happens to the landing zone after that, the rows are in the lake. The file is removed once
the batch's ledger entries are written (by the next ingestion, if the process stopped in between); a batch that never
committed leaves its file unread (no reader looks there).
"""

from __future__ import annotations

import io

import polars as pl

from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake

STAGING = "_staging/quarantine"
ROWS = "rows.parquet"


def _store(lake: Lake) -> ArtifactStore:
    return ArtifactStore(f"{lake.root}/{STAGING}", lake.storage_options or None)


def stage(lake: Lake, table: str, batch: str, frame: pl.DataFrame) -> str:
    """Write a batch's quarantine rows (atomically) before its bronze commit; return where they are."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return _store(lake).put_bytes(f"{table}/{batch}/{ROWS}", buffer.getvalue())


def staged(lake: Lake, table: str, batch: str) -> pl.DataFrame | None:
    """The quarantine rows staged for a batch, or None if none are (never staged, or already removed)."""
    store = _store(lake)
    path = f"{table}/{batch}/{ROWS}"
    if not store.exists(path):
        return None
    return pl.read_parquet(io.BytesIO(store.get_bytes(path)))


def unstage(lake: Lake, table: str, batch: str) -> None:
    """Remove a batch's staged rows once its quarantine rows and ledger entries are written (gone already: nothing to do)."""
    try:
        _store(lake).delete_dir(f"{table}/{batch}")
    except FileNotFoundError:  # another run removed them meanwhile
        pass


def staged_batches(lake: Lake, table: str) -> list[str]:
    """The batches of ``table`` that have rows staged (committed or not)."""
    return sorted({path.split("/")[1] for path in _store(lake).list(table)})
