"""Training benchmarks: throughput, memory, Pipes overhead and resume cost of ``python -m aiflow.train``.

    .venv/bin/python -m benchmarks.train_bench [--cache /tmp/aiflow-bench-cache] [--out benchmarks/results/train.json]

1. throughput: the real entrypoint (standalone mode, a fresh process) on the demo replicated three times
   (``benchmarks.data`` 1m scale: 1,010,328 flights through the real data plane; split at Oct 1 / Nov 15
   of the last year, so ~0.93M training rows), default params (batch 2048, MLP 128-64), rows/s per epoch;
   plus the streaming reader alone (one shuffled pass, no model);
2. memory: peak RSS of that process (VmHWM, polled), and of the same run capped at 100k training rows:
   streaming keeps the two close;
3. Pipes overhead: the same small request (ten demo days) materialized by Dagster through
   ``SubprocessTrainingLauncher`` vs an asset calling ``train()`` in-process (warm: imports done);
   interleaved, medians; ratio of the step bodies and of the whole ``materialize`` calls; plus the bare
   startup of a training process (imports and the optimizer's first-use import of ``torch._dynamo``);
4. resume: 6 epochs on 200k rows of the 1M table, SIGKILLed once its checkpoint shows epoch 3 and
   started again, vs the same run uninterrupted (ratio of wall times; weights compared);
5. CUDA: the throughput run again on the GPU when one is present.

The machine is shared: the load average and the CPU other processes used are recorded per measurement.
"""

from __future__ import annotations

import os

# as the entrypoint does: the in-process side of the Pipes comparison must not pay for spinning OpenMP workers
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime as dt
import io
import json
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import yaml

from aiflow.data.demo import write_landing
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.spec import demo_spec_path, parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from aiflow.train.contract import TrainParams, TrainRequest
from benchmarks.data import ensure_scale

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(epochs=3, batch_size=256, hidden=[32, 16], embedding_dim=4, baseline_max_rows=2000)


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def make_spec(valid_from: str, test_from: str):
    data = yaml.safe_load(demo_spec_path().read_text())
    data["split"] = {"kind": "time", "valid_from": valid_from, "test_from": test_from}
    return parse_spec(data, "flights (benchmark split)")


def last_event_year(flights: Path) -> int:
    """Year of the latest event time in the landing zone (the file names follow the ``year`` column)."""
    last = max(flights.glob("*.csv"))
    return int(pl.read_csv(last, columns=["time_hour"])["time_hour"].min()[:4])


def build_lake(root: Path, landing: Path, spec) -> tuple[Lake, float]:
    """The real data plane (ingest, silver, features) into ``root``; reused when built for the same split."""
    marker, lake = root / ".complete", Lake(root / "lake")
    built_for = spec.split.model_dump_json()
    if marker.exists() and marker.read_text() == built_for:
        return lake, 0.0
    shutil.rmtree(root / "lake", ignore_errors=True)
    start = time.perf_counter()
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    for table in reversed(spec.tables):  # side tables first
        refresh_silver(lake, table)
    refresh_features(lake, spec)
    marker.write_text(built_for)
    return lake, time.perf_counter() - start


def request_for(lake: Lake, spec, artifacts: Path, key: str, **params) -> TrainRequest:
    """A request for the network alone (what these figures measure); the families are compared in ``benchmarks.families``."""
    params.setdefault("families", ["pytorch"])
    features = Tables.features(spec.name)
    version = lake.version(features)
    state = [int(v) for c, v in lake.commit_metadata(features, "state_version") if c <= version][-1]
    return TrainRequest(
        model_name=spec.name, features_uri=lake.uri(features), data_version=version, state_uri=lake.uri(Tables.feature_state(spec.name)),
        state_version=state, spec=spec.model_dump(mode="json"), params=TrainParams(**params), artifact_root=str(artifacts),
        checkpoint_key=key, reason="benchmark",
    )  # fmt: skip


def _busy() -> float:
    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def checkpoint_epoch(path: Path) -> int:
    import torch

    try:
        return torch.load(io.BytesIO(path.read_bytes()), weights_only=True)["epoch"] if path.exists() else 0
    except Exception:
        return 0


def peak_rss(pid: int) -> int | None:
    """VmHWM (peak resident set) of a live process, bytes.

    Not ``wait4``'s ``ru_maxrss``: Linux carries the parent's RSS at fork/exec into the child's maximum.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def run_entrypoint(request: TrainRequest, work: Path, kill_at_epoch: int | None = None) -> dict:
    """``python -m aiflow.train --request`` in a fresh process: wall time, peak RSS (polled), CPU of others, log."""
    work.mkdir(parents=True, exist_ok=True)
    request_file, result_file, log_file = work / "request.json", work / "result.json", work / f"{request.checkpoint_key}-{time.time_ns()}.log"
    request_file.write_text(request.model_dump_json())
    result_file.unlink(missing_ok=True)
    checkpoint = Path(request.artifact_root) / request.model_name / "checkpoints" / request.checkpoint_key / "last.pt"
    busy0, load0, start = _busy(), os.getloadavg(), time.perf_counter()
    with log_file.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aiflow.train", "--request", str(request_file), "--result", str(result_file)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        peak, killed = 0, False
        while True:  # wait4 with WNOHANG: reaps the child itself, so poll() must not
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, peak_rss(proc.pid) or 0)  # VmHWM only grows: the last reading is the peak (within 0.1 s)
            if kill_at_epoch is not None and not killed and checkpoint_epoch(checkpoint) >= kill_at_epoch:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    own_cpu = usage.ru_utime + usage.ru_stime
    text = log_file.read_text()
    if kill_at_epoch is None and proc.returncode != 0:
        raise RuntimeError(f"training failed; log {log_file}:\n{text[-3000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak / 1024**2, 1),
        "cpu_s": round(own_cpu, 2),
        "other_processes_cpu_share": round(max(0.0, _busy() - busy0 - own_cpu) / (wall * (os.cpu_count() or 1)), 3),
        "loadavg_before": [round(x, 2) for x in load0],
        "epoch_rows_per_s": [float(v.replace(",", "")) for v in re.findall(r" rows/s=([\d,]+)", text)],
        "result": json.loads(result_file.read_text()) if result_file.exists() else None,
        "log": str(log_file),
    }


def bench_loader(request: TrainRequest) -> dict:
    from aiflow.train.data import FeatureData

    data = FeatureData(request, parse_spec(request.spec))
    start, rows = time.perf_counter(), 0
    for batch in data.batches("train", request.params.batch_size, epoch=1):
        rows += len(batch)
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}


STARTUP = (
    "import time; t = time.perf_counter(); import aiflow.train.__main__, torch; "
    "torch.optim.AdamW([torch.zeros(1, requires_grad=True)]); print(time.perf_counter() - t)"
)


def bench_startup(repeat: int) -> dict:
    """What a fresh training process pays before its first batch: imports plus torch.optim's lazy torch._dynamo import."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    runs = [float(subprocess.run([sys.executable, "-c", STARTUP], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout)
            for _ in range(repeat)]  # fmt: skip
    return {"median_s": round(statistics.median(runs), 2), "runs": [round(r, 2) for r in runs]}


def bench_pipes(request: TrainRequest, repeat: int) -> dict:
    """Materialize the same small training in-process and through Pipes, interleaved."""
    from dagster import DagsterInstance, MaterializeResult, asset, materialize

    from aiflow.train.loop import train
    from resources.training import SubprocessTrainingLauncher

    body: dict[str, float] = {}

    def run(kind: str, key: str) -> tuple[float, float]:
        req = request.model_copy(update={"checkpoint_key": key})  # a fresh key: a full run, not a resume

        @asset(name="candidate")
        def candidate(context):
            start = time.perf_counter()
            if kind == "pipes":
                out = SubprocessTrainingLauncher().launch(context, req).get_materialize_result()
            else:
                out = MaterializeResult(metadata={"valid_roc_auc": train(req, log=context.log.info).metrics["roc_auc"]})
            body["s"] = time.perf_counter() - start
            return out

        start = time.perf_counter()
        assert materialize([candidate], instance=DagsterInstance.ephemeral()).success
        return time.perf_counter() - start, body["s"]

    run("inprocess", "warmup")  # imports torch, sklearn, dynamo once: the in-process side is measured warm
    runs: dict[str, list[tuple[float, float]]] = {"inprocess": [], "pipes": []}
    for i in range(repeat):
        for kind in runs:
            runs[kind].append(run(kind, f"{kind}-{i}-{time.time_ns()}"))
            log(f"  {kind} {i + 1}/{repeat}: materialize {runs[kind][-1][0]:.2f}s, step body {runs[kind][-1][1]:.2f}s")
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()}
    return {
        "repeat": repeat,
        "inprocess_step_s": round(med["inprocess"][1], 2),
        "pipes_step_s": round(med["pipes"][1], 2),
        "step_ratio": round(med["pipes"][1] / med["inprocess"][1], 2),
        "inprocess_materialize_s": round(med["inprocess"][0], 2),
        "pipes_materialize_s": round(med["pipes"][0], 2),
        "materialize_ratio": round(med["pipes"][0] / med["inprocess"][0], 2),
        "pipes_extra_s": round(med["pipes"][1] - med["inprocess"][1], 2),
        "runs": {k: [[round(a, 2), round(b, 2)] for a, b in v] for k, v in runs.items()},
    }


def bench_resume(lake: Lake, spec, work: Path, epochs: int, rows: int) -> dict:
    params = dict(epochs=epochs, patience=epochs, max_train_rows=rows)
    straight = run_entrypoint(request_for(lake, spec, work / "artifacts", f"straight-{time.time_ns()}", **params), work)
    key = f"resumed-{time.time_ns()}"
    request = request_for(lake, spec, work / "artifacts", key, **params)
    killed = run_entrypoint(request, work, kill_at_epoch=epochs // 2)
    saved = checkpoint_epoch(work / "artifacts" / spec.name / "checkpoints" / key / "last.pt")
    resumed = run_entrypoint(request, work)
    total = killed["wall_s"] + resumed["wall_s"]
    return {
        "epochs": epochs, "train_rows": rows, "killed_after_epoch": saved, "signal": "SIGKILL",
        "uninterrupted_s": straight["wall_s"], "killed_run_s": killed["wall_s"], "resumed_run_s": resumed["wall_s"],
        "interrupted_total_s": round(total, 2), "ratio_total_vs_uninterrupted": round(total / straight["wall_s"], 2),
        "ratio_resumed_only_vs_uninterrupted": round(resumed["wall_s"] / straight["wall_s"], 2),
        "resumed_from_epoch": resumed["result"]["resumed_from_epoch"],
        "same_weights_as_uninterrupted": resumed["result"]["bundle_files"]["weights.pt"] == straight["result"]["bundle_files"]["weights.pt"],
    }  # fmt: skip


def summary(run: dict) -> dict:
    result = run["result"]
    return {
        "rows_train": result["rows_train"], "rows_valid": result["rows_valid"], "epochs": result["epochs_run"],
        "epoch_rows_per_s": run["epoch_rows_per_s"], "median_rows_per_s": statistics.median(run["epoch_rows_per_s"]),
        "wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"], "cpu_s": run["cpu_s"],
        "other_processes_cpu_share": run["other_processes_cpu_share"], "loadavg_before": run["loadavg_before"],
        "valid_roc_auc": round(result["family_metrics"]["pytorch"]["roc_auc"], 4), "naive_roc_auc": round(result["naive_metrics"]["roc_auc"], 4),
        "device": result["device"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/aiflow-bench-cache"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train.json")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of the 1M-row throughput run.")
    parser.add_argument("--repeat", type=int, default=5, help="Repetitions of the Pipes-overhead pair.")
    args = parser.parse_args()
    import torch

    work = args.cache / "train-bench"
    shutil.rmtree(work / "runs", ignore_errors=True)
    report: dict = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                    "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1)},
        "command": ".venv/bin/python -m benchmarks.train_bench " + " ".join(sys.argv[1:]),
    }  # fmt: skip

    log("data: the 1m landing scale through the real data plane (cached)")
    scale = ensure_scale(args.cache, "1m")
    last_year = last_event_year(Path(scale["zone"]) / "flights")
    big_spec = make_spec(f"{last_year}-10-01", f"{last_year}-11-15")
    big, seconds = build_lake(work / "lake-1m", Path(scale["zone"]), big_spec)
    small_spec = make_spec("2013-01-07", "2013-01-09")
    if not (work / "landing-10d" / "flights").exists():
        write_landing(work / "landing-10d", days=10)
    small, _ = build_lake(work / "lake-10d", work / "landing-10d", small_spec)
    report["data"] = {"features_rows": big.scan(Tables.features("flights")).select(pl.len()).collect().item(),
                      "data_plane_s": round(seconds, 1) if seconds else None, "lake_from_cache": not seconds,
                      "split": big_spec.split.model_dump(mode="json")}  # fmt: skip
    runs = work / "runs"

    log(f"throughput: {args.epochs} epochs on the full table (fresh process)")
    full = run_entrypoint(request_for(big, big_spec, runs / "artifacts", "full", epochs=args.epochs, patience=args.epochs), runs)
    report["throughput_cpu"] = summary(full)
    log(f"  {report['throughput_cpu']}")
    log("streaming reader alone: one shuffled pass over the training split")
    report["loader_only"] = bench_loader(request_for(big, big_spec, runs / "artifacts", "loader"))
    log(f"  {report['loader_only']}")
    log("memory: the same run capped at 100k training rows")
    capped = run_entrypoint(request_for(big, big_spec, runs / "artifacts", "capped", epochs=1, max_train_rows=100_000), runs)
    report["memory"] = {"full_rows_train": full["result"]["rows_train"], "full_peak_rss_mb": full["peak_rss_mb"],
                        "capped_rows_train": capped["result"]["rows_train"], "capped_peak_rss_mb": capped["peak_rss_mb"]}  # fmt: skip
    log(f"  {report['memory']}")
    log("pipes overhead: ten demo days, materialized in-process vs through PipesSubprocessClient")
    report["pipes_overhead"] = bench_pipes(request_for(small, small_spec, runs / "artifacts", "x", **SMALL), args.repeat)
    log(f"  {report['pipes_overhead']}")
    report["pipes_overhead"]["entrypoint_startup"] = bench_startup(args.repeat)
    log(f"  entrypoint startup (imports + optimizer init): {report['pipes_overhead']['entrypoint_startup']}")
    log("resume: killed after half the epochs, started again, vs uninterrupted")
    report["resume"] = bench_resume(big, big_spec, runs / "resume", epochs=6, rows=200_000)
    log(f"  {report['resume']}")
    if torch.cuda.is_available():
        log("cuda: the throughput run on the GPU")
        gpu = run_entrypoint(request_for(big, big_spec, runs / "artifacts", "gpu", epochs=args.epochs, device="cuda"), runs)
        report["throughput_cuda"] = summary(gpu)
    else:
        report["throughput_cuda"] = None
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
