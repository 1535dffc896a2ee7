"""DDP training (aiflow.train.distributed): the torchrun environment, sharding and loss scaling on real data, and REAL
``torchrun --nproc-per-node=2`` (gloo, CPU) workers: a rank killed with SIGKILL fails the run, the rerun through Dagster
Pipes resumes from rank 0's checkpoint, reports once, and matches single-process training."""

# No `from __future__ import annotations`: Dagster reads the asset's annotations at definition time.
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from dagster import AssetExecutionContext, DagsterInstance, PipesSubprocessClient, asset, materialize

from aiflow.models.network import ModelConfig, TabularModel, loss_function, to_target
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Lake
from aiflow.train.contract import TrainParams, TrainRequest
from aiflow.train.distributed import Cluster, Group, detect, loss_divisor, shard, torchrun_args
from aiflow.train.loop import train
from aiflow.train.request import pinned_request
from resources.training import TrainingLauncher
from tests.aiflow.train.test_baseline import regression_spec, write_features

TORCHRUN = str(Path(sys.executable).parent / "torchrun")  # the venv's, next to its python
#: dropout 0: with dropout each rank draws masks for its half of the batch, which no single process reproduces.
DDP_PARAMS = dict(epochs=3, batch_size=256, hidden=[16], embedding_dim=4, dropout=0.0, patience=3, families=["pytorch"])
#: DDP on 2 ranks vs 1 process, same seeds, global batch = the single batch: the gradients are equal up to the order
#: of float32 sums (two half-batch sums all-reduced vs one sum), ~1e-7 relative per step; after 3 epochs of AdamW the
#: metrics measured differ by ~1e-9. 1e-5 leaves room for other BLAS kernels yet fails on any real difference (a
#: wrong loss scale or a duplicated shard moves them by 1e-3 or more).
TOLERANCE = 1e-5


# ------------------------------------------------------------------------------------------- environment


TORCHRUN_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_detect_reads_the_torchrun_environment():
    assert detect(TORCHRUN_ENV) == Cluster(rank=1, world_size=2, local_rank=1, master_addr="127.0.0.1", master_port=29500)
    assert not detect(TORCHRUN_ENV).is_main and detect({**TORCHRUN_ENV, "RANK": "0", "LOCAL_RANK": "0"}).is_main
    assert detect({}) is None  # a plain process: trained exactly as before
    assert detect({**TORCHRUN_ENV, "RANK": "0", "WORLD_SIZE": "1"}) is None  # torchrun with one process: no group


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MASTER_PORT": ""}, "MASTER_PORT not set"),
        ({"LOCAL_RANK": "one"}, "LOCAL_RANK='one' is not an integer"),
        ({"RANK": "2"}, r"RANK=2 is not in \[0, WORLD_SIZE=2\)"),
    ],
)
def test_a_broken_torchrun_environment_names_the_variable(change, message):
    with pytest.raises(ValueError, match=message):
        detect({**TORCHRUN_ENV, **change})


def test_torchrun_arguments_for_one_node_and_for_several():
    assert torchrun_args(4) == ["torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=4"]
    assert torchrun_args(8, nnodes=2, rdzv_endpoint="train-0.aiflow:29400", rdzv_id="run-1")[1:] == [
        "--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d", "--rdzv-endpoint=train-0.aiflow:29400", "--rdzv-id=run-1",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="needs rdzv_endpoint"):
        torchrun_args(8, nnodes=2)


# ------------------------------------------------------------------ sharding + loss scale = the single gradient


def _gradients(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("shape", ["classification", "regression"])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_with_the_scaled_loss_average_to_the_single_process_gradient(tiny_spec, tmp_path, shape, world):
    """What DDP computes (each rank's gradient on its shard, averaged) equals the one-process gradient, batch by batch."""
    spec = tiny_spec if shape == "classification" else regression_spec()
    data = write_features(tmp_path, spec, "numeric")
    inputs = data.inputs
    config = ModelConfig(shape, inputs.categorical, inputs.cardinalities, inputs.numeric, hidden=[8], embedding_dim=4, dropout=0.0,
                         target=inputs.target, target_mean=20.0, target_std=10.0)  # fmt: skip
    torch.manual_seed(0)
    model, loss_fn = TabularModel(config), loss_function(shape)

    def backward(batch, divisor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        cat, num, y = (torch.from_numpy(a) for a in batch)
        (loss_fn(model(cat, num), to_target(y, config)) / divisor).backward()
        return _gradients(model)

    groups = [Group(Cluster(rank, world, rank, "127.0.0.1", 1), "gloo", torch.device("cpu")) for rank in range(world)]
    batches = list(data.batches("train", 100, epoch=1))
    tail = batches[-1].take(slice(0, world - 1))  # a last batch smaller than the world: one rank gets no rows
    for batch in [*batches[:3], tail]:
        single = backward(batch, loss_divisor(None, len(batch), len(batch)))
        shards = [next(shard(iter([batch]), group)) for group in groups]
        assert sorted(row for s, _ in shards for row in s.y.tolist()) == sorted(batch.y.tolist())  # every row, once
        per_rank = [backward(part, loss_divisor(group, len(part), n)) for (part, n), group in zip(shards, groups, strict=True)]
        averaged = [torch.stack(grads).mean(0) for grads in zip(*per_rank, strict=True)]  # what DDP's all-reduce makes
        for a, b in zip(averaged, single, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------ real torchrun workers (gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> list[str]:
    port = _free_port()
    launcher = ["--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--monitor-interval=0.2"]
    return [TORCHRUN, *launcher, "-m", "aiflow.train", *args]


#: gloo on loopback only; one OpenMP thread per rank (what torchrun sets anyway), quiet about it.
WORKER_ENV = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def _epoch(checkpoint: Path) -> int:
    return torch.load(io.BytesIO(checkpoint.read_bytes()), weights_only=True)["epoch"] if checkpoint.exists() else 0


def _rank_process(agent: subprocess.Popen, rank: int, deadline: float) -> psutil.Process:
    """The torchrun worker process of ``rank`` (by its RANK variable)."""
    while time.monotonic() < deadline:
        for child in psutil.Process(agent.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank):
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.05)
    raise AssertionError(f"no torchrun worker with RANK={rank}")


def _pipes_asset(command: list[str], request: TrainRequest, messages: list):
    @asset(name="candidate")
    def candidate(context: AssetExecutionContext):
        """Trains through Pipes with the entrypoint under torchrun (two gloo ranks)."""
        invocation = PipesSubprocessClient().run(
            context=context, command=command, extras=TrainingLauncher.extras(request), env=WORKER_ENV
        )
        messages.extend(invocation.get_custom_messages())
        return invocation.get_materialize_result()

    return candidate


@pytest.fixture
def regression_request(tmp_path) -> tuple[DatasetSpec, TrainRequest]:
    """The tiny regression shape (column names, target and loss unlike the demo) as a real Delta table."""
    spec = regression_spec()
    write_features(tmp_path, spec, "numeric")
    request = pinned_request(Lake(tmp_path / "lake"), spec, TrainParams(**DDP_PARAMS), str(tmp_path / "artifacts"), "ddp", "test")
    return spec, request


@pytest.mark.slow  # two torchrun launches (each: the agent, then two ranks importing torch): ~35-60 s on the shared 2 cores
def test_killed_rank_fails_the_run_and_the_rerun_resumes_through_pipes_matching_one_process(regression_request, tmp_path):
    spec, request = regression_request
    request_file = tmp_path / "request.json"
    request_file.write_text(request.model_dump_json())
    checkpoint = tmp_path / "artifacts" / spec.name / "checkpoints" / request.checkpoint_key / "last.pt"
    log = tmp_path / "killed.log"
    # every epoch pauses 30 s after its checkpoint: the run waits at epoch 1 until the kill
    env = {**os.environ, **WORKER_ENV, "AIFLOW_TRAIN_EPOCH_SLEEP": "30"}
    with log.open("w") as out:
        agent = subprocess.Popen(_torchrun("--request", str(request_file), "--result", str(tmp_path / "result.json")),
                                 stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        # meanwhile (torchrun and its ranks start for seconds): the same request in one process, under another key
        single = train(request.model_copy(update={"checkpoint_key": "single"}), log=lambda _: None)
        shutil.rmtree(tmp_path / "artifacts" / spec.name / "candidates")  # only the DDP run's bundle below
        deadline = time.monotonic() + 90
        rank1 = _rank_process(agent, 1, deadline)
        while _epoch(checkpoint) < 1 and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.poll() is None, log.read_text()
        rank1.send_signal(signal.SIGKILL)
        assert agent.wait(timeout=60) != 0, log.read_text()  # torchrun tore the group down: the run failed
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    saved = _epoch(checkpoint)
    assert 1 <= saved < DDP_PARAMS["epochs"], log.read_text()
    assert not (tmp_path / "result.json").exists() and not (tmp_path / "artifacts" / spec.name / "candidates").exists()

    # the rerun, launched by Dagster through Pipes: rank 0 reports once, rank 1 reads the context only
    messages: list = []
    instance = DagsterInstance.ephemeral()
    run = materialize([_pipes_asset(_torchrun(), request, messages)], instance=instance, raise_on_error=False)
    logs = [e.user_message for e in instance.all_logs(run.run_id)]
    assert run.success, "\n".join(logs)
    [materialization] = run.asset_materializations_for_node("candidate")
    assert len(messages) == 1  # one TrainResult, from rank 0
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert (meta["resumed_from_epoch"], meta["epochs_run"], meta["rows_train"]) == (saved, DDP_PARAMS["epochs"], single.rows_train)
    assert any(f"resuming from {tmp_path}" in line and f"after epoch {saved}" in line for line in logs)
    assert not any("[rank 1]" in line for line in logs)  # the other rank's log stays in the process output

    for name in ("rmse", "mae", "loss", "train_loss"):
        assert meta[f"valid_{name}" if name != "train_loss" else name] == pytest.approx(single.metrics[name], abs=TOLERANCE), name
    assert single.metrics["rmse"] < single.naive_metrics["rmse"] - 1.0  # a model that learned, not two equal constants
