"""Partitioning benchmark (issue 9, item 9): files and bytes per table, and time, for each granularity.

For ``partitioning`` in day (the old layout, the baseline), month and none, in one run, each in a fresh
interpreter (peak RSS is that process's high-water mark):

* ``six_years``: 50,000 rows of the tiny test spec spread over 2015–2020 (72 monthly landing files,
  daily weather): ingest + refresh_silver + refresh_features;
* ``demo_1m``: the 1m demo landing zone of ``benchmarks.data`` (1,010,328 flights over three years):
  ingest + refresh_silver + refresh_features.

Reports, per table: Parquet files (the table's current add actions) and MB, and MB per million rows.

    .venv/bin/python -m benchmarks.partitioning [--only six_years|demo_1m] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

GRANULARITIES = ("day", "month", "none")
CACHE = Path("/tmp/aiflow-bench-cache")


def _six_year_landing(root: Path) -> None:
    from tests.aiflow.data.test_partitioning import FIRST, LAST, ROWS, trips, write_trips, write_weather

    write_trips(root / "trips", trips(ROWS, FIRST, LAST, seed=9))
    write_weather(root / "weather")


def _spec(case: str, granularity: str):
    from aiflow.spec import load_spec, parse_spec
    from tests.aiflow.tiny import TINY

    if case == "six_years":
        raw = copy.deepcopy(TINY)
        raw["split"] = {"valid_from": "2020-01-01", "test_from": "2020-07-01"}
        spec = parse_spec(raw, "six-years")
    else:
        from aiflow.spec import demo_spec_path

        spec = load_spec(demo_spec_path())
    sides = [t.model_copy(update={"partitioning": granularity}) for t in spec.side_tables]
    return spec.model_copy(update={"partitioning": granularity, "side_tables": sides})


def one(case: str, granularity: str, landing: Path, lake_root: Path) -> dict:
    """Ingest and refresh one dataset with one granularity; this process's figures."""
    from aiflow.data.ingest import ingest
    from aiflow.data.refine import refresh_features, refresh_silver
    from aiflow.storage.lake import Lake, Tables
    from aiflow.storage.landing import LocalLandingZone

    spec = _spec(case, granularity)
    lake = Lake(lake_root)
    t = time.perf_counter()
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    ingest_s = time.perf_counter() - t
    t = time.perf_counter()
    for table in spec.side_tables:
        refresh_silver(lake, table)
    refresh_silver(lake, spec)
    features = refresh_features(lake, spec)
    refresh_s = time.perf_counter() - t
    tables = {}
    names = [Tables.bronze(spec.name), Tables.silver(spec.name), Tables.features(spec.name)]
    names += [Tables.bronze(t.name) for t in spec.side_tables] + [Tables.silver(t.name) for t in spec.side_tables]
    for name in names:
        actions = pl.DataFrame(lake.table(name).get_add_actions(flatten=True))
        rows = int(actions["num_records"].sum())
        mb = actions["size_bytes"].sum() / 1e6
        tables[name] = {"files": actions.height, "rows": rows, "mb": round(mb, 2), "mb_per_million_rows": round(mb / rows * 1e6, 1)}
    return {
        "case": case,
        "partitioning": granularity,
        "ingest_seconds": round(ingest_s, 2),
        "refresh_seconds": round(refresh_s, 2),
        "feature_rows": features.rows_out,
        "tables": tables,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["six_years", "demo_1m"])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", nargs=4, metavar=("CASE", "GRANULARITY", "LANDING", "LAKE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        case, granularity, landing, lake = args.one
        print(json.dumps(one(case, granularity, Path(landing), Path(lake))))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="aiflow-partitioning-") as tmp:
        work = Path(tmp)
        landings = {}
        if args.only in (None, "six_years"):
            landings["six_years"] = work / "six-years"
            _six_year_landing(landings["six_years"])
        if args.only in (None, "demo_1m"):
            from benchmarks.data import ensure_scale

            landings["demo_1m"] = Path(ensure_scale(CACHE, "1m")["zone"])
        for case, landing in landings.items():
            for granularity in GRANULARITIES:
                lake = work / f"lake-{case}-{granularity}"
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.partitioning", "--one", case, granularity, str(landing), str(lake)],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                result = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(result)
                shutil.rmtree(lake, ignore_errors=True)
                print(_line(result), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"when": dt.datetime.now(dt.UTC).isoformat(), "results": results}, indent=1))
    return 0


def _line(r: dict) -> str:
    per = "; ".join(f"{name} {t['files']} files {t['mb']} MB ({t['mb_per_million_rows']} MB/M rows)" for name, t in r["tables"].items())
    return (
        f"{r['case']:9} {r['partitioning']:5} ingest {r['ingest_seconds']:6.1f} s  refresh {r['refresh_seconds']:6.1f} s  "
        f"peak {r['peak_rss_gb']:.2f} GB  | {per}"
    )


if __name__ == "__main__":
    sys.exit(main())
