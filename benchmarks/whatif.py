"""What-if variants of engine functions, to measure proposed changes without editing ``aiflow/``.

A worker given ``"whatif": [names]`` monkeypatches the engine in its own process only. The variants
measured on 2026-11-23 that proved out (chunk-level parsing, window de-duplication, one collect, one
sort, a checkpoint every 10 commits) are now the engine itself; what remains is the one that changes
the design rather than the code:

* ``unpartitioned_bronze``: bronze appends without ``partition_by=[event_date]``: one Parquet file per
  chunk instead of one per event date (~1,100 files per 1M-row chunk of this data). Superseded: the spec's
  ``partitioning`` (default month; ``none`` is this variant) is now the engine's, and bronze is written by
  ``Lake.add_claiming``, not ``Lake.append``, so this patch no longer changes the engine's bronze
  (``python -m benchmarks.partitioning`` measures the granularities instead).

``python -m benchmarks.whatif`` checks that each variant ingests the same rows as the engine.
"""

from __future__ import annotations

from aiflow.storage.lake import Lake

KNOWN = {"unpartitioned_bronze"}


def _unpartitioned_append(original):
    def append(self, table, df, *, partition_by=None, metadata=None, merge_schema=True):
        if table.startswith("bronze/"):
            partition_by = None
        return original(self, table, df, partition_by=partition_by, metadata=metadata, merge_schema=merge_schema)

    return append


def apply(names: list[str] | None) -> list[str]:
    """Monkeypatch the named variants into the engine (this process only); returns the names applied."""
    names = list(names or [])
    unknown = set(names) - KNOWN
    if unknown:
        raise ValueError(f"unknown what-if variant(s) {sorted(unknown)}; known: {sorted(KNOWN)}")
    if "unpartitioned_bronze" in names:
        Lake.append = _unpartitioned_append(Lake.append)
    return names


def _check_ingest() -> None:
    """unpartitioned_bronze ingests the same bronze rows, quarantine rows and ledger outcomes as the engine."""
    import tempfile
    from pathlib import Path

    from aiflow.data.demo import write_landing
    from aiflow.data.ingest import ingest
    from aiflow.spec import demo_spec_path, load_spec
    from aiflow.storage.landing import LocalLandingZone

    spec = load_spec(demo_spec_path())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_landing(root / "land", days=6)
        zone = LocalLandingZone(root / "land" / "flights")
        frames = []
        for name in ("engine", "unpartitioned_bronze"):
            if name != "engine":
                apply([name])
            lake = Lake(root / name)
            ingest(lake, zone, spec, batch_id="b")
            key = ["_source_file", "_source_row"]
            bronze = lake.scan("bronze/flights").collect().drop("_batch_id", "_ingested_at").sort(key)
            frames.append(bronze.select(sorted(bronze.columns)))
        assert frames[0].equals(frames[1]), "bronze differs"
        print(f"unpartitioned_bronze == engine ingest: {frames[0].height} bronze rows")


if __name__ == "__main__":
    _check_ingest()
