"""Drift engine benchmark (issue 12): ``aiflow.monitoring.drift.detect_drift`` vs Evidently's preset.

Synthetic features-table frames (half ``num_*`` Float32, half ``cat_*`` Int32 codes with realistic
cardinalities, a few columns shifted in ``current``) at several sizes. For each size:

* **ours**: ``detect_drift(reference_sample, current)`` where the reference is a 50k-row seeded sample
  (what the reference profile stores) and ``current`` is the full frame (sampled inside to ``max_rows``);
* **preset**: ``preset_verdicts(reference, current)`` — Evidently's ``DataDriftPreset`` on the full
  frames (reference as large as current); skipped above ``--preset-max-cells`` rows x columns.

Each is measured in its own subprocess (wall time of the drift step with Evidently already imported,
load time, and the child's peak RSS from ``getrusage``), then the speed ratio and the share of columns
with the same verdict. Nothing asserts on time; see ``benchmarks/README.md`` ("Drift (issue 12)").

    .venv/bin/python -m benchmarks.drift                       # 100k, 1m, 10m x 20, 50 columns
    .venv/bin/python -m benchmarks.drift --sizes 100k --columns 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {"100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
REFERENCE_SAMPLE = 50_000
CHUNK = 1_000_000
#: Categorical cardinalities, cycled (carriers 16, origins 3, hours 24, months 12, destinations 105 ...).
CARDINALITIES = [3, 7, 12, 16, 24, 31, 53, 105, 366, 1500]


def _kinds(n_columns: int) -> dict[str, str]:
    half = n_columns // 2
    kinds = {f"num_{i:02d}": "numeric" for i in range(n_columns - half)}
    kinds.update({f"cat_{i:02d}": "categorical" for i in range(half)})
    return kinds


def _shifted(kinds: dict[str, str]) -> set[str]:
    """About one column in five drifts in current: every fifth numeric and every fifth categorical."""
    num = [c for c, k in kinds.items() if k == "numeric"]
    cat = [c for c, k in kinds.items() if k == "categorical"]
    return set(num[::5]) | set(cat[2::5])


def _zipf(cardinality: int, tilt: float) -> np.ndarray:
    p = 1.0 / np.arange(1, cardinality + 1) ** tilt
    return p / p.sum()


def _chunk(kinds: dict[str, str], rows: int, shifted: set[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, (column, kind) in enumerate(kinds.items()):
        moved = column in shifted
        if kind == "numeric":
            shape = i % 4
            if shape == 0:
                values = rng.normal(0.6 if moved else 0.0, 1.0, rows)
            elif shape == 1:
                values = rng.lognormal(0.0, 0.8 * (1.4 if moved else 1.0), rows)
            elif shape == 2:
                values = np.where(rng.random(rows) < (0.5 if moved else 0.3), rng.normal(3, 0.5, rows), rng.normal(0, 1, rows))
            else:
                values = rng.gamma(2.0, 1.5 if moved else 1.0, rows)
            out[column] = values.astype(np.float32)
        else:
            cardinality = CARDINALITIES[i % len(CARDINALITIES)]
            p = _zipf(cardinality, 1.1)
            if moved:
                p = np.roll(p, 1)  # the top category's share moves to the second one, and so on
            out[column] = (rng.choice(cardinality, rows, p=p) + 1).astype(np.int32)
    return out


def _write(path: Path, kinds: dict[str, str], rows: int, shifted: set[str], seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    done = 0
    while done < rows:
        n = min(CHUNK, rows - done)
        table = pa.table(_chunk(kinds, n, shifted, rng))
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        done += n
    if writer is not None:
        writer.close()


def prepare(cache: Path, label: str, n_columns: int) -> Path:
    """Write reference.parquet, reference_sample.parquet and current.parquet once per size."""
    import polars as pl

    rows = SIZES[label]
    where = cache / f"{label}x{n_columns}"
    if (where / "done").exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    kinds = _kinds(n_columns)
    _write(where / "reference.parquet", kinds, rows, set(), seed=1)
    _write(where / "current.parquet", kinds, rows, _shifted(kinds), seed=2)
    sample_rows = min(REFERENCE_SAMPLE, rows)
    pl.scan_parquet(where / "reference.parquet").head(4 * sample_rows).collect().sample(n=sample_rows, seed=0).write_parquet(
        where / "reference_sample.parquet"
    )
    (where / "done").write_text(json.dumps({"rows": rows, "columns": n_columns}))
    return where


def worker(mode: str, where: Path, n_columns: int) -> dict:
    """Run one measurement in this process; returns times, verdicts and this process's peak RSS."""
    import evidently.legacy.calculations.stattests  # noqa: F401  (import cost kept out of the timing)
    import polars as pl

    from aiflow.monitoring.drift import detect_drift, preset_verdicts

    kinds = _kinds(n_columns)
    start = time.perf_counter()
    if mode == "ours":
        reference = pl.read_parquet(where / "reference_sample.parquet")
    else:
        reference = pl.read_parquet(where / "reference.parquet")
    current = pl.read_parquet(where / "current.parquet")
    loaded = time.perf_counter()
    if mode == "ours":
        result = detect_drift(reference, current, kinds)
        verdicts = dict(zip(result.columns["column"], result.columns["drifted"], strict=True))
        extra = {"current_rows_used": result.current_rows, "methods": sorted(set(result.columns["method"]))}
    else:
        verdicts = preset_verdicts(reference, current, kinds)
        extra = {}
    done = time.perf_counter()
    return {
        "mode": mode,
        "load_s": loaded - start,
        "drift_s": done - loaded,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "verdicts": verdicts,
        **extra,
    }


def _measure(mode: str, where: Path, n_columns: int) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.drift", "--worker", mode, "--dir", str(where), "--columns", str(n_columns)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"mode": mode, "error": proc.stderr[-2000:], "wall_s": time.perf_counter() - started}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one worker measurement with ``--worker``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100k,1m,10m")
    parser.add_argument("--columns", default="20,50")
    parser.add_argument("--preset-max-cells", type=float, default=50e6, help="skip the preset above rows x columns")
    parser.add_argument("--cache", default="/tmp/aiflow-drift-bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated parquet files")
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    parser.add_argument("--worker", choices=["ours", "preset"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.dir), int(args.columns))))
        return 0

    cache = Path(args.cache)
    results = []
    print(f"load average at start: {os.getloadavg()}")
    header = (
        f"{'size':>10} {'ours s':>8} {'ours GB':>8} {'preset s':>9} {'preset GB':>9} {'speed-up':>8} {'agree':>6} {'shifted found':>13}"
    )
    print(header)
    for label in args.sizes.split(","):
        for n_columns in (int(c) for c in args.columns.split(",")):
            t0 = time.perf_counter()
            where = prepare(cache, label, n_columns)
            prep_s = time.perf_counter() - t0
            ours = _measure("ours", where, n_columns)
            row = {"size": label, "rows": SIZES[label], "columns": n_columns, "prepare_s": prep_s, "ours": ours}
            if SIZES[label] * n_columns > args.preset_max_cells:
                row["preset"] = {"skipped": f"rows x columns > {args.preset_max_cells:.0f}"}
            else:
                row["preset"] = _measure("preset", where, n_columns)
            preset = row["preset"]
            if "verdicts" in ours and "verdicts" in preset:
                same = sum(ours["verdicts"][c] == preset["verdicts"][c] for c in ours["verdicts"])
                row["agreement"] = same / len(ours["verdicts"])
                row["speedup"] = preset["drift_s"] / ours["drift_s"]
            shifted = _shifted(_kinds(n_columns))
            if "verdicts" in ours:
                row["shifted_found"] = f"{sum(ours['verdicts'][c] for c in shifted)}/{len(shifted)}"
                row["false_alarms"] = sum(v for c, v in ours["verdicts"].items() if c not in shifted)
            results.append(row)

            def cell(side: dict, key: str, fmt: str) -> str:
                return format(side[key], fmt) if key in side else ("skip" if "skipped" in side else "err")

            print(
                f"{label + 'x' + str(n_columns):>10} {cell(ours, 'drift_s', '.2f'):>8} {cell(ours, 'peak_rss_gb', '.2f'):>8} "
                f"{cell(preset, 'drift_s', '.1f'):>9} {cell(preset, 'peak_rss_gb', '.2f'):>9} "
                f"{format(row['speedup'], '.1f') + 'x' if 'speedup' in row else '-':>8} "
                f"{format(row['agreement'], '.0%') if 'agreement' in row else '-':>6} {row.get('shifted_found', '-'):>13}",
                flush=True,
            )
            for side in (ours, preset):
                if "error" in side:
                    print(f"  {side['mode']} failed: {side['error']}", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    if not args.keep:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
