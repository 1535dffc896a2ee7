"""DDP throughput: ``torchrun --nproc-per-node=2`` (gloo, CPU) vs one process, same request, same machine, same run.

    .venv/bin/python -m benchmarks.ddp [--rows 300000] [--epochs 2] [--repeat 2] [--out benchmarks/results/ddp.json]

A mid-size synthetic features table of the demo spec's shape (every column of ``output_schema``; 90 days,
time split: 70 train / 10 valid / 10 test) is written once as a real Delta table; then, interleaved
``--repeat`` times, the real entrypoint trains the network on it (standalone mode, default network
params: batch 2048, MLP 128-64, dropout 0.1; pytorch family only) as

* ``single``: ``python -m aiflow.train`` (torch's default threads: one per core),
* ``single-1t``: the same with ``OMP_NUM_THREADS=1`` (what each torchrun rank gets),
* ``ddp2``: ``torchrun --nproc-per-node=2 -m aiflow.train`` (each rank reads and decodes every row and
  trains on half of each global batch; gradients all-reduced by gloo over loopback).

plus ``reader``: one shuffled pass of the streaming reader alone (``FeatureData.batches``, no model),
in-process, which is what every rank repeats in full each epoch.

Throughput is training rows per second of an epoch as the entrypoint logs it (global rows / rank 0's
epoch time; the reader is part of it), median over epochs and repeats; ratios are against ``single``
measured in the same run. The GPU figure (NCCL, one rank per GPU) waits for a machine with GPUs.
No assertion on time: the figures go to ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from aiflow.data.encoding import FeatureState
from aiflow.data.features import output_schema
from aiflow.spec import demo_spec_path, parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams, TrainRequest
from aiflow.train.data import FeatureData
from aiflow.train.request import pinned_request

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START = dt.date(2013, 1, 1)
DAYS, VALID_AT, TEST_AT = 90, 70, 80
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ train_loss=\S+ valid_loss=\S+ \S+ rows/s=([\d,]+)")


def log(message: str) -> None:
    print(f"{dt.datetime.now():%H:%M:%S} {message}", flush=True)


def write_table(root: Path, rows: int, seed: int = 7):
    """A features table of the demo spec's shape with a planted signal; returns (spec, lake)."""
    data = yaml.safe_load(demo_spec_path().read_text())
    data["split"] = {
        "kind": "time", "valid_from": (START + dt.timedelta(VALID_AT)).isoformat(), "test_from": (START + dt.timedelta(TEST_AT)).isoformat()
    }  # fmt: skip
    spec = parse_spec(data, "flights (ddp benchmark)")
    rng = np.random.default_rng(seed)
    schema = output_schema(spec)
    sizes = {c: int(rng.integers(10, 400)) for c in spec.features.categorical}
    state = FeatureState(
        vocab={c: [f"{c}{i}" for i in range(n)] for c, n in sizes.items()},
        stats={name.removeprefix("num_"): (0.0, 1.0) for name in schema if name.startswith("num_")},
        rows=rows,
    )
    minutes = np.sort(rng.integers(0, DAYS * 1440, rows))
    ts = (np.datetime64(START.isoformat()) + minutes.astype("timedelta64[m]")).astype("datetime64[us]")
    columns: dict[str, object] = {}
    signal = np.zeros(rows)
    for name, dtype in schema.items():
        if name.startswith("cat_"):
            codes = rng.integers(0, sizes[name.removeprefix("cat_")] + 1, rows)
            signal += 0.3 * np.sin(codes)
            columns[name] = codes
        elif name.startswith("num_"):
            values = rng.normal(size=rows)
            signal += 0.2 * values
            columns[name] = values
        elif name == "cal_hour":
            columns[name] = (minutes // 60) % 24
        elif name == "cal_weekday":
            columns[name] = (minutes // 1440 + 1) % 7 + 1
        elif name == "event_date":
            columns[name] = ts.astype("datetime64[D]")
        elif name == spec.target.name:
            columns[name] = (signal + rng.normal(size=rows) > 0).astype(np.int8)
        elif dtype == pl.String:
            columns[name] = np.array(["x"] * rows)
        elif dtype.is_temporal():
            columns[name] = ts
        else:
            columns[name] = np.arange(rows)
    columns[spec.target.name] = (signal + rng.normal(size=rows) > 0).astype(np.int8)  # after every input is in
    frame = pl.DataFrame({n: pl.Series(n, columns[n]).cast(schema[n]) for n in schema}).select(list(schema))
    lake = Lake(root / "lake")
    lake.overwrite(Tables.feature_state(spec.name), state.to_frame())
    version = lake.version(Tables.feature_state(spec.name))
    lake.overwrite(Tables.features(spec.name), frame, metadata={"state_version": str(version)})
    return spec, lake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(variant: str, request_file: Path, work: Path) -> dict:
    entry = ["-m", "aiflow.train", "--request", str(request_file)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    if variant == "ddp2":
        cmd = [str(BIN / "torchrun"), "--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", *entry]
        env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    else:
        cmd = [sys.executable, *entry]
        if variant == "single-1t":
            env["OMP_NUM_THREADS"] = "1"
    shutil.rmtree(work / "artifacts", ignore_errors=True)  # no resume: every run trains from epoch 1
    load = os.getloadavg()[0]
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if out.returncode:
        raise RuntimeError(f"{variant} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "[rank " not in line]
    epochs = [int(m.group(2).replace(",", "")) for line in lines if (m := EPOCH_LINE.search(line))]
    log(f"{variant}: rows/s per epoch {epochs}, wall {wall:.1f} s, load {load:.1f}")
    return {"variant": variant, "rows_per_s": epochs, "wall_s": round(wall, 2), "load_before": load}


def reader_rows_per_s(request: TrainRequest, spec, repeat: int) -> list[int]:
    """Rows per second of one shuffled pass over the training split by the streaming reader (no model)."""
    data = FeatureData(request, spec)
    figures = []
    for epoch in range(1, repeat + 1):
        started, rows = time.perf_counter(), 0
        for batch in data.batches("train", request.params.batch_size, epoch=epoch):
            rows += len(batch)
        figures.append(int(rows / (time.perf_counter() - started)))
    log(f"reader: rows/s per pass {figures}")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/aiflow-bench-ddp"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    spec, lake = write_table(args.work, args.rows)
    params = TrainParams(epochs=args.epochs, patience=args.epochs, families=["pytorch"], device="cpu")
    request = pinned_request(lake, spec, params, str(args.work / "artifacts"), "bench", "benchmark")
    request_file = args.work / "request.json"
    request_file.write_text(request.model_dump_json())
    log(f"table: {args.rows:,} rows ({spec.name} shape), params {params.model_dump_json(include={'batch_size', 'hidden', 'epochs'})}")

    reader = reader_rows_per_s(request, spec, args.repeat)
    results = [run(variant, request_file, args.work) for _ in range(args.repeat) for variant in ("single", "single-1t", "ddp2")]
    median = {v: statistics.median([x for r in results if r["variant"] == v for x in r["rows_per_s"]]) for v in ("single", "single-1t", "ddp2")}
    summary = {
        "median_rows_per_s": median,
        "ddp2_vs_single": round(median["ddp2"] / median["single"], 3),
        "ddp2_vs_single_1thread": round(median["ddp2"] / median["single-1t"], 3),
        "reader_rows_per_s": statistics.median(reader),
    }
    log(json.dumps(summary))
    if args.out:
        machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        args.out.write_text(json.dumps({"rows": args.rows, "epochs": args.epochs, "machine": machine, "runs": results, "summary": summary}, indent=2))
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
