"""Checkpoints: the whole training state after every epoch, so a killed run resumes where it stopped.

One file, ``<model_name>/checkpoints/<checkpoint_key>/last.pt`` in the artifact store, replaced
atomically after each epoch (``ArtifactStore.put_bytes``: a reader never sees half a file, a kill
mid-write leaves the previous epoch's). Written with ``torch.save`` and read with
``torch.load(weights_only=True)``: tensors and plain containers only, never code. It holds:

``format``, ``fingerprint`` (hash of the request minus its bookkeeping fields), ``model`` and
``optimizer`` state dicts, ``epoch`` (last completed, 1-based), ``best_loss``, ``best_epoch``,
``best_state`` (weights of the best epoch), ``bad_epochs`` (early-stopping counter), ``rng`` (torch's
CPU generator, for dropout), ``history`` (per-epoch metrics) and ``finished``.

Shuffling is seeded per epoch, so a resumed run trains on exactly the batches the interrupted one would
have.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field

import torch

from aiflow.storage.artifacts import ArtifactStore
from aiflow.train.contract import TrainRequest

FORMAT = 1
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


def artifact_path(model_name: str, area: str, key: str) -> str:
    """``<model_name>/<area>/<key>``, refusing names that could escape the folder."""
    for what, value in (("model_name", model_name), ("checkpoint_key", key)):
        if not _SEGMENT.fullmatch(value) or ".." in value:
            raise ValueError(f"{what} {value!r} must be letters, digits and ._=+- (no '/', no '..')")
    return f"{model_name}/{area}/{key}"


def request_fingerprint(request: TrainRequest) -> str:
    """What must not change between a run and its resumption: data, state, spec, params, destination."""
    fields = request.model_dump(mode="json", include={"model_name", "features_uri", "data_version", "state_uri", "state_version", "spec", "params"})
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class CheckpointMismatch(RuntimeError):
    """The checkpoint under this key belongs to a different request."""


@dataclass
class Progress:
    """Where training stands after the last completed epoch."""

    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False


class Checkpointer:
    """Saves and restores the training state of one run (one checkpoint key)."""

    def __init__(self, store: ArtifactStore, model_name: str, key: str, fingerprint: str):
        self.store, self.fingerprint = store, fingerprint
        self.path = f"{artifact_path(model_name, 'checkpoints', key)}/last.pt"

    @property
    def uri(self) -> str:
        return self.store.uri(self.path)

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> None:
        blob = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": progress.epoch,
            "best_loss": progress.best_loss,
            "best_epoch": progress.best_epoch,
            "best_state": progress.best_state or {},
            "bad_epochs": progress.bad_epochs,
            "rng": torch.get_rng_state(),
            "history": progress.history,
            "finished": progress.finished,
        }
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        self.store.put_bytes(self.path, buffer.getvalue())

    def read(self) -> dict | None:
        """The raw checkpoint (tensors on CPU), or None when there is none."""
        if not self.store.exists(self.path):
            return None
        blob = torch.load(io.BytesIO(self.store.get_bytes(self.path)), weights_only=True, map_location="cpu")
        if blob.get("format") != FORMAT:
            raise CheckpointMismatch(f"{self.uri} has checkpoint format {blob.get('format')!r}, expected {FORMAT}")
        if blob.get("fingerprint") != self.fingerprint:
            raise CheckpointMismatch(
                f"{self.uri} was written by a run with other data, spec or params: use a new checkpoint_key"
            )
        return blob

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Progress | None:
        """Load the checkpoint into ``model`` and ``optimizer`` (and torch's RNG); None when there is none."""
        blob = self.read()
        if blob is None:
            return None
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["rng"])
        return Progress(
            epoch=blob["epoch"],
            best_loss=blob["best_loss"],
            best_epoch=blob["best_epoch"],
            best_state=blob["best_state"] or None,
            bad_epochs=blob["bad_epochs"],
            history=list(blob["history"]),
            finished=blob["finished"],
        )
