"""What the reference profile costs a training run: ``train()`` wall time with and without it, per family, on the demo year;
and what reading its rows costs on a large window.

    .venv/bin/python -m benchmarks.reference_cost [--rounds 2] [--cache /tmp/aiflow-bench-cache]
                                                  [--big-rows 10000000] [--out benchmarks/results/reference_cost.json]

1. The demo year goes through the real data plane (cached in ``<cache>/families``, shared with
``benchmarks.families``); each family is trained alone through ``aiflow.train.loop.train`` in this process,
default hyperparameters, once as it is (reference built and saved in the bundle) and once with the
reference step replaced by nothing, interleaved for ``--rounds`` rounds. Reported: the medians, their
ratio (with / without), the reference step's own seconds (from its log line) and the files' size.

2. A synthetic features-shaped Delta table of ``--big-rows`` rows (one partition per day, 365 days, 8 input
columns and a target): ``aiflow.models.reference.reference_rows`` (key threshold while scanning, 20k/10k rows
kept) against collecting the same windows whole, each in a fresh process, wall time and peak RSS (ratios).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training entrypoint does

import argparse
import datetime as dt
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

import aiflow.train.loop as loop
from aiflow.data.demo import write_landing
from aiflow.spec import demo_spec_path, parse_spec
from aiflow.storage.lake import Tables
from aiflow.train.contract import TrainParams
from aiflow.train.request import pinned_request
from benchmarks.train_bench import build_lake

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def one_run(lake, spec, family: str, artifacts: Path, with_reference: bool) -> dict:
    request = pinned_request(lake, spec, TrainParams(families=[family]), str(artifacts), f"ref-{family}-{time.time_ns()}", "benchmark")
    lines: list[str] = []
    original = loop._reference
    if not with_reference:
        loop._reference = lambda *args, **kwargs: {}
    try:
        start = time.perf_counter()
        result = loop.train(request, log=lines.append)
        seconds = time.perf_counter() - start
    finally:
        loop._reference = original
    step = next((re.search(r"\((\d+\.\d+) s\)$", line) for line in lines if line.startswith("reference:")), None)
    return {
        "train_s": round(seconds, 2), "reference_step_s": float(step.group(1)) if step else 0.0,
        "reference_bytes": sum(len(Path(result.artifact_uri, n).read_bytes()) for n in ("reference.parquet", "reference.json")) if with_reference else 0,
        "rows_train": result.rows_train, "rows_valid": result.rows_valid, "loadavg": os.getloadavg()[0],
    }  # fmt: skip


BIG_CHILD = """
import sys, time, datetime as dt
import polars as pl
from aiflow.models.reference import reference_rows
uri, mode = sys.argv[1], sys.argv[2]
lf = pl.scan_delta(uri)
splits = {"train": pl.col("event_date") < dt.date(2013, 10, 1),
          "valid": (pl.col("event_date") >= dt.date(2013, 10, 1)) & (pl.col("event_date") < dt.date(2013, 11, 15))}
columns = [c for c in lf.collect_schema().names() if c != "target"]
start = time.perf_counter()
if mode == "reference_rows":
    rows = reference_rows(lf, splits, columns=columns, target="target", seed=13, limits={"train": 20_000, "valid": 10_000})
else:
    rows = pl.concat([lf.filter(w).filter(pl.col("target").is_not_null()).collect().with_columns(pl.lit(n).alias("split"))
                      for n, w in splits.items()])
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))  # kB; ru_maxrss survives exec
print(time.perf_counter() - start, rows.height, hwm * 1024)
"""


def big_window(work: Path, rows: int) -> dict:
    """reference_rows vs a whole read of the windows, on a synthetic features table of ``rows`` rows."""
    import subprocess

    from deltalake import write_deltalake

    uri = work / f"big-features-{rows}"
    if not (uri / "_delta_log").exists():
        log(f"writing a synthetic features table of {rows:,} rows")
        rng = np.random.default_rng(0)
        days = np.sort(rng.integers(0, 365, rows))
        frame = pl.DataFrame({
            "event_date": pl.Series((np.datetime64("2013-01-01") + days).astype("datetime64[D]")).cast(pl.Date),
            **{f"cat_{i}": rng.integers(0, 50, rows).astype(np.int32) for i in range(3)},
            "cal_hour": rng.integers(0, 24, rows).astype(np.int32),
            **{f"num_{i}": rng.normal(size=rows).astype(np.float32) for i in range(4)},
            "target": rng.integers(0, 2, rows).astype(np.int8),
        })  # fmt: skip
        write_deltalake(str(uri), frame.to_arrow(), partition_by=["event_date"])
        del frame
    figures = {}
    for mode in ("collect_whole", "reference_rows"):
        out = subprocess.run([sys.executable, "-c", BIG_CHILD, str(uri), mode], capture_output=True, text=True, check=True, cwd=ROOT)
        seconds, height, rss = out.stdout.split()
        figures[mode] = {"s": round(float(seconds), 2), "rows": int(height), "peak_rss_mb": round(int(rss) / 2**20)}
        log(f"big window, {mode}: {figures[mode]}")
    ratio = {k: round(figures["reference_rows"][k] / figures["collect_whole"][k], 3) for k in ("s", "peak_rss_mb")}
    return {"table_rows": rows, **figures, "ratio_reference_rows_to_whole": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/aiflow-bench-cache"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reference_cost.json")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="Rows of the synthetic table (0: skip part 2).")
    parser.add_argument("--skip-train", action="store_true", help="Only part 2.")
    args = parser.parse_args()
    work = args.cache / "families"
    landing = work / "landing-year"
    if not (landing / "flights").exists():
        log("landing the demo year")
        write_landing(landing)
    spec = parse_spec(yaml.safe_load(demo_spec_path().read_text()), "flights (demo)")
    lake, seconds = build_lake(work / "lake-year", landing, spec)
    log(f"data plane: {'cached' if not seconds else f'{seconds:.0f} s'}; features rows {lake.scan(Tables.features(spec.name)).collect().height}")
    artifacts = work / "reference-artifacts"
    report: dict = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "command": ".venv/bin/python -m benchmarks.reference_cost " + " ".join(sys.argv[1:]), "families": {}}  # fmt: skip
    for family in () if args.skip_train else ("sklearn", "pytorch"):
        runs: dict[str, list[dict]] = {"with": [], "without": []}
        for r in range(args.rounds):
            for variant in (("without", "with") if r % 2 else ("with", "without")):
                shutil.rmtree(artifacts, ignore_errors=True)
                runs[variant].append(one_run(lake, spec, family, artifacts, variant == "with"))
                log(f"{family} {variant}: {runs[variant][-1]}")
        med = {v: statistics.median(x["train_s"] for x in runs[v]) for v in runs}
        report["families"][family] = {
            "runs": runs, "median_train_s": med, "ratio_with_to_without": round(med["with"] / med["without"], 3),
            "reference_step_s_median": statistics.median(x["reference_step_s"] for x in runs["with"]),
            "reference_step_share_of_train": round(statistics.median(x["reference_step_s"] / x["train_s"] for x in runs["with"]), 3),
        }  # fmt: skip
        log(f"{family}: {json.dumps({k: v for k, v in report['families'][family].items() if k != 'runs'})}")
    shutil.rmtree(artifacts, ignore_errors=True)
    if args.big_rows:
        report["big_window"] = big_window(args.cache, args.big_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    log(f"written {args.out}")


if __name__ == "__main__":
    main()
