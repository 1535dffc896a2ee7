"""``python -m aiflow.train``: the training entrypoint. Imports only ``dagster_pipes`` and the engine.

**Pipes mode** (no arguments; launched by ``PipesSubprocessClient`` or a Kubernetes pod): the request
is read from the Pipes extras (``EXTRAS_KEY``), log lines go to Dagster, and the result comes back as

* a custom message holding the whole :class:`TrainResult` (for ops that are not asset steps), and
* on an asset step, an asset materialization: every metric (``valid_*``, ``train_loss``), the naive
  reference's (``naive_*``), every family's (``<family>_valid_*``), the candidate's family, run facts,
  lineage, the artifact URI and the bundle digest; its data version is the bundle digest.

Errors propagate: Pipes reports them and the process exits non-zero (no zero metric is ever reported); a
training error is first reported as a custom message under ``FAULT_KEY``, sorted as an infrastructure fault
(a store or the network did not answer: retried by the launcher) or not (:mod:`aiflow.storage.faults`).

**Standalone** (debugging, tests): ``python -m aiflow.train --request request.json [--result result.json]``
logs to stdout and writes the result JSON.

SIGTERM (pod eviction, run termination) becomes an exception, so Pipes reports it, and the process exits
with 143 (128 + SIGTERM); the last completed epoch's checkpoint is kept and a rerun with the same
``checkpoint_key`` resumes. ``AIFLOW_TRAIN_EPOCH_SLEEP``
(seconds) pauses after each epoch's checkpoint: a test hook to interrupt a run mid-way.

**Under torchrun** (``torchrun --nproc-per-node=N -m aiflow.train [...]``, see
:mod:`aiflow.train.distributed`): every rank reads the same request (Pipes extras or ``--request``)
and trains its shard with DistributedDataParallel. Only rank 0 opens the Pipes session, logs to
Dagster, reports the result and writes the ``--result`` file. The other ranks read the Pipes context
without opening a message channel (``open_dagster_pipes`` in every rank would send one ``opened`` /
``closed`` pair per rank on the same channel, and every report N times) and log to stderr, prefixed
``[rank R]``.
"""

from __future__ import annotations

import os

# Before torch and scikit-learn load their OpenMP runtimes: idle OpenMP workers sleep instead of spinning.
# On shared CPUs (a pod next to other work, the 2-core dev machines) spinning workers made torch training
# 2-4x and HistGradientBoosting 5-10x slower; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import datetime as dt
import json
import signal
import sys
import time
from pathlib import Path

from aiflow.storage.faults import classify
from aiflow.train.contract import EXTRAS_KEY, FAULT_KEY, TrainRequest, TrainResult, reported_metrics
from aiflow.train.distributed import Cluster, detect, process_group
from aiflow.train.loop import train

SLEEP_ENV = "AIFLOW_TRAIN_EPOCH_SLEEP"


class Terminated(Exception):
    """The process received SIGTERM."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated("received SIGTERM: training stopped; the last completed epoch's checkpoint is kept")


def _epoch_hook():
    seconds = float(os.environ.get(SLEEP_ENV) or 0)
    return (lambda epoch: time.sleep(seconds)) if seconds > 0 else None


def materialization_metadata(result: TrainResult) -> dict:
    """Pipes metadata of a training result (raw values, or ``{"raw_value", "type"}`` where the type matters)."""
    meta: dict = reported_metrics(result)
    resumed = result.resumed_from_epoch
    meta.update(
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        resumed_from_epoch={"raw_value": resumed, "type": "int"} if resumed is not None else {"raw_value": None, "type": "null"},
        device=result.device,
        rows_train=result.rows_train,
        rows_valid=result.rows_valid,
        wall_time_s=float(result.wall_time_s),
        artifact_uri={"raw_value": result.artifact_uri, "type": "url" if "://" in result.artifact_uri else "path"},
        artifact_sha256=result.artifact_sha256,
        family=result.family,
        features_uri=result.features_uri,
        data_version=result.data_version,
        params={"raw_value": result.params.model_dump(mode="json"), "type": "json"},
    )
    return meta


def _request_from_extras(extras: dict) -> TrainRequest:
    if EXTRAS_KEY not in extras:
        raise KeyError(f"the Pipes extras carry no {EXTRAS_KEY!r}: launch through resources.training")
    return TrainRequest.model_validate(extras[EXTRAS_KEY])


def _train(request: TrainRequest, log, cluster: Cluster | None) -> TrainResult | None:
    """Train in this process alone, or as one rank of the torchrun job (None on ranks other than 0)."""
    if cluster is None:
        return train(request, log=log, on_epoch_end=_epoch_hook())
    with process_group(cluster, request.params.device) as group:
        return train(request, log=log, on_epoch_end=_epoch_hook(), group=group)


def _rank_log(cluster: Cluster):
    return lambda message: print(f"{dt.datetime.now():%H:%M:%S} [rank {cluster.rank}] {message}", file=sys.stderr, flush=True)


def run_pipes() -> None:
    from dagster_pipes import PipesDefaultContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes

    params = PipesEnvVarParamsLoader()
    if not params.is_dagster_pipes_process():
        sys.exit("python -m aiflow.train: not launched through Dagster Pipes; run it with --request REQUEST.json")
    cluster = detect()
    if cluster is not None and not cluster.is_main:  # read the context only: rank 0 alone talks to Dagster
        with PipesDefaultContextLoader().load_context(params.load_context_params()) as data:
            request = _request_from_extras(data.get("extras") or {})
        _train(request, _rank_log(cluster), cluster)
        return
    with open_dagster_pipes() as pipes:
        request = _request_from_extras(pipes.extras)
        try:
            result = _train(request, pipes.log.info, cluster)
        except Terminated:  # the machine's doing: the launcher reads it from the exit code
            raise
        except Exception as exc:  # sorted here, where the stores are known; the launcher retries or fails on it
            fault = classify(exc, {"lake": request.features_uri, "artifacts": request.artifact_root})
            pipes.report_custom_message({FAULT_KEY: dataclasses.asdict(fault)})
            raise
        if result is None:  # rank 0 always returns the result; this would be an engine bug
            raise RuntimeError("training returned no result on rank 0")
        pipes.report_custom_message(result.model_dump(mode="json"))
        if pipes.is_asset_step:
            pipes.report_asset_materialization(metadata=materialization_metadata(result), data_version=result.artifact_sha256)


def _print(message: str) -> None:
    print(f"{dt.datetime.now():%H:%M:%S} {message}", flush=True)


def run_standalone(request_path: Path, result_path: Path | None) -> TrainResult | None:
    request = TrainRequest.model_validate_json(request_path.read_text())
    cluster = detect()
    if cluster is not None and not cluster.is_main:
        return _train(request, _rank_log(cluster), cluster)
    result = _train(request, _print, cluster)
    if result is None:
        raise RuntimeError("training returned no result on rank 0")
    text = result.model_dump_json(indent=2)
    if result_path:
        tmp = result_path.with_name(f".{result_path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, result_path)
    _print(f"result: {json.dumps(result.model_dump(mode='json'))}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aiflow.train", description=__doc__.split("\n")[0])
    parser.add_argument("--request", type=Path, help="Run standalone on this TrainRequest JSON file (no Dagster).")
    parser.add_argument("--result", type=Path, help="Standalone: write the TrainResult JSON here.")
    args = parser.parse_args(argv)
    if args.result and not args.request:
        parser.error("--result needs --request")
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.request:
            run_standalone(args.request, args.result)
        else:
            run_pipes()
    except Terminated as exc:  # already reported through Pipes; exit as a process killed by SIGTERM would
        print(f"python -m aiflow.train: {exc}", file=sys.stderr, flush=True)
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
