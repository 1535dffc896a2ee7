"""Where a daily step's time goes: day 1 on an empty lake vs day N+1 after N days of history, per engine call site.

``python -m benchmarks.day31_profile [--history-days 30] [--repeats 5] [--nightly] [--cache DIR] [--work DIR]``

Builds the lakes with the incremental benchmark's own helpers (``benchmarks.worker``), then times one step
(ingest + refresh_silver + refresh_features) on fresh copies, with every Delta table open, Delta write, log
read and Polars collect attributed to the engine line that caused it (a perf_counter pair per call). Polars
opens the tables of a lazy scan in its own threads: those show as ``polars thread``. Figures are medians of
``--repeats`` interleaved steps; use ratios, the machine is shared. ``--nightly`` builds the history as the shipped
schedule does: the nightly maintenance (``aiflow.data.maintenance.maintain``, its defaults) after every day.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
import traceback
from collections import defaultdict
from pathlib import Path

import deltalake
import polars as pl

from aiflow.data.ingest import ingest
from aiflow.data.maintenance import maintain
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.storage import lake as lake_module
from aiflow.storage.lake import Lake
from aiflow.storage.landing import LocalLandingZone
from benchmarks.data import ensure_days
from benchmarks.worker import Timers, bench_spec, clone_lake


def _site() -> str:
    frames = [f for f in traceback.extract_stack()[:-2] if "/aiflow/" in f.filename]
    if not frames:
        return "polars thread"
    inner, outer = frames[-1], frames[-2] if len(frames) > 1 else frames[-1]
    return f"{inner.filename.split('/aiflow/')[1]}:{inner.lineno} {inner.name} <- {outer.name}:{outer.lineno}"


def _site_key(label: str):
    """Timers key: (label, the engine line that caused the call [the table written])."""

    def key(args) -> tuple[str, str]:
        target = args[0] if args else None
        uri = getattr(target, "table_uri", target) if label == "write" else None
        table = " [" + "/".join(str(uri).rstrip("/").split("/")[-2:]) + "]" if uri else ""
        return label, _site() + table

    return key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history-days", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--nightly", action="store_true", help="run the nightly maintenance after every day of history")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/aiflow-bench-cache"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/aiflow-day31-profile"))
    opts = ap.parse_args()
    spec, work = bench_spec(), opts.work
    shutil.rmtree(work, ignore_errors=True)
    zone = ensure_days(opts.cache, opts.history_days + 1)
    flights = LocalLandingZone(zone / "flights")
    days = [f.name for f in flights.list()]
    template, history = work / "template", work / "history"
    for side in spec.side_tables:
        ingest(Lake(template), LocalLandingZone(zone / side.name), side)
        refresh_silver(Lake(template), side)
    clone_lake(template, history)
    for day in days[: opts.history_days]:
        lake = Lake(history)
        ingest(lake, flights, spec, files=[day]), refresh_silver(lake, spec), refresh_features(lake, spec)
        if opts.nightly:
            maintain(lake, spec)

    def step(src: Path, day: str) -> float:
        clone_lake(src, work / "copy")
        lake = Lake(work / "copy")
        start = time.perf_counter()
        ingest(lake, flights, spec, files=[day]), refresh_silver(lake, spec), refresh_features(lake, spec)
        return time.perf_counter() - start

    step(template, days[0])  # imports and first calls
    timers = Timers()
    for owner, attr, label in ((deltalake.DeltaTable, "__init__", "open"), (deltalake.DeltaTable, "history", "log read"),
                               (deltalake.DeltaTable, "update_incremental", "log update"), (deltalake.DeltaTable, "is_deltatable", "exists"),
                               (deltalake.DeltaTable, "create_write_transaction", "commit"),
                               (lake_module, "write_deltalake", "write"), (pl.LazyFrame, "collect", "collect")):  # fmt: skip
        timers.wrap(owner, attr, key=_site_key(label), static=attr == "is_deltatable")
    totals: dict[str, list[float]] = {"day1 empty": [], f"day{opts.history_days + 1} history": []}
    sites: dict[str, dict] = {name: defaultdict(float) for name in totals}
    for _ in range(opts.repeats):
        for name, (src, day) in zip(totals, ((template, days[0]), (history, days[opts.history_days])), strict=True):
            timers.seconds.clear()
            totals[name].append(step(src, day))
            for key, seconds in timers.seconds.items():
                sites[name][key] += seconds / opts.repeats
    for name, values in totals.items():
        print(f"\n{name}: step {statistics.median(values):.3f} s (median of {opts.repeats})")
        for (label, site), seconds in sorted(sites[name].items(), key=lambda kv: -kv[1])[:25]:
            print(f"  {1000 * seconds:7.1f} ms  {label:10s} {site}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
