"""One training run, start to finish: pinned data → every configured model family on the same split
(the network: epochs with early stopping and a checkpoint after each, then its best weights; the
scikit-learn model) → the naive reference → the best family on the primary validation metric becomes
the candidate → its bundle → result (with every family's metrics, for comparison).

The pieces live next door: :mod:`.data` (pinned, split, streamed rows), :mod:`.checkpoint`,
:mod:`.baseline` (scikit-learn family, naive reference), :mod:`.selection`, :mod:`aiflow.models.bundle`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from aiflow.data.encoding import ModelInputs
from aiflow.evaluation.metrics import PRIMARY, compute_metrics
from aiflow.models.bundle import save_bundle, save_sklearn_bundle
from aiflow.models.families import PYTORCH, SKLEARN, sklearn_predict
from aiflow.models.network import (
    ModelConfig,
    TabularModel,
    loss_function,
    pick_device,
    predict_raw,
    seed_everything,
    to_predictions,
    to_target,
)
from aiflow.models.reference import Predictor, build_reference, reference_rows, windows_dict
from aiflow.spec import EVENT_DATE, DatasetSpec, parse_spec
from aiflow.storage.artifacts import ArtifactStore, sha256_bytes
from aiflow.train.baseline import fit_sklearn, naive_reference
from aiflow.train.checkpoint import Checkpointer, Progress, artifact_path, request_fingerprint
from aiflow.train.contract import TrainRequest, TrainResult
from aiflow.train.data import FeatureData, storage_options
from aiflow.train.distributed import Group, all_sum, broadcast, loss_divisor, shard, wrap
from aiflow.train.selection import best_family

Log = Callable[[str], None]


def _tensors(batch, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).to(device, non_blocking=True) for a in batch)


def train_epoch(
    model, optimizer, data: FeatureData, loss_fn, config: ModelConfig, batch_size: int, epoch: int, device, group: Group | None = None
) -> tuple[float, float]:
    """One pass over the (shuffled) training rows; returns the mean training loss and rows per second.

    Under DDP (``group``) this rank trains on its shard of each global batch; loss and rows are summed over ranks.
    """
    model.train()
    total, rows, start = 0.0, 0, time.perf_counter()
    batches = data.batches("train", batch_size, epoch=epoch)
    for batch, global_rows in shard(batches, group) if group else ((b, len(b)) for b in batches):
        cat, num, y = _tensors(batch, device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(cat, num), to_target(y, config))
        (loss / loss_divisor(group, len(y), global_rows)).backward()
        optimizer.step()
        total += loss.item()
        rows += len(y)
    if group:
        total, rows = all_sum([total, rows], group)
    return total / rows, rows / max(time.perf_counter() - start, 1e-9)


@torch.no_grad()
def validate(model, data: FeatureData, loss_fn, config: ModelConfig, batch_size: int, device) -> tuple[float, dict[str, float]]:
    """Mean loss and metrics on every validation row (eval mode)."""
    model.eval()
    total, outputs, targets = 0.0, [], []
    for batch in data.batches("valid", batch_size):
        cat, num, y = _tensors(batch, device)
        raw = model(cat, num)
        total += loss_fn(raw, to_target(y, config)).item()
        outputs.append(raw.cpu().numpy())
        targets.append(batch.y)
    y = np.concatenate(targets)
    return total / len(y), compute_metrics(y, to_predictions(np.concatenate(outputs), config), config.problem_type)


def _criterion(mode: str, primary: str, higher: bool, valid_loss: float, metrics: dict[str, float]) -> float:
    """Lower is better: the primary validation metric (negated when higher is better), or the loss.

    Stopping on the metric the gates and the sweep judge by matters under a time split: the base rate
    drifts between the training and validation windows, which moves the loss more than the ranking.
    """
    value = metrics.get(primary, math.nan)
    if mode == "loss" or not math.isfinite(value):
        return valid_loss
    return -value if higher else value


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train(
    request: TrainRequest,
    *,
    log: Log = print,
    store: ArtifactStore | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    group: Group | None = None,
) -> TrainResult | None:
    """Run (or resume, or re-export) the training described by ``request``: every family, the best is the candidate.

    Args:
        request: what to train on and how (see :mod:`aiflow.train.contract`).
        log: receives one line per step (``epoch 3/8 train_loss=… valid_loss=… valid_roc_auc=… rows/s=…``).
        store: where checkpoints and the bundle go; default ``ArtifactStore(request.artifact_root)``.
        on_epoch_end: called with the epoch number once its checkpoint is saved (tests, progress hooks).
        group: the DDP process group under torchrun (:mod:`aiflow.train.distributed`); None: one process.
            Every rank trains the network on its shard; only rank 0 goes on to write (checkpoints,
            the other families, the bundle) and returns the result; the other ranks return None.

    Raises:
        ValueError: the pinned data is unusable (missing version, columns, or empty split).
        CheckpointMismatch: the checkpoint key holds another request's run.
        RuntimeError: the training loss stopped being finite.
    """
    started = time.perf_counter()
    spec = parse_spec(request.spec, "request.spec")
    params = request.params
    store = store or ArtifactStore(request.artifact_root)
    seed_everything(params.seed)

    data = FeatureData(request, spec)
    log(
        f"data: {request.features_uri} at version {request.data_version} (state version {request.state_version}): "
        f"rows_train={data.rows_train} (of {data.rows_train_available}) rows_valid={data.rows_valid}"
    )
    primary = PRIMARY[spec.problem_type][0]
    family_metrics: dict[str, dict[str, float]] = {}
    network = forest = None
    if PYTORCH in params.families:
        network = _train_network(request, spec, data, store, log, on_epoch_end, group)
        if network is None:  # a DDP rank other than 0: its part is done
            return None
        family_metrics[PYTORCH] = network.metrics
    elif group and not group.is_main:
        log("no network to train: rank 0 alone fits the other families")
        return None
    if SKLEARN in params.families:
        fit_started = time.perf_counter()
        forest, family_metrics[SKLEARN] = fit_sklearn(
            data, spec.problem_type, max_rows=params.baseline_max_rows, seed=params.seed, hyper=params.sklearn_params()
        )
        log(
            f"scikit-learn (HistGradientBoosting, {time.perf_counter() - fit_started:.1f} s): "
            + " ".join(f"valid_{k}={v:.5f}" for k, v in sorted(family_metrics[SKLEARN].items()))
        )
    naive = naive_reference(data, spec.problem_type)
    log("naive reference (base rate or mean): " + " ".join(f"{k}={v:.5f}" for k, v in sorted(naive.items())))
    family = best_family(family_metrics, spec.problem_type)
    others = ", ".join(f"{f} {m.get(primary, math.nan):.5f}" for f, m in family_metrics.items() if f != family)
    log(f"candidate: {family} (valid_{primary}={family_metrics[family].get(primary, math.nan):.5f}" + (f"; {others})" if others else ")"))

    lineage = {
        "model_name": request.model_name, "features_uri": request.features_uri, "data_version": request.data_version,
        "state_uri": request.state_uri, "state_version": request.state_version, "code_version": request.code_version,
        "reason": request.reason, "checkpoint_key": request.checkpoint_key, "rows_train": data.rows_train,
        "rows_valid": data.rows_valid, "family": family,
        "best_epoch": network.best_epoch if network else None, "epochs_run": network.epochs_run if network else 0,
    }  # fmt: skip
    inputs = ModelInputs(data.inputs.categorical, data.inputs.cardinalities, data.inputs.numeric)
    reference = _reference(request, spec, data, inputs, _predictor(network if family == PYTORCH else None, forest, spec.problem_type), log)
    common = dict(
        params=params.model_dump(mode="json"), state=data.state, spec=spec, spec_dict=request.spec, lineage=lineage, extra_files=reference
    )  # fmt: skip
    path = artifact_path(request.model_name, "candidates", request.checkpoint_key)
    if family == PYTORCH:
        uri, digest = save_bundle(store, path, model=network.model, config=network.config, **common)
    else:
        uri, digest = save_sklearn_bundle(store, path, model=forest, inputs=inputs, target=data.inputs.target, **common)
    manifest = json.loads(store.get_bytes(f"{path}/manifest.json"))
    files = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    files["manifest.json"] = sha256_bytes(store.get_bytes(f"{path}/manifest.json"))
    log(f"bundle: {uri} ({family}, digest {digest})")
    return TrainResult(
        model_name=request.model_name, artifact_uri=uri, artifact_sha256=digest, family=family, metrics=family_metrics[family],
        family_metrics=family_metrics, naive_metrics=naive, bundle_files=files,
        epochs_run=network.epochs_run if network else 0, best_epoch=network.best_epoch if network else 0,
        resumed_from_epoch=network.resumed_from if network else None, device=str(network.device) if network else "cpu",
        rows_train=data.rows_train, rows_valid=data.rows_valid, wall_time_s=round(time.perf_counter() - started, 3),
        features_uri=request.features_uri, data_version=request.data_version, params=params,
    )  # fmt: skip


def _predictor(network: NetworkRun | None, forest, problem_type: str) -> Predictor:
    """The candidate's in-memory predictor: the network's (when given) or the scikit-learn model's."""
    if network is not None:
        return lambda cat, num: to_predictions(predict_raw(network.model, cat, num, network.device), network.config)
    return lambda cat, num: sklearn_predict(forest, cat, num, problem_type)


def _reference(request: TrainRequest, spec: DatasetSpec, data: FeatureData, inputs: ModelInputs, predictor: Predictor, log: Log) -> dict[str, bytes]:
    """The reference profile files of the candidate (:mod:`aiflow.models.reference`), from the pinned version's train and valid windows."""
    started = time.perf_counter()
    uri, seed, windows = request.features_uri, request.params.seed, data.windows
    lf = pl.scan_delta(uri, version=request.data_version, storage_options=storage_options(uri))
    limits = {"train": 20_000, "valid": 10_000}
    rows = reference_rows(
        lf, {"train": windows.train(), "valid": windows.valid()}, columns=[EVENT_DATE, *inputs.categorical, *inputs.numeric],
        target=data.inputs.target, seed=seed, limits=limits, counts={"train": data.rows_train_available, "valid": data.rows_valid},
    )  # fmt: skip
    files = build_reference(
        rows, predictor, inputs, spec, problem_type=spec.problem_type, target=data.inputs.target, seed=seed,
        max_train_rows=limits["train"], max_valid_rows=limits["valid"], windows=windows_dict(windows),
    )  # fmt: skip
    log(f"reference: {rows.height} candidate rows, {sum(map(len, files.values())):,} bytes ({time.perf_counter() - started:.2f} s)")
    return files


@dataclass
class NetworkRun:
    """The network with its best weights, and how its training went."""

    model: TabularModel
    config: ModelConfig
    metrics: dict[str, float]
    epochs_run: int
    best_epoch: int
    resumed_from: int | None
    device: torch.device


def _train_network(
    request: TrainRequest, spec, data: FeatureData, store: ArtifactStore, log: Log, on_epoch_end, group: Group | None = None
) -> NetworkRun | None:
    """The PyTorch family: epochs with early stopping and a checkpoint after each; its best weights' validation metrics.

    Under DDP (``group``) rank 0 validates and broadcasts, so every rank stops at the same epoch; only
    rank 0 saves checkpoints and returns the run (the others return None).
    """
    params = request.params
    main = group is None or group.is_main
    device = group.device if group else pick_device(params.device)
    target_mean, target_std = data.target_stats() if spec.problem_type == "regression" else (0.0, 1.0)
    inputs = data.inputs
    config = ModelConfig(
        problem_type=spec.problem_type, categorical=inputs.categorical, cardinalities=inputs.cardinalities,
        numeric=inputs.numeric, hidden=list(params.hidden), embedding_dim=params.embedding_dim, dropout=params.dropout,
        target=inputs.target, target_mean=target_mean, target_std=target_std,
    )  # fmt: skip
    model = TabularModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    loss_fn = loss_function(spec.problem_type)
    primary, higher = PRIMARY[spec.problem_type]

    checkpointer = Checkpointer(store, request.model_name, request.checkpoint_key, request_fingerprint(request))
    progress = checkpointer.restore(model, optimizer)
    resumed_from = progress.epoch if progress else None
    if progress:
        done = " (training had finished: exporting again)" if progress.finished else ""
        log(f"resuming from {checkpointer.uri} after epoch {progress.epoch}{done}")
    progress = progress or Progress()
    ddp = f" ddp: rank {group.rank} of {group.world_size} ({group.backend})" if group else ""
    log(f"device={device}{ddp} params={params.model_dump_json()}")
    trained = wrap(model, group) if group else model
    while not progress.finished:
        epoch = progress.epoch + 1
        train_loss, rows_per_s = train_epoch(trained, optimizer, data, loss_fn, config, params.batch_size, epoch, device, group)
        if not math.isfinite(train_loss):
            raise RuntimeError(f"training diverged: train_loss={train_loss} in epoch {epoch} (lower learning_rate?)")
        if group:  # rank 0 validates, every rank decides on its numbers
            valid_loss, metrics = broadcast(validate(model, data, loss_fn, config, params.batch_size, device) if main else None, group)
        else:
            valid_loss, metrics = validate(model, data, loss_fn, config, params.batch_size, device)
        criterion = _criterion(params.early_stopping, primary, higher, valid_loss, metrics)
        improved = criterion < progress.best_loss
        if improved:
            progress.best_loss, progress.best_epoch, progress.best_state, progress.bad_epochs = criterion, epoch, _state_copy(model), 0
        else:
            progress.bad_epochs += 1
        shown = metrics.get(primary, math.nan)
        progress.epoch = epoch
        progress.history.append(
            {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, f"valid_{primary}": shown, "rows_per_s": rows_per_s}
        )
        progress.finished = epoch >= params.epochs or progress.bad_epochs >= params.patience
        if main:
            checkpointer.save(model, optimizer, progress)
        log(
            f"epoch {epoch}/{params.epochs} train_loss={train_loss:.5f} valid_loss={valid_loss:.5f} "
            f"valid_{primary}={shown:.5f} rows/s={rows_per_s:,.0f}{' (best)' if improved else ''}"
        )
        if progress.bad_epochs >= params.patience:
            log(f"early stop: no validation improvement for {params.patience} epochs; best epoch {progress.best_epoch}")
        if on_epoch_end:
            on_epoch_end(epoch)

    if not main:
        return None
    if progress.best_state is None:
        raise RuntimeError(f"validation loss was never finite in {progress.epoch} epoch(s): no model to export")
    model.load_state_dict(progress.best_state)
    valid_loss, metrics = validate(model, data, loss_fn, config, params.batch_size, device)
    best = progress.history[progress.best_epoch - 1]
    metrics = {**metrics, "loss": valid_loss, "train_loss": best["train_loss"]}
    log(f"best epoch {progress.best_epoch}: " + " ".join(f"valid_{k}={v:.5f}" for k, v in sorted(metrics.items())))
    return NetworkRun(model, config, metrics, progress.epoch, progress.best_epoch, resumed_from, device)
