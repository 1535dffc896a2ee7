"""Training data: the features table read at its pinned Delta version, split by the spec, streamed.

* **Pinned.** ``DeltaTable(uri, version=request.data_version)``: rows committed later are invisible.
  The table's own commit metadata must say it was encoded with ``request.state_version`` (the
  vocabularies the embeddings are sized from), else the run fails before training.
* **Split** by the spec's split policy on the ``event_date`` partition column, made concrete for the
  pinned version by :func:`aiflow.data.split.pinned_windows` (a request carries the resolved windows
  as a fixed split): ``[train_from, valid_from)`` is train, ``[valid_from, test_from)`` is valid;
  ``>= test_from`` is held out and never read here.
* **Row identity.** Every row gets a 64-bit identity: a hash of exactly what the model sees (its encoded
  categorical codes, numerics and target; :func:`row_identity`, integer arithmetic in NumPy with fixed
  constants, so the same in every process, on every machine and library version). Sampling and ordering
  go by identities, never by positions in files, so they do not depend on how the Delta table happens to
  be laid out in files (delta-rs rewrites a month file when a refresh replaces dates, its kept and new
  rows in an order that varies run to run; file names are random UUIDs). Rows with equal identities are
  equal model inputs, so their order among themselves is moot; two different rows whose identities
  collide (odds about n²/2⁶⁵) are ordered by content.
* **Sampled.** ``max_train_rows`` keeps the rows with the smallest seeded keys (:func:`sample_keys`, a
  bijection of the identity mixed with the seed): a uniform sample of the split's rows, the same every
  epoch. :meth:`FeatureData.sample` (the scikit-learn family's rows) draws the same way from those rows.
* **Held** (a split of at most ``buffer_rows`` rows after ``max_train_rows``: the demo and typical runs).
  The split is read once, on first use, and kept in memory in canonical order (by identity). Each
  training epoch is a seeded permutation of it (``torch.Generator`` seeded with ``seed`` and the epoch)
  cut into mini-batches; validation batches, ``sample`` and ``target_stats`` follow the canonical order.
  The train batches of every epoch, the validation batches, the ``max_train_rows`` subset, ``sample``
  and ``target_stats`` are then a function of the split's row set, the seed and the epoch only: two
  lakes holding the same rows train the same model. Memory: each held split is at most ``buffer_rows``
  rows (choosing a sample out of a larger split holds at most twice the sample plus a record batch).
* **Streamed** (a larger split): memory stays bounded by the buffer, not the table. Each epoch visits
  the split's data files in a seeded permutation of a canonical file order (each file's partition
  values and Delta statistics, i.e. min/max per column from the log; the path only breaks ties between
  files with identical statistics) and passes rows through a buffer of ``buffer_rows`` rows; each fill
  is put in canonical order, then permuted by the seeded generator (validation: a fill per batch,
  not permuted). Still layout-independent: the ``max_train_rows`` subset (found by one extra,
  keys-only pass over the split), ``sample``, and the row set of every epoch. Layout-dependent in this
  regime, by design (a bounded buffer cannot order what it has not read): the order of batches
  depends on which rows share a data file, since a fill holds whole files' record batches; rows'
  order inside a file matters only where a fill ends inside a file of several record batches; and
  ``target_stats`` sums in file order (the same rows; a float sum may differ in its last bits).

A resumed run sees exactly the batches the interrupted one would have, in both regimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
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

_U64 = np.uint64
_MASK = (1 << 64) - 1
#: Fixed constants of the row hash (changing any changes every identity, hence every sample and order).
_IDENTITY_START = 0x243F6A8885A308D3  # digits of pi
_GOLDEN = 0x9E3779B97F4A7C15
_SEED_SALT = 0x5851F42D4C957F2D


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

    def take(self, index: np.ndarray | slice) -> Arrays:
        return Arrays(self.cat[index], self.num[index], self.y[index])

    @staticmethod
    def concat(parts: list[Arrays]) -> Arrays:
        return parts[0] if len(parts) == 1 else Arrays(*(np.concatenate(p) for p in zip(*parts, strict=True)))


# ---------------------------------------------------------------------------------- row identity
def _mix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, in place on a uint64 array: a bijection that spreads every input bit."""
    h ^= h >> _U64(30)
    h *= _U64(0xBF58476D1CE4E5B9)
    h ^= h >> _U64(27)
    h *= _U64(0x94D049BB133111EB)
    h ^= h >> _U64(31)
    return h


def _words(rows: Arrays) -> np.ndarray:
    """The rows' content as a uint64 matrix (n x w): the codes, then the numerics' and target's bits, two per word."""
    n, m = len(rows), rows.num.shape[1]
    floats = np.zeros((n, m + 1 + (m + 1) % 2), dtype=np.float32)
    floats[:, :m], floats[:, m] = rows.num, rows.y
    return np.hstack([np.ascontiguousarray(rows.cat, dtype=np.int64).view(_U64), floats.view(_U64)])


def row_identity(rows: Arrays) -> np.ndarray:
    """A 64-bit hash (uint64, one per row) of exactly what the model sees of each row: codes, numerics, target.

    Integer arithmetic on the values' bits, so it is the same in every process, on every machine and
    library version. Rows that differ in a single word never collide (each step is a bijection).
    """
    h = np.full(len(rows), _IDENTITY_START, dtype=_U64)
    for column in np.ascontiguousarray(_words(rows).T):
        h ^= column
        _mix(h)
    return h


def _seed_word(seed: int) -> np.uint64:
    return _U64((seed * _GOLDEN + _SEED_SALT) & _MASK)


def sample_keys(identity: np.ndarray, seed: int) -> np.ndarray:
    """Seeded sampling keys of rows: the smallest ``k`` keys are a uniform sample of ``k`` rows.

    A bijection of the identity, so equal keys mean equal identities (equal rows): which of them a
    sample takes cannot change what it holds.
    """
    return _mix(identity ^ _seed_word(seed))


def canonical_order(rows: Arrays, identity: np.ndarray) -> np.ndarray:
    """Positions putting ``rows`` in canonical order: by identity, a 64-bit collision by content."""
    order = np.argsort(identity, kind="stable")
    ordered = identity[order]
    same = ordered[1:] == ordered[:-1]
    pairs = np.flatnonzero(same)
    if len(pairs):  # equal identities: equal rows (their order is moot) unless two different rows collide
        if (_words(rows.take(order[pairs])) != _words(rows.take(order[pairs + 1]))).any():
            order = np.lexsort((*_words(rows).T[::-1], identity))
    return order


def _smallest(pieces: Iterable[tuple[Arrays, np.ndarray]], k: int | None, seed: int) -> tuple[Arrays, np.ndarray] | None:
    """The ``k`` rows (all when None) of ``pieces`` with the smallest seeded keys, in canonical order.

    Holds at most ``2k`` rows plus one piece; None when there are no rows.
    """

    def keep(parts: list[tuple[Arrays, np.ndarray]]) -> tuple[Arrays, np.ndarray]:
        rows, identity = Arrays.concat([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if k is not None and len(identity) > k:
            picked = np.argpartition(sample_keys(identity, seed), k - 1)[:k]
            rows, identity = rows.take(picked), identity[picked]
        return rows, identity

    parts: list[tuple[Arrays, np.ndarray]] = []
    held = 0
    for piece in pieces:
        parts.append(piece)
        held += len(piece[1])
        if k is not None and held >= 2 * k and len(parts) > 1:
            parts = [keep(parts)]
            held = len(parts[0][1])
    if not parts:
        return None
    rows, identity = keep(parts)
    order = canonical_order(rows, identity)
    return rows.take(order), identity[order]


@dataclass(frozen=True)
class _Cut:
    """A sample as a rule on keys: rows whose key is below ``threshold``, and ``quota`` rows whose key equals it."""

    seed: int
    threshold: np.uint64
    quota: int


def _cut(keys: Iterable[np.ndarray], k: int, seed: int) -> _Cut:
    """The rule keeping the ``k`` smallest of ``keys`` (streamed; holds at most ``2k`` keys plus one chunk)."""
    kept, pending, held = np.empty(0, dtype=_U64), [], 0
    for chunk in keys:
        pending.append(chunk)
        held += len(chunk)
        if held >= 2 * k:
            kept = np.partition(np.concatenate([kept, *pending]), k - 1)[:k]
            pending, held = [], k
    kept = np.partition(np.concatenate([kept, *pending]), k - 1)[:k]
    threshold = kept.max()
    return _Cut(seed, threshold, k - int((kept < threshold).sum()))


# -------------------------------------------------------------------------------- the features
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


def _file_key(fragment: pds.Fragment) -> tuple[str, str]:
    """A data file's place in the canonical order: its partition values and Delta statistics, then its path.

    delta-rs puts both (the partition values, each column's min/max) in the fragment's partition expression.
    """
    return str(fragment.partition_expression), fragment.path


class FeatureData:
    """The train and valid splits of one pinned features table.

    Args:
        request: the training request (URIs, pinned versions, params).
        spec: the dataset spec (parsed from ``request.spec``).
        buffer_rows: rows in the shuffle buffer; bounds memory while training. A split of at most this
            many rows (after ``max_train_rows``) is held in memory in canonical order.
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
        self._fragments: dict[str, list[pds.Fragment]] = {}
        for name, where in self._filters.items():
            fragments = sorted(dataset.get_fragments(filter=where), key=_file_key)
            counts = [self._scanner(f, where).count_rows() for f in fragments]
            self._fragments[name] = [f for f, n in zip(fragments, counts, strict=True) if n]
            if name == "train":
                self.rows_train_available = int(sum(counts))
            else:
                self.rows_valid = int(sum(counts))
        cap = request.params.max_train_rows
        self.rows_train = self.rows_train_available if cap is None else min(cap, self.rows_train_available)
        self._sampled = self.rows_train < self.rows_train_available
        self._cut: _Cut | None = None  # the sample as a rule, for a streamed training split (found on first use)
        self._held: dict[str, tuple[Arrays, np.ndarray]] = {}
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

    def _rows(self, split: str, order: Iterable[int]) -> Iterator[tuple[Arrays, np.ndarray]]:
        """Every row of ``split`` with its identity, record batch by record batch, files in ``order``."""
        fragments = self._fragments[split]
        for i in order:
            for batch in self._scanner(fragments[i], self._filters[split]).to_batches():
                if batch.num_rows:
                    rows = self._to_arrays(batch)
                    yield rows, row_identity(rows)

    def _pool(self, split: str, order: Iterable[int]) -> Iterator[tuple[Arrays, np.ndarray]]:
        """The rows of ``split`` a run uses (the training split: its ``max_train_rows`` sample), files in ``order``."""
        if split != "train" or not self._sampled:
            yield from self._rows(split, order)
            return
        if self._cut is None:
            keys = (sample_keys(identity, self.seed) for _, identity in self._rows(split, self._canonical(split)))
            self._cut = _cut(keys, self.rows_train, self.seed)
        cut, taken = self._cut, 0
        for rows, identity in self._rows(split, order):
            key = sample_keys(identity, cut.seed)
            keep = key < cut.threshold
            if taken < cut.quota:  # rows at the threshold are equal rows: which of them are taken is moot
                at = np.flatnonzero(key == cut.threshold)[: cut.quota - taken]
                keep[at], taken = True, taken + len(at)
            if keep.any():
                picked = np.flatnonzero(keep)
                yield rows.take(picked), identity[picked]

    def _canonical(self, split: str) -> range:
        return range(len(self._fragments[split]))

    def _size(self, split: str) -> int:
        return self.rows_train if split == "train" else self.rows_valid

    def held(self, split: str) -> tuple[Arrays, np.ndarray] | None:
        """The rows of ``split`` and their identities in canonical order when the split is held in memory, else None.

        Read on first use: the whole split, keeping the ``max_train_rows`` sample of the training split.
        """
        if self._size(split) > self.buffer_rows:
            return None
        if split not in self._held:
            k = self.rows_train if split == "train" and self._sampled else None
            rows = _smallest(self._rows(split, self._canonical(split)), k, self.seed)
            if rows is None:  # the files' row counts promised rows
                raise ValueError(f"{self.uri} at version {self.version}: the {split} split read no rows")
            self._held[split] = rows
        return self._held[split]

    def batches(self, split: str, batch_size: int, *, epoch: int | None = None) -> Iterator[Arrays]:
        """Mini-batches of ``split``: shuffled (seeded by the seed and ``epoch``) when an epoch is given.

        The training split is restricted to the sampled rows (``max_train_rows``).
        """
        generator = None if epoch is None else torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        held = self.held(split)
        if held is not None:
            rows = self._shuffled(held[0], generator)
            yield from (rows.take(slice(s, s + batch_size)) for s in range(0, len(rows), batch_size))
            return
        n_files = len(self._fragments[split])
        if generator is None:
            order, capacity = self._canonical(split), batch_size
        else:
            order, capacity = torch.randperm(n_files, generator=generator).tolist(), max(self.buffer_rows, batch_size)
        buffer: list[tuple[Arrays, np.ndarray]] = []
        held_rows = 0
        for piece in self._pool(split, order):
            buffer.append(piece)
            held_rows += len(piece[1])
            if held_rows >= capacity:
                rows, identity = self._fill(buffer, generator)
                full = held_rows // batch_size * batch_size
                yield from (rows.take(slice(s, s + batch_size)) for s in range(0, full, batch_size))
                buffer = [(rows.take(slice(full, None)), identity[full:])] if held_rows > full else []
                held_rows -= full
        if held_rows:
            rows, _ = self._fill(buffer, generator)
            yield from (rows.take(slice(s, s + batch_size)) for s in range(0, held_rows, batch_size))

    def _fill(self, buffer: list[tuple[Arrays, np.ndarray]], generator: torch.Generator | None) -> tuple[Arrays, np.ndarray]:
        """One buffer fill in canonical order, then permuted by ``generator`` (training)."""
        rows, identity = Arrays.concat([p[0] for p in buffer]), np.concatenate([p[1] for p in buffer])
        order = canonical_order(rows, identity)
        if generator is not None:
            order = order[torch.randperm(len(order), generator=generator).numpy()]
        return rows.take(order), identity[order]

    @staticmethod
    def _shuffled(rows: Arrays, generator: torch.Generator | None) -> Arrays:
        return rows if generator is None else rows.take(torch.randperm(len(rows), generator=generator).numpy())

    def sample(self, split: str, k: int, seed: int) -> Arrays:
        """Up to ``k`` rows of ``split`` drawn without replacement (from the sampled training rows), in canonical order."""
        held = self.held(split)
        if held is not None:
            rows, identity = held
            if k >= len(identity):
                return rows
            return rows.take(np.sort(np.argpartition(sample_keys(identity, seed), k - 1)[:k]))
        picked = _smallest(self._pool(split, self._canonical(split)), k, seed)
        if picked is None:
            raise ValueError(f"{self.uri} at version {self.version}: the {split} split read no rows")
        return picked[0]

    def target_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of the target on the training rows (one streamed pass)."""
        held = self.held("train")
        pieces = [held[0]] if held is not None else (rows for rows, _ in self._pool("train", self._canonical("train")))
        total = count = squares = 0.0
        for piece in pieces:
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
