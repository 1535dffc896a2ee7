"""One measurement per process: ``python -m benchmarks.worker TASK 'JSON-ARGS'``.

Each task runs in a fresh interpreter so that peak memory (``ru_maxrss`` of this process) and caches
do not bleed from one measurement into the next. The result is printed as the last stdout line,
prefixed with ``RESULT``; setup work (loading inputs, cleaning folders, writing sanity samples) is
never inside a timed section.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import polars as pl
import psutil

from aiflow.spec import demo_spec_path, load_spec

#: Environment variable the runner sets (``--partitioning``): the granularity every worker's demo spec uses.
PARTITIONING_ENV = "AIFLOW_BENCH_PARTITIONING"


def bench_spec():
    """The demo spec, with ``partitioning`` (main and side tables) from ``AIFLOW_BENCH_PARTITIONING`` when set."""
    spec = load_spec(demo_spec_path())
    granularity = os.environ.get(PARTITIONING_ENV)
    if not granularity:
        return spec
    sides = [t.model_copy(update={"partitioning": granularity}) for t in spec.side_tables]
    return spec.model_copy(update={"partitioning": granularity, "side_tables": sides})


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    """Peak resident set size of this process since start (or since the last :func:`_reset_peak`)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def clone_lake(src: Path, dst: Path) -> None:
    """Copy a lake cheaply: Parquet data files are hard links (delta-rs never rewrites them), the log is copied."""
    shutil.rmtree(dst, ignore_errors=True)

    def copy(s, d):
        if s.endswith(".parquet") and "_delta_log" not in s:
            try:
                os.link(s, d)
                return d
            except OSError:
                pass
        return shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=copy)


# ----------------------------------------------------------------------------------- ingestion
class Timers:
    """Accumulate wall time of wrapped engine functions (a perf_counter pair per call: negligible).

    ``key(args)`` names the entry of a call (default: ``label``); ``static`` wraps a staticmethod.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, owner, attr: str, label: str | None = None, key=None, static: bool = False):
        original = getattr(owner, attr)
        label = label or attr

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                name = key(args) if key else label
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1

        setattr(owner, attr, staticmethod(wrapper) if static else wrapper)


def task_ingest_engine(args: dict) -> dict:
    """aiflow.data.ingest.ingest of every file of one landing zone into a fresh lake."""
    import aiflow.data.ingest as ingest_mod
    from aiflow.storage.lake import Lake
    from aiflow.storage.landing import LocalLandingZone

    spec = bench_spec()
    table = spec if args["table"] == spec.name else spec.side(args["table"])
    lake_root = Path(args["lake"])
    if args.get("fresh", True):
        for sub in ("bronze", "ledger", "quarantine"):
            shutil.rmtree(lake_root / sub / table.name, ignore_errors=True)
    lake = Lake(lake_root)
    zone = LocalLandingZone(args["zone"])

    timers = Timers()
    if args.get("breakdown", True):
        timers.wrap(ingest_mod, "read_file")
        timers.wrap(ingest_mod, "split_typed")
        timers.wrap(ingest_mod, "sha256")
        timers.wrap(ingest_mod, "_repair", label="repair")
        timers.wrap(ingest_mod, "seen_hashes")
        timers.wrap(LocalLandingZone, "read_bytes")
        timers.wrap(LocalLandingZone, "list")
        timers.wrap(Lake, "append", key=lambda a: "append:" + a[1].split("/")[0])
        timers.wrap(Lake, "add_claiming", key=lambda a: "add_claiming:" + a[1].split("/")[0])
        timers.wrap(Lake, "replace_where", key=lambda a: "replace_where:" + a[1].split("/")[0])
        timers.wrap(ingest_mod._Chunk, "commit")

    start = time.perf_counter()
    report = ingest_mod.ingest(lake, zone, table, chunk_rows=args.get("chunk_rows", 1_000_000))
    seconds = time.perf_counter() - start
    rows = report.rows_ingested + report.rows_quarantined
    return {
        "seconds": seconds,
        "rows": rows,
        "rows_ingested": report.rows_ingested,
        "rows_quarantined": report.rows_quarantined,
        "files": len(report.files),
        "files_ingested": report.count(ingest_mod.INGESTED),
        "rows_per_second": rows / seconds,
        "bronze_version": report.bronze_version,
        "bronze_data_files": len(lake.table(f"bronze/{table.name}").file_uris()),
        "breakdown_seconds": dict(timers.seconds),
        "breakdown_calls": dict(timers.calls),
        "peak_rss_bytes": _peak_rss(),
    }


def task_ingest_floor(args: dict) -> dict:
    """The floor: polars.read_csv of every file (spec types) + pyarrow.parquet.write_table per ~1M-row chunk."""
    import pyarrow.parquet as pq

    from aiflow.storage.landing import LocalLandingZone

    spec = bench_spec()
    table = spec if args["table"] == spec.name else spec.side(args["table"])
    out = Path(args["out"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    chunk_rows = args.get("chunk_rows", 1_000_000)
    schema, nulls = table.polars_schema(), table.landing.null_values

    start = time.perf_counter()
    files = LocalLandingZone(args["zone"]).list()
    buffer: list[pl.DataFrame] = []
    buffered = rows = parts = 0
    read_s = write_s = 0.0
    for file in files:
        t = time.perf_counter()
        frame = pl.read_csv(file.uri, schema_overrides=schema, null_values=nulls, infer_schema=False)
        read_s += time.perf_counter() - t
        buffer.append(frame)
        buffered += frame.height
        if buffered >= chunk_rows:
            t = time.perf_counter()
            pq.write_table(pl.concat(buffer).to_arrow(), out / f"part-{parts:05d}.parquet")
            write_s += time.perf_counter() - t
            rows, parts, buffer, buffered = rows + buffered, parts + 1, [], 0
    if buffer:
        t = time.perf_counter()
        pq.write_table(pl.concat(buffer).to_arrow(), out / f"part-{parts:05d}.parquet")
        write_s += time.perf_counter() - t
        rows, parts = rows + buffered, parts + 1
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": rows,
        "files": len(files),
        "parquet_files": parts,
        "rows_per_second": rows / seconds,
        "breakdown_seconds": {"read_csv": read_s, "concat+write_table": write_s},
        "peak_rss_bytes": _peak_rss(),
    }


# ------------------------------------------------------------------------------------ pipeline
def _load_bronze(lake_root: str, spec) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    from aiflow.storage.lake import Lake, Tables

    lake = Lake(lake_root)
    flights = lake.scan(Tables.bronze(spec.name)).collect()
    sides = {j.table: lake.scan(Tables.bronze(j.table)).collect() for j in spec.joins}
    return flights, sides


def _pipeline_result(out: dict, seconds: float, rows_in: int, loaded: dict, peaks: dict) -> dict:
    result = {k: v for k, v in out.items() if k != "features"}
    result.update(seconds=seconds, rows_in=rows_in, rows_out=len(out["features"]), **peaks, **loaded)
    return result


class _PhasePeaks:
    """Peak RSS of each pipeline phase (the peak is reset after each phase); overall = max of them."""

    def __init__(self):
        self.peaks: dict[str, int] = {}

    def __call__(self, phase: str) -> None:
        self.peaks[phase] = _peak_rss()
        _reset_peak()

    def result(self) -> dict:
        peak = max([*self.peaks.values(), _peak_rss()])
        return {"peak_rss_bytes": peak, "phase_peak_rss_bytes": self.peaks}


def _after_load() -> dict:
    """RSS once the inputs are in memory; resets the peak so it covers the pipeline only."""
    loaded = {"load_peak_rss_bytes": _peak_rss(), "rss_after_load_bytes": _rss()}
    loaded["peak_is_pipeline_only"] = _reset_peak()
    return loaded


def task_pipeline_polars(args: dict) -> dict:
    from benchmarks import polars_pipeline

    spec = bench_spec()
    flights, sides = _load_bronze(args["lake"], spec)
    loaded = _after_load()
    start = time.perf_counter()
    peaks = _PhasePeaks()
    out = polars_pipeline.run(flights, sides, spec, probe=peaks)  # collects as refresh_silver does
    seconds = time.perf_counter() - start
    result = _pipeline_result(out, seconds, flights.height, loaded, peaks.result())
    if args.get("sample"):
        out["features"].write_parquet(args["sample"])
    return result


def task_pipeline_pandas(args: dict) -> dict:
    from benchmarks import pandas_pipeline

    spec = bench_spec()
    flights_pl, sides_pl = _load_bronze(args["lake"], spec)
    flights = flights_pl.to_pandas()
    sides = {k: v.to_pandas() for k, v in sides_pl.items()}
    rows_in = flights_pl.height
    del flights_pl, sides_pl
    loaded = _after_load()
    start = time.perf_counter()
    peaks = _PhasePeaks()
    out = pandas_pipeline.run(flights, sides, spec, probe=peaks)
    seconds = time.perf_counter() - start
    result = _pipeline_result(out, seconds, rows_in, loaded, peaks.result())
    if args.get("sample"):
        out["features"].to_parquet(args["sample"], index=False)
    return result


def task_refresh(args: dict) -> dict:
    """refresh_silver (side tables, then the main table) + refresh_features on a lake holding only bronze."""
    from aiflow.data.refine import refresh_features, refresh_silver
    from aiflow.storage.lake import Lake

    spec = bench_spec()
    clone_lake(Path(args["source_lake"]), Path(args["lake"]))
    for sub in ("silver", "features", "state"):
        shutil.rmtree(Path(args["lake"]) / sub, ignore_errors=True)
    lake = Lake(args["lake"])
    phases, peaks = {}, {}

    def done(phase: str, t: float) -> None:
        # progress on stderr (the run's log): if the watchdog kills this worker, the log says where
        phases[phase], peaks[phase] = time.perf_counter() - t, _peak_rss()
        print(f"{phase}: {phases[phase]:.2f} s, peak RSS so far {peaks[phase] / 1024**3:.2f} GB", file=sys.stderr, flush=True)

    start = time.perf_counter()
    for side in spec.side_tables:
        t = time.perf_counter()
        refresh_silver(lake, side)
        done(f"silver_{side.name}", t)
    t = time.perf_counter()
    silver = refresh_silver(lake, spec)
    done(f"silver_{spec.name}", t)
    t = time.perf_counter()
    features = refresh_features(lake, spec)
    done("features", t)
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "phases": phases,
        "rows_in": silver.rows_in,
        "silver_rows": silver.rows_out,
        "rows_out": features.rows_out,
        "dates": len(features.dates),
        "peak_rss_after_phase_bytes": peaks,
        "peak_rss_bytes": _peak_rss(),
    }
    shutil.rmtree(args["lake"], ignore_errors=True)
    return result


def task_write_partitions(args: dict) -> dict:
    """Diagnostic: write one bronze table with delta-rs partitioned by event date, by month, or not at all."""
    from deltalake import write_deltalake

    frame = pl.scan_delta(args["source"]).collect()
    by = args["by"]
    if by == "month":
        frame = frame.with_columns(pl.col("event_date").dt.truncate("1mo").alias("event_month"))
    data = frame.to_arrow()
    partitions = {"date": ["event_date"], "month": ["event_month"], "none": None}[by]
    shutil.rmtree(args["out"], ignore_errors=True)
    loaded = _after_load()
    start = time.perf_counter()
    write_deltalake(args["out"], data, partition_by=partitions)
    seconds = time.perf_counter() - start
    peak = _peak_rss()
    files = sum(1 for _ in Path(args["out"]).rglob("*.parquet"))
    shutil.rmtree(args["out"], ignore_errors=True)
    return {"by": by, "rows": frame.height, "seconds": seconds, "data_files": files, "peak_rss_bytes": peak, **loaded}


# --------------------------------------------------------------------------------- incremental
def task_incremental(args: dict) -> dict:
    """Ingest + refresh_silver + refresh_features of one day: empty lake vs a lake with history."""
    from aiflow.data.ingest import ingest
    from aiflow.data.refine import refresh_features, refresh_silver
    from aiflow.storage.lake import Lake
    from aiflow.storage.landing import LocalLandingZone

    spec = bench_spec()
    zone, work = Path(args["zone"]), Path(args["work"])
    history, repeats = args["history_days"], args["repeats"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    flights_zone = LocalLandingZone(zone / "flights")
    days = [f.name for f in flights_zone.list()]
    if len(days) <= history:
        raise SystemExit(f"need {history + 1} daily files in {zone}, found {len(days)}")

    # template lake: the weather side table ingested and cleansed (a prerequisite, never timed)
    template = work / "template"
    t_lake = Lake(template)
    for side in spec.side_tables:
        ingest(t_lake, LocalLandingZone(zone / side.name), side)
        refresh_silver(t_lake, side)

    def step(lake_dir: Path, day: str, incremental: bool = False) -> dict:
        lake = Lake(lake_dir)
        t0 = time.perf_counter()
        rep = ingest(lake, flights_zone, spec, files=[day])
        t1 = time.perf_counter()
        silver = refresh_silver(lake, spec)
        t2 = time.perf_counter()
        feats = refresh_features(lake, spec)
        t3 = time.perf_counter()
        if incremental and (feats.full_refresh or silver.full_refresh):
            raise RuntimeError(f"{day}: expected an incremental refresh, got a full one")
        return {
            "day": day, "rows": rep.rows_ingested, "silver_dates": len(silver.dates), "feature_dates": len(feats.dates),
            "full_refresh": feats.full_refresh, "ingest": t1 - t0, "silver": t2 - t1, "features": t3 - t2, "total": t3 - t0,
        }

    def fresh(name: str, src: Path) -> Path:
        dst = work / name
        clone_lake(src, dst)
        return dst

    step(fresh("empty-warmup", template), days[0])  # imports, first-call costs: not measured

    hist = fresh("history", template)
    curve = [step(hist, d, incremental=i > 0) for i, d in enumerate(days[:history])]

    runs: dict[str, list[dict]] = {"day1_empty": [], "dayN_history": [], "dayN_empty": []}
    for _ in range(repeats):  # interleaved so drifting load hits all three alike
        runs["day1_empty"].append(step(fresh("empty-a", template), days[0]))
        runs["dayN_history"].append(step(fresh("hist-copy", hist), days[history], incremental=True))
        runs["dayN_empty"].append(step(fresh("empty-b", template), days[history]))
    shutil.rmtree(work, ignore_errors=True)
    return {"history_days": history, "day1": days[0], "dayN": days[history], "runs": runs, "history_curve": curve, "peak_rss_bytes": _peak_rss()}


TASKS = {
    "ingest_engine": task_ingest_engine,
    "ingest_floor": task_ingest_floor,
    "pipeline_polars": task_pipeline_polars,
    "pipeline_pandas": task_pipeline_pandas,
    "refresh": task_refresh,
    "incremental": task_incremental,
    "write_partitions": task_write_partitions,
}


def main() -> None:
    task, args = sys.argv[1], json.loads(sys.argv[2])
    from benchmarks import whatif

    applied = whatif.apply(args.get("whatif"))
    result = TASKS[task](args)
    result["whatif"] = applied
    print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
