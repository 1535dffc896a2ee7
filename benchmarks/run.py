"""Data-plane benchmarks: ratios against baselines measured in the same run (never absolute timings).

    .venv/bin/python -m benchmarks.run [--rows 1m|10m|both] [--out benchmarks/results/<name>.json]

Goals (from the issue):
1. ingestion: ``aiflow.data.ingest.ingest`` (landing CSV → bronze Delta + lineage + ledger) at ≥ 0.7 of the
   floor's rows/s (floor: ``polars.read_csv`` of each file with the spec's types, concatenated per
   ~1M rows, one ``pyarrow.parquet.write_table`` per chunk);
2. cleansing + features: the Polars engine ≥ 5x faster than the same logic in pandas
   (``benchmarks/pandas_pipeline.py``), same rows and values; peak memory on 10M rows < 8 GB;
3. incremental: ingest + refresh_silver + refresh_features of day N with 30 days of history ≤ 1.5x
   the same for day 1 into an empty lake.

Every measurement runs in a fresh subprocess (``benchmarks.worker``); repeated measurements are
interleaved (baseline, subject, baseline, ...) and summarised by their median. The load average and
the CPU time other processes used during each measurement are recorded next to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from benchmarks.data import ensure_days, ensure_scale

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"ingest_ratio_min": 0.7, "pipeline_speedup_min": 5.0, "peak_memory_10m_max_gb": 8.0, "incremental_ratio_max": 1.5}
DEFAULT_REPEAT = {"1m": 3, "10m": 1}
GB = 1024**3
#: What-if variants (benchmarks/whatif.py): proposed engine fixes measured next to the engine as it is.
#: (The pipeline and incremental variants measured on 2026-11-23 are the engine now: none left there.)
WHATIF_INGEST = {"unpartitioned_bronze": ["unpartitioned_bronze"]}
WHATIF_PIPELINE: list[str] = []
WHATIF_INCREMENTAL: list[str] = []
#: The engine modules the data plane runs (hashed into the results, to tell engine versions apart).
DATA_PLANE_MODULES = ["spec", "storage/lake", "storage/landing", "data/parse", "data/ingest", "data/cleanse", "data/features", "data/refine", "data/demo"]


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def _busy(times) -> float:
    return sum(getattr(times, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


class MemoryLimitExceeded(RuntimeError):
    """A worker's RSS passed ``--max-rss-gb``; it was killed to protect the shared machine."""


#: Workers are killed past this resident size (GB); set by ``--max-rss-gb``.
MAX_RSS_GB = 18.0


def _watch(proc: subprocess.Popen, state: dict) -> None:
    """Poll the worker's RSS every 0.2 s: an independent peak, and a kill past MAX_RSS_GB."""
    try:
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            rss = ps.memory_info().rss
            state["polled_peak"] = max(state.get("polled_peak", 0), rss)
            if rss > MAX_RSS_GB * GB:
                state["killed"] = rss
                proc.kill()
                return
            time.sleep(0.2)
    except psutil.NoSuchProcess:
        pass


def run_task(task: str, args: dict, logs: Path) -> dict:
    """Run one measurement in a fresh interpreter; add load and the CPU other processes took meanwhile."""
    import threading

    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{task}-{time.strftime('%H%M%S')}-{os.getpid()}.log"
    cpu0, child0, load0 = psutil.cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()
    start = time.perf_counter()
    state: dict = {}
    with open(log_file, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", task, json.dumps(args)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
        )
        watcher = threading.Thread(target=_watch, args=(proc, state), daemon=True)
        watcher.start()
        stdout, _ = proc.communicate()
        watcher.join()
    wall = time.perf_counter() - start
    cpu1, child1 = psutil.cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if "killed" in state:
        tail = " | ".join(log_file.read_text().strip().splitlines()[-5:])
        raise MemoryLimitExceeded(
            f"worker {task} killed at {state['killed'] / GB:.1f} GB RSS (limit --max-rss-gb {MAX_RSS_GB}); its log ended: {tail}"
        )
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise RuntimeError(f"worker {task} failed (exit {proc.returncode}); log {log_file}:\n{tail}")
    line = next(ln for ln in reversed(stdout.splitlines()) if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    child_cpu = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    other = max(0.0, _busy(cpu1) - _busy(cpu0) - child_cpu)
    result["env"] = {
        "process_wall_s": round(wall, 3),
        "process_cpu_s": round(child_cpu, 3),
        "other_processes_cpu_s": round(other, 3),
        "other_processes_cpu_share": round(other / (wall * (os.cpu_count() or 1)), 3),
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "polled_peak_rss_bytes": state.get("polled_peak"),
    }
    return result


def median(values) -> float:
    return statistics.median(values)


# ------------------------------------------------------------------------------------------ goal 1
def bench_ingest(scale: str, zone: Path, work: Path, repeat: int, whatif: bool) -> dict:
    lake, floor_out, logs = work / "lake", work / "floor", work / "logs"
    engine_runs, floor_runs = [], []
    whatif_runs: dict[str, list[dict]] = {name: [] for name in (WHATIF_INGEST if whatif else {})}
    for i in range(repeat):  # interleaved: floor, engine, [what-ifs], floor, engine...
        log(f"{scale} ingest floor {i + 1}/{repeat}")
        floor_runs.append(run_task("ingest_floor", {"table": "flights", "zone": str(zone / "flights"), "out": str(floor_out)}, logs))
        shutil.rmtree(floor_out, ignore_errors=True)
        log(f"{scale} ingest engine {i + 1}/{repeat}")
        shutil.rmtree(lake, ignore_errors=True)
        engine_runs.append(run_task("ingest_engine", {"table": "flights", "lake": str(lake), "zone": str(zone / "flights")}, logs))
        log(f"  floor {floor_runs[-1]['rows_per_second']:,.0f} rows/s, engine {engine_runs[-1]['rows_per_second']:,.0f} rows/s")
        for name, runs in whatif_runs.items():
            scratch = work / "lake-whatif"
            shutil.rmtree(scratch, ignore_errors=True)
            args = {"table": "flights", "lake": str(scratch), "zone": str(zone / "flights"), "whatif": WHATIF_INGEST[name]}
            runs.append(run_task("ingest_engine", args, logs))
            shutil.rmtree(scratch, ignore_errors=True)
            log(f"  what-if {name}: {runs[-1]['rows_per_second']:,.0f} rows/s")
    log(f"{scale} ingest weather (side table, input of goal 2)")
    weather = run_task("ingest_engine", {"table": "weather", "lake": str(lake), "zone": str(zone / "weather")}, logs)
    engine_rps = median(r["rows_per_second"] for r in engine_runs)
    floor_rps = median(r["rows_per_second"] for r in floor_runs)
    paired = [e["rows_per_second"] / f["rows_per_second"] for e, f in zip(engine_runs, floor_runs, strict=False)]
    whatifs = {
        name: {
            "rows_per_second": median(r["rows_per_second"] for r in runs),
            "ratio_to_floor": median(r["rows_per_second"] for r in runs) / floor_rps,
            "runs": runs,
        }
        for name, runs in whatif_runs.items()
    }
    return {
        "whatif": whatifs,
        "engine_rows_per_second": engine_rps,
        "floor_rows_per_second": floor_rps,
        "ratio": engine_rps / floor_rps,
        "paired_ratios": paired,
        "goal_min": GOALS["ingest_ratio_min"],
        "met": engine_rps / floor_rps >= GOALS["ingest_ratio_min"],
        "engine_runs": engine_runs,
        "floor_runs": floor_runs,
        "weather": weather,
    }


# ------------------------------------------------------------------------------------------ goal 2
def compare_samples(polars_path: Path, pandas_path: Path) -> dict:
    """Same rows in the same order, same values (floats within 1e-4) in every output column."""
    import polars as pl

    a, b = pl.read_parquet(polars_path), pl.read_parquet(pandas_path)
    out = {"rows_polars": a.height, "rows_pandas": b.height, "columns": a.columns, "mismatches": {}}
    if a.height != b.height or set(a.columns) != set(b.columns):
        out.update(ok=False, only_polars=sorted(set(a.columns) - set(b.columns)), only_pandas=sorted(set(b.columns) - set(a.columns)))
        return out
    for column in a.columns:
        x, y = a[column], b[column]
        if x.dtype.is_float():
            bad = ((x - y.cast(x.dtype)).abs() > 1e-4) | (x.is_null() != y.is_null())
        else:
            bad = x.ne_missing(y.cast(x.dtype))
        out["mismatches"][column] = int(bad.fill_null(True).sum())
    out["ok"] = not any(out["mismatches"].values())
    return out


def safe_task(task: str, args: dict, logs: Path) -> dict:
    """run_task, but a worker killed for memory becomes a result ``{"error": ..., "exceeded_rss_gb": limit}``."""
    try:
        return run_task(task, args, logs)
    except MemoryLimitExceeded as exc:
        log(f"  {exc}")
        return {"error": str(exc), "exceeded_rss_gb": MAX_RSS_GB}


def _ok(runs: list[dict]) -> list[dict]:
    return [r for r in runs if "error" not in r]


def _median_seconds(runs: list[dict]) -> float | None:
    ok = _ok(runs)
    return median(r["seconds"] for r in ok) if ok else None


def _peak_gb(runs: list[dict]) -> float | None:
    """Highest peak RSS; a run killed for memory counts as at least the limit."""
    peaks = [r["peak_rss_bytes"] / GB if "error" not in r else r["exceeded_rss_gb"] for r in runs]
    return max(peaks) if peaks else None


def bench_pipeline(scale: str, work: Path, repeat: int, with_pandas: bool, with_refresh: bool, whatif: bool) -> dict:
    lake, logs, samples = work / "lake", work / "logs", work / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    paths = {"pandas": samples / "pandas.parquet", "polars": samples / "polars.parquet", "whatif": samples / "whatif.parquet"}
    polars_runs, pandas_runs, whatif_runs = [], [], []
    for i in range(repeat):  # interleaved: pandas, polars, [what-if], pandas, polars...
        msg = []
        if with_pandas:
            log(f"{scale} pipeline pandas {i + 1}/{repeat}")
            pandas_runs.append(safe_task("pipeline_pandas", {"lake": str(lake), "sample": str(paths["pandas"]) if i == 0 else None}, logs))
            msg.append(f"pandas {pandas_runs[-1].get('seconds', float('nan')):.2f} s")
        log(f"{scale} pipeline polars {i + 1}/{repeat}")
        polars_runs.append(safe_task("pipeline_polars", {"lake": str(lake), "sample": str(paths["polars"]) if i == 0 else None}, logs))
        msg.append(f"polars {polars_runs[-1].get('seconds', float('nan')):.2f} s")
        if whatif:
            args = {"lake": str(lake), "sample": str(paths["whatif"]) if i == 0 else None, "whatif": WHATIF_PIPELINE}
            whatif_runs.append(safe_task("pipeline_polars", args, logs))
            msg.append(f"polars what-if {whatif_runs[-1].get('seconds', float('nan')):.2f} s")
        log("  " + ", ".join(msg))
    out: dict = {"polars_runs": polars_runs, "polars_seconds": _median_seconds(polars_runs), "polars_peak_rss_gb": _peak_gb(polars_runs)}
    if with_pandas:
        out.update(pandas_runs=pandas_runs, pandas_seconds=_median_seconds(pandas_runs), pandas_peak_rss_gb=_peak_gb(pandas_runs))
        out["goal_min"] = GOALS["pipeline_speedup_min"]
        if out["pandas_seconds"] and out["polars_seconds"]:
            out["speedup"] = out["pandas_seconds"] / out["polars_seconds"]
            out["paired_speedups"] = [d["seconds"] / p["seconds"] for d, p in zip(pandas_runs, polars_runs, strict=False) if "error" not in d and "error" not in p]
            out["met"] = out["speedup"] >= GOALS["pipeline_speedup_min"]
        if paths["polars"].exists() and paths["pandas"].exists():
            sanity = compare_samples(paths["polars"], paths["pandas"])
            for key in ("silver_rows", "rejected_rows", "side_silver_rows", "side_rejected_rows", "vocab_sizes"):
                sanity[key] = {"polars": polars_runs[0][key], "pandas": pandas_runs[0][key]}
                sanity["ok"] = sanity["ok"] and polars_runs[0][key] == pandas_runs[0][key]
            out["sanity"] = sanity
    if whatif:
        w: dict = {"variants": WHATIF_PIPELINE, "runs": whatif_runs, "seconds": _median_seconds(whatif_runs), "peak_rss_gb": _peak_gb(whatif_runs)}
        if w["seconds"] and out["polars_seconds"]:
            w["speedup_vs_engine"] = out["polars_seconds"] / w["seconds"]
        if w["seconds"] and out.get("pandas_seconds"):
            w["speedup_vs_pandas"] = out["pandas_seconds"] / w["seconds"]
        if paths["polars"].exists() and paths["whatif"].exists():
            w["same_output_as_engine"] = compare_samples(paths["polars"], paths["whatif"])
        out["whatif"] = w
    shutil.rmtree(samples, ignore_errors=True)
    if with_refresh:
        log(f"{scale} refresh_silver + refresh_features through the lake")
        out["refresh"] = safe_task("refresh", {"source_lake": str(lake), "lake": str(work / "refresh-lake")}, logs)
        shutil.rmtree(work / "refresh-lake", ignore_errors=True)
        out["refresh_peak_rss_gb"] = _peak_gb([out["refresh"]])
        if "error" not in out["refresh"]:
            log(f"  refresh {out['refresh']['seconds']:.2f} s, peak {out['refresh_peak_rss_gb']:.2f} GB")
    if with_refresh:
        # the engine writes every table partitioned by event date; how that scales with dates per write
        log(f"{scale} diagnostic: delta-rs write of bronze/weather partitioned by date / month / not at all")
        out["partitioned_write"] = {
            by: safe_task("write_partitions", {"source": str(lake / "bronze" / "weather"), "out": str(work / "partition-test"), "by": by}, logs)
            for by in ("date", "month", "none")
        }
        log("  " + ", ".join(f"{by}: {r.get('data_files')} files, {r.get('seconds', float('nan')):.1f} s, "
                              f"peak {_peak_gb([r]):.2f} GB" for by, r in out["partitioned_write"].items()))
    if scale == "10m":
        peaks = {"pipeline": out["polars_peak_rss_gb"]}
        if "refresh_peak_rss_gb" in out:
            peaks["refresh"] = out["refresh_peak_rss_gb"]
        out["memory_goal"] = {"max_gb": GOALS["peak_memory_10m_max_gb"], "peaks_gb": peaks,
                              "met": all(v is not None and v < GOALS["peak_memory_10m_max_gb"] for v in peaks.values())}
    return out


# ------------------------------------------------------------------------------------------ goal 3
def bench_incremental(cache: Path, work: Path, history: int, repeats: int, whatif: list[str] | None = None) -> dict:
    zone = ensure_days(cache, history + 1)
    label = f" (what-if {'+'.join(whatif)})" if whatif else ""
    log(f"incremental{label}: {history} days of history, {repeats} interleaved repeats")
    args = {"zone": str(zone), "work": str(work / "incremental"), "history_days": history, "repeats": repeats, "whatif": whatif or []}
    res = run_task("incremental", args, work / "logs")
    runs = res["runs"]
    summary = {name: {part: median(r[part] for r in rs) for part in ("ingest", "silver", "features", "total")} for name, rs in runs.items()}
    ratio = summary["dayN_history"]["total"] / summary["day1_empty"]["total"]
    # growth of the daily cost with history: least-squares slope over the incremental days of the build-up
    curve = [(i, c["total"]) for i, c in enumerate(res["history_curve"]) if not c["full_refresh"]]
    if len(curve) >= 2:
        mx, my = statistics.fmean(x for x, _ in curve), statistics.fmean(y for _, y in curve)
        sxx = sum((x - mx) ** 2 for x, _ in curve)
        res["history_slope_ms_per_day"] = 1000 * sum((x - mx) * (y - my) for x, y in curve) / sxx if sxx else None
    res.update(
        median_seconds=summary,
        ratio=ratio,
        ratio_vs_same_day_empty=summary["dayN_history"]["total"] / summary["dayN_empty"]["total"],
        goal_max=GOALS["incremental_ratio_max"],
        met=ratio <= GOALS["incremental_ratio_max"],
    )
    log(f"  day1 empty {summary['day1_empty']['total']:.3f} s, day{history + 1} with history {summary['dayN_history']['total']:.3f} s")
    return res


# ------------------------------------------------------------------------------------------ report
def machine() -> dict:
    import deltalake
    import pandas
    import polars
    import pyarrow

    return {
        "nproc": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / GB, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {"polars": polars.__version__, "pandas": pandas.__version__, "deltalake": deltalake.__version__, "pyarrow": pyarrow.__version__},
    }


def code_state() -> dict:
    """The engine version measured: other engineers commit to aiflow/ while benchmarks run."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import hashlib

    digest = hashlib.sha256()
    for path in sorted(ROOT / "aiflow" / f"{m}.py" for m in DATA_PLANE_MODULES):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return {
        "git_head": git("rev-parse", "HEAD"),
        "git_head_subject": git("log", "-1", "--format=%s"),
        "data_plane_uncommitted_changes": git("status", "--porcelain", "--", *(f"aiflow/{m}.py" for m in DATA_PLANE_MODULES)),
        "data_plane_sources_sha256": digest.hexdigest(),
    }


def check_whatif() -> dict:
    """The what-if variants still return what the engine returns (they patch engine internals)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.whatif"], cwd=ROOT, capture_output=True, text=True)
    return {"ok": proc.returncode == 0, "output": (proc.stdout + proc.stderr)[-2000:]}


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


HEADER = ("measurement", "value", "ratio", "goal", "verdict")


def _f(value, fmt: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, fmt)


def summary_rows(results: dict) -> list[tuple]:
    rows = []
    limit = f"killed > {MAX_RSS_GB:g} GB"
    for scale, res in results["scales"].items():
        if "ingest" in res:
            g = res["ingest"]
            rows.append((f"{scale} ingest rows/s (engine / floor)", f"{g['engine_rows_per_second']:,.0f} / {g['floor_rows_per_second']:,.0f}",
                         f"{g['ratio']:.2f}", "≥ 0.70", _verdict(g["met"])))
            for name, w in g.get("whatif", {}).items():
                rows.append((f"  what-if {name}", f"{w['rows_per_second']:,.0f}", f"{w['ratio_to_floor']:.2f}", "(diagnostic)", ""))
        if "pipeline" in res:
            p = res["pipeline"]
            if "pandas_runs" in p:
                value = f"{_f(p['pandas_seconds'], '.2f', limit)} / {_f(p['polars_seconds'], '.2f', limit)}"
                ratio = f"{p['speedup']:.2f}x" if "speedup" in p else "n/a"
                rows.append((f"{scale} pipeline s (pandas / polars)", value, ratio, "≥ 5x", _verdict(p.get("met"))))
                if "sanity" in p:
                    rows.append((f"{scale} pipeline sanity (rows, values)", f"{p['sanity']['rows_polars']:,} rows", "", "same", "OK" if p["sanity"]["ok"] else "DIFF"))
            verdict = _verdict(p["polars_peak_rss_gb"] < GOALS["peak_memory_10m_max_gb"]) if "memory_goal" in p else ""
            rows.append((f"{scale} polars pipeline peak RSS", f"{_f(p['polars_peak_rss_gb'], '.2f')} GB", "", "< 8 GB @10m", verdict))
            if "whatif" in p:
                w = p["whatif"]
                same = w.get("same_output_as_engine", {}).get("ok")
                same = "same output" if same else ("OUTPUT DIFFERS" if same is False else "output not compared")
                rows.append((f"  what-if {'+'.join(w['variants'])}", f"{_f(w['seconds'], '.2f', limit)} s, {_f(w['peak_rss_gb'], '.2f')} GB, {same}",
                             f"{_f(w.get('speedup_vs_pandas'), '.2f')}x vs pandas", "(diagnostic)", ""))
            for by, r in p.get("partitioned_write", {}).items():
                label = {"date": "partitioned by event_date", "month": "partitioned by month", "none": "unpartitioned"}[by]
                if "error" not in r:
                    rows.append((f"  diag: delta-rs write of bronze/weather, {label}", f"{r['rows']:,} rows, {r['data_files']:,} files, {r['seconds']:.1f} s, {r['peak_rss_bytes'] / GB:.2f} GB", "", "(diagnostic)", ""))
            if "refresh" in p:
                r = p["refresh"]
                value = f"{r['seconds']:.1f} s / {p['refresh_peak_rss_gb']:.2f} GB" if "error" not in r else f"killed at > {r['exceeded_rss_gb']:g} GB"
                verdict = _verdict(p["refresh_peak_rss_gb"] < GOALS["peak_memory_10m_max_gb"]) if "memory_goal" in p else ""
                rows.append((f"{scale} refresh (lake) s / peak RSS", value, "", "< 8 GB @10m", verdict))
    if "incremental" in results:
        for key, label in (("incremental", ""), ("incremental_whatif", "  what-if ")):
            if key not in results:
                continue
            inc = results[key]
            s = inc["median_seconds"]
            rows.append((f"{label}incremental s (day{inc['history_days'] + 1} w/ history / day1 empty)",
                         f"{s['dayN_history']['total']:.3f} / {s['day1_empty']['total']:.3f}", f"{inc['ratio']:.2f}x",
                         "≤ 1.5x" if not label else "(diagnostic)", _verdict(inc["met"]) if not label else ""))
    return rows


def print_table(rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(5)]
    for r in [HEADER, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)))


def main(argv: list[str] | None = None) -> int:
    global MAX_RSS_GB
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", choices=["1m", "10m", "both"], default="1m")
    ap.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/<rows>-<timestamp>.json)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/aiflow-bench-cache"), help="generated landing files (reused)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/aiflow-bench-work"), help="lakes and scratch (deleted at the end)")
    ap.add_argument("--repeat", type=int, help="repeats per measurement (default: 3 at 1m, 1 at 10m)")
    ap.add_argument("--skip", default="", help="comma list of: ingest, pipeline, pandas, refresh, incremental, whatif")
    ap.add_argument("--history-days", type=int, default=30)
    ap.add_argument("--incremental-repeats", type=int, default=7)
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--max-rss-gb", type=float, default=MAX_RSS_GB, help="kill a worker past this RSS (protects the shared machine)")
    ap.add_argument("--summarize", type=Path, metavar="JSON", help="only print the table of an earlier results file")
    ap.add_argument("--partitioning", choices=["day", "month", "none"], help="the demo spec's partitioning in every worker (default: the spec's)")
    opts = ap.parse_args(argv)
    if opts.summarize:
        print_table(summary_rows(json.loads(opts.summarize.read_text())))
        return 0
    MAX_RSS_GB = opts.max_rss_gb
    if opts.partitioning:
        os.environ["AIFLOW_BENCH_PARTITIONING"] = opts.partitioning  # inherited by every worker (benchmarks.worker.bench_spec)
    skip = {s.strip() for s in opts.skip.split(",") if s.strip()}
    scales = ["1m", "10m"] if opts.rows == "both" else [opts.rows]
    started = dt.datetime.now().astimezone()
    out_path = opts.out or ROOT / "benchmarks" / "results" / f"{opts.rows}-{started:%Y%m%d-%H%M%S}.json"
    results: dict = {
        "command": " ".join([".venv/bin/python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_state(),
        "goals": GOALS,
        "partitioning": opts.partitioning or "spec default",
        "scales": {},
    }
    t0 = time.perf_counter()
    shutil.rmtree(opts.work, ignore_errors=True)
    if "whatif" not in skip:
        results["whatif_check"] = check_whatif()
        if not results["whatif_check"]["ok"]:
            log("what-if variants no longer match the engine; skipping them:\n" + results["whatif_check"]["output"])
            skip.add("whatif")
    for scale in scales:
        work = opts.work / scale
        repeat = opts.repeat or DEFAULT_REPEAT[scale]
        log(f"{scale}: landing data (cache {opts.cache})")
        data = ensure_scale(opts.cache, scale)
        log(f"  {data['flight_files']} flight files, {data['flight_bytes'] / 1e6:,.0f} MB, generated in {data['generation_seconds']} s")
        res: dict = {"data": data, "repeat": repeat}
        results["scales"][scale] = res
        if "ingest" not in skip or "pipeline" not in skip:  # the pipeline reads the bronze tables ingestion writes
            res["ingest"] = bench_ingest(scale, Path(data["zone"]), work, repeat, whatif=scale == "1m" and "whatif" not in skip)
        if "pipeline" not in skip:
            res["pipeline"] = bench_pipeline(
                scale, work, repeat, "pandas" not in skip, "refresh" not in skip, "whatif" not in skip and bool(WHATIF_PIPELINE)
            )
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    if "incremental" not in skip:
        results["incremental"] = bench_incremental(opts.cache, opts.work, opts.history_days, opts.incremental_repeats)
        if "whatif" not in skip and WHATIF_INCREMENTAL:
            results["incremental_whatif"] = bench_incremental(
                opts.cache, opts.work, opts.history_days, opts.incremental_repeats, WHATIF_INCREMENTAL
            )
    if not opts.keep_work:
        shutil.rmtree(opts.work, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - t0
    results["code_at_end"] = code_state()
    if results["code_at_end"]["data_plane_sources_sha256"] != results["code"]["data_plane_sources_sha256"]:
        log("WARNING: aiflow/ changed while the benchmark ran; figures mix engine versions")
    results["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    rows = summary_rows(results)
    results["summary"] = [dict(zip(HEADER, r, strict=False)) for r in rows]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=1, default=str))
    print()
    print_table(rows)
    print(f"\ntotal {results['total_seconds'] / 60:.1f} min; results in {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
