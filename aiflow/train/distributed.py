"""Data-parallel training under ``torchrun``: one process per GPU (or per CPU slot with ``gloo``), one model.

``torchrun --nproc-per-node=N -m aiflow.train`` starts N copies of the entrypoint with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`detect` reads them
(no such variables, or ``WORLD_SIZE=1``: a plain single process, trained exactly as before).

What each rank does (see :mod:`aiflow.train.loop`):

* **Process group**: ``nccl`` when the run uses CUDA (each rank on ``cuda:LOCAL_RANK``), else
  ``gloo`` on the CPU (:func:`process_group`). Every rank seeds torch identically, and
  ``DistributedDataParallel`` broadcasts rank 0's initial weights, so all replicas start equal.
* **Shards**: every rank opens the same pinned Delta version and walks the same seeded, shuffled
  global mini-batches of ``batch_size`` rows; rank ``r`` trains on rows ``r, r+W, r+2W, ...`` of each
  (:func:`shard`). Each rank therefore *reads and decodes every row and keeps 1/W*: the reader's
  shuffle buffer spans files, so reading only a rank's rows cheaply would change the batches; the
  cost is I/O and decoding repeated W times, not memory (the buffer bounds it). In exchange the
  global batch is exactly the single-process batch, and with the loss scaled by ``W / global rows``
  DDP's gradient average equals the single-process gradient (see :func:`loss_divisor`).
* **Validation and early stopping**: rank 0 validates (on the unwrapped model: a DDP forward would
  wait for the other ranks) and broadcasts the loss and metrics (:func:`broadcast`), so every rank
  takes the same early-stopping decision from the same numbers.
* **Writes**: only rank 0 saves checkpoints, fits the scikit-learn family, builds the reference and
  writes the bundle. Every rank restores the checkpoint (read only) on resume.
* **End**: a barrier (the other ranks wait for rank 0's bundle), then the group is destroyed.

A killed rank makes ``torchrun`` stop the others (the run fails); a rerun with the same
``checkpoint_key`` resumes from rank 0's last checkpoint.

Multi-node: the same code runs across nodes (``--nnodes=M --rdzv-backend=c10d
--rdzv-endpoint=HOST:PORT``, :func:`torchrun_args`); what a cluster must add (one pod per node and
a reachable rendezvous) is the launcher's concern, see :mod:`resources.k8s_training`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from aiflow.models.network import pick_device

#: Variables torchrun sets for every worker.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Seconds a collective waits for the slowest rank (rank 0 alone writes the bundle while the others
#: wait at the final barrier, which can take minutes on a large table). Overridable from the environment.
TIMEOUT_ENV = "AIFLOW_DDP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Cluster:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and the bundle and talks to Dagster."""
        return self.rank == 0


def detect(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The torchrun environment of this process, or None for a plain single process.

    ``WORLD_SIZE=1`` (``torchrun --nproc-per-node=1``) is a single process too: no group is created.

    Raises:
        ValueError: some torchrun variables are set and others missing or malformed (named).
    """
    env = os.environ if environ is None else environ
    present = [name for name in TORCHRUN_VARS if env.get(name)]
    if "WORLD_SIZE" not in present and "RANK" not in present:
        return None
    missing = [name for name in TORCHRUN_VARS if name not in present]
    if missing:
        raise ValueError(f"torchrun environment incomplete: {', '.join(missing)} not set (launch with torchrun)")
    values: dict[str, int] = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        try:
            values[name] = int(env[name])
        except ValueError:
            raise ValueError(f"torchrun environment: {name}={env[name]!r} is not an integer") from None
    if values["WORLD_SIZE"] < 1 or not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise ValueError(f"torchrun environment: RANK={values['RANK']} is not in [0, WORLD_SIZE={values['WORLD_SIZE']})")
    if values["WORLD_SIZE"] == 1:
        return None
    return Cluster(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], env["MASTER_ADDR"], values["MASTER_PORT"])


@dataclass(frozen=True)
class Group:
    """An initialised process group: the cluster, the backend and the device of this rank."""

    cluster: Cluster
    backend: str
    device: torch.device

    @property
    def rank(self) -> int:
        return self.cluster.rank

    @property
    def world_size(self) -> int:
        return self.cluster.world_size

    @property
    def is_main(self) -> bool:
        return self.cluster.is_main


def _timeout(environ: Mapping[str, str]) -> dt.timedelta:
    raw = environ.get(TIMEOUT_ENV)
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    return dt.timedelta(seconds=seconds)


@contextmanager
def process_group(cluster: Cluster, device_choice: str = "auto") -> Iterator[Group]:
    """Join the torchrun job: ``nccl`` on ``cuda:LOCAL_RANK`` when CUDA is used, else ``gloo`` on the CPU.

    On a normal exit every rank waits at a barrier (so no rank leaves while rank 0 still writes), then
    the group is destroyed; on an exception the group is destroyed without the barrier.

    Args:
        cluster: from :func:`detect`.
        device_choice: ``params.device`` (``auto``, ``cpu``, ``cuda``; see :func:`aiflow.models.network.pick_device`).
    """
    device = pick_device(device_choice)
    if device.type == "cuda":
        torch.cuda.set_device(cluster.local_rank)
        device, backend = torch.device("cuda", cluster.local_rank), "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, rank=cluster.rank, world_size=cluster.world_size, timeout=_timeout(os.environ))
    try:
        yield Group(cluster, backend, device)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, group: Group) -> DistributedDataParallel:
    """The model wrapped for data parallelism (gradients averaged across ranks at each backward).

    ``forward_sync_buffers=False``: the network has no buffers (LayerNorm, not BatchNorm) and nothing
    needs syncing at each forward; rank 0 validates the unwrapped model alone.
    """
    ids = [group.device.index] if group.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None, forward_sync_buffers=False)


def shard(batches: Iterator[Any], group: Group) -> Iterator[tuple[Any, int]]:
    """This rank's rows of each global mini-batch (rows ``rank::world_size``) and the global batch's size.

    Every rank iterates the same global batches, so every rank takes the same number of steps (DDP
    needs that); a rank may get zero rows of a last batch smaller than the world, and still steps.
    """
    for batch in batches:
        yield batch.take(slice(group.rank, None, group.world_size)), len(batch)


def loss_divisor(group: Group | None, local_rows: int, global_rows: int) -> float:
    """What a summed loss is divided by so that the gradient equals the single-process mean over the global batch.

    Single process: ``n`` (the batch). DDP averages the ranks' gradients, so each rank divides its sum
    by ``n / W`` (``n`` the global batch): ``(1/W) * sum_r (W/n) * grad_r = grad / n``.
    """
    if group is None:
        return local_rows
    return global_rows / group.world_size


def all_sum(values: Sequence[float], group: Group) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=group.device if group.backend == "nccl" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def broadcast(value: Any, group: Group) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object; the others pass None)."""
    box = [value if group.is_main else None]
    dist.broadcast_object_list(box, src=0, device=group.device if group.backend == "nccl" else None)
    return box[0]


def torchrun_args(
    nproc_per_node: int, *, nnodes: int = 1, rdzv_endpoint: str | None = None, rdzv_id: str | None = None
) -> list[str]:
    """The ``torchrun`` launcher's arguments (before ``-m aiflow.train``).

    One node: ``--standalone`` (a local rendezvous on a free port). Several nodes: every node runs the
    same command with a c10d rendezvous at ``rdzv_endpoint`` (``HOST:PORT`` reachable from every node,
    e.g. a headless Service in front of the first pod) under one ``rdzv_id`` (the run's id).

    Raises:
        ValueError: a count below 1, or several nodes without a rendezvous endpoint.
    """
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"torchrun needs at least one process and one node (nproc_per_node={nproc_per_node}, nnodes={nnodes})")
    if nnodes == 1:
        return ["torchrun", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc_per_node}"]
    if not rdzv_endpoint:
        raise ValueError(f"nnodes={nnodes}: a multi-node run needs rdzv_endpoint (HOST:PORT of the rendezvous every node reaches)")
    return [
        "torchrun", f"--nnodes={nnodes}", f"--nproc-per-node={nproc_per_node}", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id or 'aiflow-train'}",
    ]  # fmt: skip
