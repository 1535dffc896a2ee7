"""Training data: the features table read at its pinned Delta version, split by the spec, streamed.

* **Pinned.** ``DeltaTable(uri, version=request.data_version)``: rows committed later are invisible.
  The table's own commit metadata must say it was encoded with ``request.state_version`` (the
  vocabularies the embeddings are sized from), else the run fails before training.
* **Split** by the spec's split policy on the ``event_date`` partition column, made concrete for the
  pinned version by :func:`aiflow.data.split.pinned_windows` (a request carries the resolved windows
  as a fixed split): ``[train_from, valid_from)`` is train, ``[valid_from, test_from)`` is valid;
  ``>= test_from`` is held out and never read here.
* **Streamed.** The pinned table is a pyarrow dataset; a split is its data files (fragments), read
  record batch by record batch. For training, each epoch visits the files in a seeded random order
  (``torch.Generator`` seeded with ``seed`` and the epoch) and passes rows through a shuffle buffer
  of ``buffer_rows`` rows before cutting mini-batches, so memory is bounded by the buffer, not the
  table, and a resumed run sees exactly the batches the interrupted one would have.
* **Sampled.** ``max_train_rows`` (and the baseline's sample) pick row positions uniformly without
  replacement, seeded, from the split's rows in file order: the same rows every epoch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import torch
from deltalake import DeltaTable

from aiflow.data.encoding import FeatureState, to_arrays
from aiflow.data.encoding import model_inputs as encoder_inputs
from aiflow.data.split import Windows, pinned_windows
from aiflow.spec import EVENT_DATE, DatasetSpec
from aiflow.storage.artifacts import s3_options_from_env
from aiflow.storage.lake import META, history_of
from aiflow.train.contract import TrainRequest

DEFAULT_BUFFER_ROWS = 131_072


def storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs options for ``uri``: S3 credentials come from the process environment, never the request."""
    return s3_options_from_env() if uri.startswith("s3://") else None


class Arrays(NamedTuple):
    """A block of rows: categorical codes (int64, n x c), numerics (float32, n x m), target (float32, n)."""

    cat: np.ndarray
    num: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> Arrays:
        return Arrays(self.cat[index], self.num[index], self.y[index])

    @staticmethod
    def concat(parts: list[Arrays]) -> Arrays:
        return parts[0] if len(parts) == 1 else Arrays(*(np.concatenate(p) for p in zip(*parts, strict=True)))


@dataclass(frozen=True)
class Inputs:
    """Model inputs as columns of the features table."""

    categorical: list[str]  # vocabulary codes, then calendar codes
    cardinalities: list[int]  # embedding rows per categorical column (codes 0..cardinality-1; 0 = unknown)
    numeric: list[str]
    target: str


def model_inputs(spec: DatasetSpec, state: FeatureState) -> Inputs:
    """The encoder's model inputs (:func:`aiflow.data.encoding.model_inputs`) plus the target column."""
    inputs = encoder_inputs(spec, state)
    return Inputs(inputs.categorical, inputs.cardinalities, inputs.numeric, spec.target.name)


def read_state(uri: str, version: int) -> FeatureState:
    """The feature state (vocabularies, scaling statistics) at its pinned version."""
    frame = pl.scan_delta(uri, version=version, storage_options=storage_options(uri)).collect()
    return FeatureState.from_frame(frame)


def check_state_lineage(uri: str, data_version: int, state_version: int) -> None:
    """Fail if the features at ``data_version`` were encoded with another feature-state version.

    A state change makes the next features commit re-encode every partition, so the latest commit
    at or before ``data_version`` that records a state version names the state of all its rows.
    Tables written without that metadata (not by the engine) are not checked.
    """
    key = META + "state_version"
    head = DeltaTable(uri, storage_options=storage_options(uri))  # a handle pinned at data_version mislabels its history
    recorded = [(c["version"], c[key]) for c in history_of(head) if key in c and c["version"] <= data_version]
    if recorded and int(max(recorded)[1]) != state_version:
        raise ValueError(
            f"{uri} at version {data_version} was encoded with feature state version {max(recorded)[1]}, "
            f"but the request pins state version {state_version}"
        )


def sample_positions(total: int, k: int | None, seed: int, pool: np.ndarray | None = None) -> np.ndarray | None:
    """Sorted positions of ``k`` rows drawn without replacement (from ``pool`` if given); None means all rows."""
    size = total if pool is None else len(pool)
    if k is None or k >= size:
        return pool
    rng = np.random.default_rng(seed)
    picked = rng.choice(size, size=k, replace=False)
    return np.sort(picked if pool is None else pool[picked])


class FeatureData:
    """The train and valid splits of one pinned features table.

    Args:
        request: the training request (URIs, pinned versions, params).
        spec: the dataset spec (parsed from ``request.spec``).
        buffer_rows: rows in the shuffle buffer; bounds memory while training.
    """

    def __init__(self, request: TrainRequest, spec: DatasetSpec, buffer_rows: int = DEFAULT_BUFFER_ROWS):
        self.uri, self.version, self.seed = request.features_uri, request.data_version, request.params.seed
        self.buffer_rows = buffer_rows
        try:
            table = DeltaTable(self.uri, version=self.version, storage_options=storage_options(self.uri))
        except Exception as exc:
            raise ValueError(f"cannot open {self.uri} at version {self.version}: {exc}") from exc
        check_state_lineage(self.uri, self.version, request.state_version)
        self.state = read_state(request.state_uri, request.state_version)
        self.inputs = model_inputs(spec, self.state)
        dataset = table.to_pyarrow_dataset()
        self._schema = dataset.schema
        wanted = [*self.inputs.categorical, *self.inputs.numeric, self.inputs.target, EVENT_DATE]
        missing = [c for c in wanted if c not in dataset.schema.names]
        if missing:
            raise ValueError(f"{self.uri} at version {self.version} lacks the model input column(s) {missing}")
        self._columns = wanted[:-1]
        self.windows = windows = pinned_windows(self.uri, self.version, spec.split, storage_options(self.uri))
        self._filters = {"train": _train(windows), "valid": _between(windows.valid_from, windows.test_from)}
        self._filters = {k: f & pds.field(self.inputs.target).is_valid() for k, f in self._filters.items()}
        self._fragments, self._counts = {}, {}
        for name, where in self._filters.items():
            fragments = sorted(dataset.get_fragments(filter=where), key=lambda f: f.path)
            counts = np.array([self._scanner(f, where).count_rows() for f in fragments], dtype=np.int64)
            self._fragments[name], self._counts[name] = fragments, counts
        self.rows_train_available = int(self._counts["train"].sum())
        self.train_positions = sample_positions(self.rows_train_available, request.params.max_train_rows, self.seed)
        self.rows_train = self.rows_train_available if self.train_positions is None else len(self.train_positions)
        self.rows_valid = int(self._counts["valid"].sum())
        if not self.rows_train or not self.rows_valid:
            raise ValueError(
                f"{self.uri} at version {self.version} has {self.rows_train} training rows and {self.rows_valid} "
                f"validation rows ({windows.describe()}): both are needed"
            )

    # ------------------------------------------------------------------------------------ reading
    def _scanner(self, fragment: pds.Fragment, where: pds.Expression) -> pds.Scanner:
        # the dataset schema, so partition columns (event_date) can be filtered on: a file's own schema lacks them
        return pds.Scanner.from_fragment(fragment, schema=self._schema, columns=self._columns, filter=where, use_threads=False)

    def _to_arrays(self, batch: pa.RecordBatch) -> Arrays:
        """Model inputs by the one encoder (:func:`aiflow.data.encoding.to_arrays`), plus the target."""
        cat, num = to_arrays(batch, self.inputs.categorical, self.inputs.cardinalities, self.inputs.numeric)
        y = pc.fill_null(batch.column(self.inputs.target), 0).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return Arrays(cat, num, y)

    def _pieces(self, split: str, positions: np.ndarray | None, order: list[int]) -> Iterator[Arrays]:
        """Record batches of ``split`` as arrays, files in ``order``, keeping only ``positions`` (None: all)."""
        fragments, counts = self._fragments[split], self._counts[split]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for i in order:
            local = None
            if positions is not None:
                lo, hi = np.searchsorted(positions, [starts[i], starts[i] + counts[i]])
                if lo == hi:
                    continue
                local = positions[lo:hi] - starts[i]
            seen = 0
            for batch in self._scanner(fragments[i], self._filters[split]).to_batches():
                n, offset = batch.num_rows, seen
                seen += n
                if local is not None:
                    a, b = np.searchsorted(local, [offset, offset + n])
                    if a == b:
                        continue
                    batch = batch.take(pa.array(local[a:b] - offset))
                if batch.num_rows:
                    yield self._to_arrays(batch)

    def batches(self, split: str, batch_size: int, *, epoch: int | None = None) -> Iterator[Arrays]:
        """Mini-batches of ``split``: shuffled (files and rows, seeded by ``epoch``) when an epoch is given.

        The training split is restricted to the sampled rows (``max_train_rows``).
        """
        positions = self.train_positions if split == "train" else None
        n_files = len(self._fragments[split])
        if epoch is None:
            generator, order, capacity = None, list(range(n_files)), batch_size
        else:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order, capacity = torch.randperm(n_files, generator=generator).tolist(), max(self.buffer_rows, batch_size)
        buffer: list[Arrays] = []
        held = 0
        for piece in self._pieces(split, positions, order):
            buffer.append(piece)
            held += len(piece)
            if held >= capacity:
                rows = self._shuffled(Arrays.concat(buffer), generator)
                full = held // batch_size * batch_size
                yield from (rows.take(slice(s, s + batch_size)) for s in range(0, full, batch_size))
                buffer, held = ([rows.take(slice(full, held))] if held > full else []), held - full
        if held:
            rows = self._shuffled(Arrays.concat(buffer), generator)
            yield from (rows.take(slice(s, s + batch_size)) for s in range(0, held, batch_size))

    @staticmethod
    def _shuffled(rows: Arrays, generator: torch.Generator | None) -> Arrays:
        return rows if generator is None else rows.take(torch.randperm(len(rows), generator=generator).numpy())

    def sample(self, split: str, k: int, seed: int) -> Arrays:
        """Up to ``k`` rows of ``split`` drawn without replacement (from the sampled training rows), in memory."""
        if split == "train":
            positions = sample_positions(self.rows_train_available, k, seed, pool=self.train_positions)
        else:
            positions = sample_positions(self.rows_valid, k, seed)
        parts = list(self._pieces(split, positions, list(range(len(self._fragments[split])))))
        return Arrays.concat(parts)

    def target_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of the target on the training rows (one streamed pass)."""
        total = count = squares = 0.0
        for piece in self._pieces("train", self.train_positions, list(range(len(self._fragments["train"])))):
            y = piece.y.astype(np.float64)
            total, squares, count = total + y.sum(), squares + (y * y).sum(), count + len(y)
        mean = total / count
        std = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
        return float(mean), std if std > 1e-12 else 1.0


def _train(windows: Windows) -> pds.Expression:
    where = pds.field(EVENT_DATE) < windows.valid_from
    return where if windows.train_from is None else where & (pds.field(EVENT_DATE) >= windows.train_from)


def _between(start: dt.date, end: dt.date) -> pds.Expression:
    return (pds.field(EVENT_DATE) >= start) & (pds.field(EVENT_DATE) < end)
