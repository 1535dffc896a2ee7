"""Model families on the demo: training time, validation and test metric, size, load time and predictions/s, per family.

    .venv/bin/python -m benchmarks.families [--days 365] [--max-train-rows N] [--cache /tmp/aiflow-bench-cache]
                                            [--out benchmarks/results/families.json]

The demo (``aiflow.data.demo.write_landing``, the whole year unless ``--days``) goes through the real data plane
(ingest, silver, features; cached between runs) with the demo spec's own split; each family is trained alone
through the engine's loop (``aiflow.train.loop.train`` in this process, default hyperparameters, ``families=[f]``);
its bundle is then loaded through the one interface (``load_bundle``: verify every file, deserialise) and scored
on features rows by the one encoder:

* training time: the ``train()`` call (reads the pinned rows, fits, writes the bundle); the network runs its
  epochs with early stopping, scikit-learn fits HistGradientBoosting on ``baseline_max_rows`` sampled rows;
* validation metric: what training reported on the validation window; test metric: the loaded bundle on the
  test window (the held-out rows the gates judge);
* size: the bundle's files on disk (and the model file alone);
* load time: ``load_bundle`` median of ``--repeat`` loads, warm (imports done; the first load shown apart);
* predictions/s: one features row at a time (the online path's shape) and 10k-row batches.

Every figure is also given as a ratio of scikit-learn to the network measured in the same run.
No ONNX export exists yet (skops is the scikit-learn format; see aiflow/models/families.py), so there
is no ONNX-vs-native column.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the training entrypoint does

import argparse
import datetime as dt
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import yaml

from aiflow.data.demo import write_landing
from aiflow.evaluation.metrics import PRIMARY, compute_metrics
from aiflow.evaluation.validation import held_out_rows
from aiflow.models.bundle import load_bundle
from aiflow.spec import demo_spec_path, parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams
from aiflow.train.loop import train
from aiflow.train.request import pinned_request
from benchmarks.train_bench import build_lake

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("pytorch", "sklearn")


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def per_second(fn, units: int, seconds: float = 3.0, at_least: int = 3) -> float:
    """Units per second of ``fn`` (called repeatedly for about ``seconds``, at least ``at_least`` times)."""
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while calls < at_least or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls * units / (time.perf_counter() - start)


def bench_family(lake: Lake, spec, family: str, artifacts: Path, max_train_rows: int | None, repeat: int, test: pl.DataFrame) -> dict:
    params = TrainParams(families=[family], max_train_rows=max_train_rows)
    request = pinned_request(lake, spec, params, str(artifacts), f"bench-{family}-{time.time_ns()}", "benchmark")
    busy0, load0 = psutil.cpu_times(), os.getloadavg()
    start = time.perf_counter()
    result = train(request, log=lambda line: log(f"  {family}: {line}"))
    train_s = time.perf_counter() - start
    busy1 = psutil.cpu_times()
    store = ArtifactStore(artifacts)
    folder = Path(result.artifact_uri)
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    model_file = "weights.pt" if family == "pytorch" else "model.skops"

    first = time.perf_counter()
    model = load_bundle(store, result.artifact_uri, result.artifact_sha256, result.bundle_files)
    first_load_s = time.perf_counter() - first
    loads = []
    for _ in range(repeat):
        t = time.perf_counter()
        load_bundle(store, result.artifact_uri, result.artifact_sha256, result.bundle_files)
        loads.append(time.perf_counter() - t)

    metric, _ = PRIMARY[spec.problem_type]
    test_metrics = compute_metrics(test[spec.target.name].to_numpy(), model.predict(test), spec.problem_type)
    one = test.head(1)
    batch = pl.concat([test] * (10_000 // test.height + 1)).head(10_000)
    return {
        "family": family,
        "rows_train": result.rows_train, "rows_valid": result.rows_valid, "rows_test": test.height,
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "train_s": round(train_s, 2),
        "cpu_share_of_machine_during_training": round(_busy_share(busy0, busy1), 2), "loadavg_before": load0[0],
        f"valid_{metric}": round(result.metrics[metric], 4), f"test_{metric}": round(test_metrics[metric], 4),
        f"naive_{metric}": round(result.naive_metrics[metric], 4),
        "bundle_bytes": sum(sizes.values()), "model_file_bytes": sizes[model_file], "files": sizes,
        "first_load_ms": round(first_load_s * 1000, 1), "load_ms_median": round(statistics.median(loads) * 1000, 2),
        "single_row_predictions_per_s": round(per_second(lambda: model.predict(one), 1)),
        "batch_10k_rows_per_s": round(per_second(lambda: model.predict(batch), batch.height)),
    }  # fmt: skip


def _busy_share(before, after) -> float:
    """Share of the machine's CPU time that was busy (all processes) between two ``psutil.cpu_times()``."""
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    busy = sum(getattr(after, f, 0.0) - getattr(before, f, 0.0) for f in fields)
    idle = sum(getattr(after, f, 0.0) - getattr(before, f, 0.0) for f in ("idle", "iowait"))
    return busy / max(busy + idle, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/aiflow-bench-cache"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "families.json")
    parser.add_argument("--days", type=int, default=None, help="Demo days to land (default: the whole year).")
    parser.add_argument("--max-train-rows", type=int, default=None, help="Cap the network's training rows (default: all).")
    parser.add_argument("--repeat", type=int, default=5, help="Loads timed per family.")
    parser.add_argument("--split", nargs=2, metavar=("VALID_FROM", "TEST_FROM"), help="Another split (with --days: inside them).")
    args = parser.parse_args()
    import sklearn
    import torch

    work = args.cache / "families"
    landing = work / f"landing-{args.days or 'year'}"
    if not (landing / "flights").exists():
        log(f"landing the demo ({args.days or 365} days)")
        write_landing(landing, days=args.days)
    data = yaml.safe_load(demo_spec_path().read_text())
    if args.split:
        data["split"] = {"kind": "time", "valid_from": args.split[0], "test_from": args.split[1]}
    spec = parse_spec(data, "flights (demo)")
    lake, seconds = build_lake(work / f"lake-{args.days or 'year'}", landing, spec)
    log(f"data plane: {'cached' if not seconds else f'{seconds:.0f} s'}")
    features = Tables.features(spec.name)
    test = held_out_rows(lake.uri(features), lake.version(features), spec)
    artifacts = work / "artifacts"
    shutil.rmtree(artifacts, ignore_errors=True)

    report: dict = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": ".venv/bin/python -m benchmarks.families " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "sklearn": sklearn.__version__, "cuda": torch.cuda.is_available()},
        "data": {"features_rows": lake.scan(features).select(pl.len()).collect().item(), "split": spec.split.model_dump(mode="json"),
                 "max_train_rows": args.max_train_rows},
        "families": {},
    }  # fmt: skip
    for family in FAMILIES:
        log(f"family {family}")
        report["families"][family] = figures = bench_family(lake, spec, family, artifacts, args.max_train_rows, args.repeat, test)
        log(f"  {json.dumps({k: v for k, v in figures.items() if k != 'files'})}")
    net, trees = report["families"]["pytorch"], report["families"]["sklearn"]
    ratio_keys = ["train_s", "bundle_bytes", "model_file_bytes", "load_ms_median", "single_row_predictions_per_s", "batch_10k_rows_per_s"]
    report["ratio_sklearn_to_pytorch"] = {k: round(trees[k] / net[k], 2) for k in ratio_keys}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    log(f"ratios sklearn/pytorch: {report['ratio_sklearn_to_pytorch']}")
    log(f"written {args.out}")


if __name__ == "__main__":
    main()
