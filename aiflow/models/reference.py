"""The reference profile saved with every model version: what the model's data looked like when it was trained.

Two files enter the model bundle (so its digest covers them and :func:`aiflow.models.bundle.verify_bundle`
checks them):

* ``reference.parquet`` – a bounded, seeded sample of the pinned features version: ``event_date``,
  ``split`` (``"train"`` | ``"valid"``), every model input column (features-table names), ``label``
  (the target, Float64) and ``prediction`` (the model's probability of the positive class, or value);
* ``reference.json`` – ``format``, ``problem_type``, ``threshold``, ``columns`` (each input column's
  drift kind: ``categorical`` for vocabulary and calendar codes, ``numeric`` for standardised numerics),
  ``importance`` (permutation importance, shares summing to 1), ``rows``, ``seed``, ``windows`` and
  per-column ``stats``.

**Sampling** is by a seeded hash of each row's content (:func:`sample_key`): a split keeps its rows with
the smallest keys. That is a uniform sample that does not depend on the order the rows were read in, so
the same pinned data and seed give byte-identical files (a re-export keeps the bundle digest), and
:func:`reference_rows` can drop most rows while scanning (a key threshold) instead of loading a large
window whole.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from aiflow.data.encoding import ModelInputs, to_arrays
from aiflow.data.split import Windows
from aiflow.models.bundle import verify_bundle
from aiflow.spec import EVENT_DATE, DatasetSpec
from aiflow.storage.artifacts import ArtifactStore

PARQUET, JSON = "reference.parquet", "reference.json"
FILES = (PARQUET, JSON)
FORMAT = 1
SPLIT, LABEL, PREDICTION = "split", "label", "prediction"
TRAIN, VALID = "train", "valid"
CATEGORICAL, NUMERIC = "categorical", "numeric"
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
TOP_VALUES = 50
#: Shuffles per column for permutation importance (averaged); one on 5,000 rows is stable enough, and each costs a prediction per row.
IMPORTANCE_REPEATS = 1
_KEY = "__reference_key"
_EPS = 1e-7

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Reference:
    """A model version's reference profile: the sample, each column's drift kind and importance, and the rest of ``reference.json``."""

    sample: pl.DataFrame = field(repr=False)
    columns: dict[str, str]
    importance: dict[str, float]
    problem_type: str
    threshold: float | None
    meta: dict = field(repr=False)

    def train(self) -> pl.DataFrame:
        """The sampled rows of the training window."""
        return self.sample.filter(pl.col(SPLIT) == TRAIN)

    def valid(self) -> pl.DataFrame:
        """The sampled rows of the validation window."""
        return self.sample.filter(pl.col(SPLIT) == VALID)


def column_kinds(inputs: ModelInputs) -> dict[str, str]:
    """Each model input column's drift kind: codes (``cat_*``, ``cal_*``) are categorical, ``num_*`` numeric."""
    return {**{c: CATEGORICAL for c in inputs.categorical}, **{c: NUMERIC for c in inputs.numeric}}


def sample_key(columns: Sequence[str], seed: int) -> pl.Expr:
    """A seeded 64-bit hash of a row's ``columns``: the sample keeps the smallest keys (independent of row order).

    The columns are hashed in name order, so any order of ``columns`` gives the same key. Polars guarantees
    the hash within one Polars version, which is what byte-identical re-exports need.
    """
    return pl.struct(sorted(set(columns))).hash(seed=seed).alias(_KEY)


def windows_dict(windows: Windows) -> dict[str, dict[str, str | None]]:
    """The train and valid windows as JSON (``from`` inclusive, ``until`` exclusive; None is unbounded)."""
    start = windows.train_from.isoformat() if windows.train_from else None
    return {
        TRAIN: {"from": start, "until": windows.valid_from.isoformat()},
        VALID: {"from": windows.valid_from.isoformat(), "until": windows.test_from.isoformat()},
    }


def reference_rows(
    lf: pl.LazyFrame, splits: Mapping[str, pl.Expr], *, columns: Sequence[str], target: str, seed: int,
    limits: Mapping[str, int], counts: Mapping[str, int] | None = None,
) -> pl.DataFrame:  # fmt: skip
    """The candidate rows of each split for :func:`build_reference`, read without holding a large window in memory.

    Each split keeps the rows whose :func:`sample_key` falls under a threshold chosen to leave a few more
    than ``limits[split]`` rows (all rows when the split is small); :func:`build_reference` then keeps
    exactly the smallest keys, which are the same rows a full read would have given.

    Args:
        lf: the pinned features table (e.g. ``pl.scan_delta(uri, version=...)``).
        splits: a filter per split name (``train``, ``valid``) on ``lf``.
        columns: ``event_date`` and the model input columns; ``target`` is added (rows with a null target are dropped).
        limits: rows to sample per split.
        counts: rows per split (with a target), if known; counted otherwise.
    """
    wanted = list(dict.fromkeys([*columns, target]))
    base = lf.select(wanted).filter(pl.col(target).is_not_null())
    parts = []
    for name, where in splits.items():
        split = base.filter(where)
        total = counts[name] if counts and name in counts else split.select(pl.len()).collect(engine="streaming").item()
        limit = limits[name]
        part = split.with_columns(sample_key(wanted, seed))
        if total > limit:
            margin = limit + 6 * math.sqrt(limit) + 32  # under the limit about once in 10^9 draws
            threshold = min(int(margin / total * 2**64), 2**64 - 1)
            part = part.filter(pl.col(_KEY) < pl.lit(threshold, dtype=pl.UInt64))
        frame = part.collect(engine="streaming")  # measured: the default engine held a 10M-row window whole
        if frame.height < min(limit, total):  # the threshold left too few: read the split whole (rare)
            frame = split.with_columns(sample_key(wanted, seed)).collect(engine="streaming")
        parts.append(frame.drop(_KEY).with_columns(pl.lit(name).alias(SPLIT)))
    return pl.concat(parts, how="vertical") if parts else pl.DataFrame()


def _loss(y: np.ndarray, p: np.ndarray, problem_type: str) -> float:
    if problem_type == "classification":
        p = np.clip(p, _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(np.mean((y - p) ** 2))


def permutation_importance(
    predictor: Predictor, cat: np.ndarray, num: np.ndarray, y: np.ndarray, names: Sequence[str], *, problem_type: str, seed: int,
    repeats: int = IMPORTANCE_REPEATS,
) -> dict[str, float]:  # fmt: skip
    """Each input column's share of the loss increase when it is shuffled (log loss or MSE; clipped at 0, summing to 1).

    Hand-written rather than ``sklearn.inspection.permutation_importance``: that wants one estimator with a
    scorer on one matrix, while both families here are a ``(cat, num)`` predictor function.
    All increases zero (or no rows) gives equal weights. ``names`` are the columns of ``cat`` then ``num``.
    """
    if not names:
        return {}
    if not len(y):
        return {n: 1.0 / len(names) for n in names}
    rng = np.random.default_rng(seed)
    rows, copies = len(y), len(names) * repeats
    # every shuffled copy in one predictor call: per-call overhead (scikit-learn's ~10-100 ms) is paid once
    cats, nums = np.tile(cat, (copies + 1, 1)), np.tile(num, (copies + 1, 1))
    for k in range(copies):
        j, at = k // repeats, slice((k + 1) * rows, (k + 2) * rows)
        block, col = (cats, j) if j < cat.shape[1] else (nums, j - cat.shape[1])
        block[at, col] = block[at, col][rng.permutation(rows)]
    predicted = np.asarray(predictor(cats, nums), dtype=np.float64).reshape(copies + 1, rows)
    base = _loss(y, predicted[0], problem_type)
    increase = [
        max(float(np.mean([_loss(y, predicted[1 + j * repeats + r], problem_type) for r in range(repeats)])) - base, 0.0)
        for j in range(len(names))
    ]
    total = sum(increase)
    if not total > 0:
        return {n: 1.0 / len(names) for n in names}
    return {n: v / total for n, v in zip(names, increase, strict=True)}


def _finite(value: object) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def column_stats(sample: pl.DataFrame, kinds: Mapping[str, str]) -> dict[str, dict]:
    """Per-column statistics: numeric → count, null share, mean, std, quantiles; categorical → count, distinct, top values."""
    stats: dict[str, dict] = {}
    rows = sample.height
    for name, kind in kinds.items():
        column = sample[name]
        if kind == NUMERIC:
            values = column.cast(pl.Float64).fill_nan(None).drop_nulls()
            stats[name] = {
                "count": values.len(), "null_share": (rows - values.len()) / rows if rows else 0.0,
                "mean": _finite(values.mean()), "std": _finite(values.std()),
                "quantiles": {str(q): _finite(values.quantile(q, "linear")) for q in QUANTILES},
            }  # fmt: skip
        else:
            values = column.drop_nulls()
            counts = values.value_counts(sort=True, name="n").sort(["n", name], descending=[True, False]).head(TOP_VALUES)
            stats[name] = {
                "count": values.len(), "null_share": (rows - values.len()) / rows if rows else 0.0, "distinct": values.n_unique(),
                "top": {str(v): n / rows for v, n in counts.iter_rows()} if rows else {},
            }  # fmt: skip
    return stats


def build_reference(
    rows: pl.DataFrame, predictor: Predictor, model_inputs: ModelInputs, spec: DatasetSpec, *, problem_type: str,
    target: str, seed: int, max_train_rows: int = 20_000, max_valid_rows: int = 10_000, importance_rows: int = 5_000,
    windows: Mapping[str, Mapping[str, str | None]] | None = None,
) -> dict[str, bytes]:  # fmt: skip
    """The reference files of a model version: ``{"reference.parquet": ..., "reference.json": ...}``.

    Args:
        rows: features-table rows of the training and validation windows: ``event_date``, the model input
            columns, ``target`` and ``split`` (``"train"`` | ``"valid"``), e.g. from :func:`reference_rows`.
        predictor: the in-memory model, ``(cat, num) -> probability of the positive class or value``,
            fed by :func:`aiflow.data.encoding.to_arrays`.
        model_inputs: the model's input columns and cardinalities.
        seed: the sample (smallest :func:`sample_key` per split) and the importance shuffles.
        max_train_rows, max_valid_rows: rows kept per split; importance_rows: rows the importance is
            measured on (validation rows first, then training rows).
        windows: the split windows to record, ``{split: {"from": date, "until": date (exclusive)}}``
            (default: the dates the sampled rows span).

    Raises:
        ValueError: ``rows`` lacks a column, or holds a split other than train and valid.
    """
    kinds = column_kinds(model_inputs)
    needed = [EVENT_DATE, SPLIT, target, *kinds]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise ValueError(f"reference rows of {spec.name} lack the column(s) {missing}")
    other = sorted(set(rows[SPLIT].unique().drop_nulls().to_list()) - {TRAIN, VALID})
    if other or rows[SPLIT].null_count():
        raise ValueError(f"reference rows of {spec.name}: split must be 'train' or 'valid', found {other or [None]}")
    values = list(dict.fromkeys([EVENT_DATE, *kinds, target]))
    keyed = rows.select(*values, SPLIT).filter(pl.col(target).is_not_null()).with_columns(sample_key(values, seed))
    limits = {TRAIN: max_train_rows, VALID: max_valid_rows}
    sample = pl.concat(
        [keyed.filter(pl.col(SPLIT) == s).sort([_KEY, *values], nulls_last=True).head(limits[s]) for s in (TRAIN, VALID)]
    )
    sample = sample.sort([SPLIT, EVENT_DATE, _KEY]).drop(_KEY)  # train first, then by date
    cat, num = to_arrays(sample, model_inputs.categorical, model_inputs.cardinalities, model_inputs.numeric)
    label = sample[target].cast(pl.Float64)
    prediction = np.asarray(predictor(cat, num), dtype=np.float64)
    if prediction.shape != (sample.height,):
        raise ValueError(f"the predictor returned shape {prediction.shape} for {sample.height} reference rows")
    frame = sample.select(EVENT_DATE, SPLIT, *kinds).with_columns(label.alias(LABEL), pl.Series(PREDICTION, prediction))

    is_valid = (sample[SPLIT] == VALID).to_numpy()
    order = np.concatenate([np.flatnonzero(is_valid), np.flatnonzero(~is_valid)])[:importance_rows]
    y = label.fill_null(0.0).to_numpy()
    importance = permutation_importance(
        predictor, cat[order], num[order], y[order], [*model_inputs.categorical, *model_inputs.numeric],
        problem_type=problem_type, seed=seed,
    )  # fmt: skip
    if windows is None:
        windows = {
            s: {"from": part[EVENT_DATE].min().isoformat(), "until": (part[EVENT_DATE].max() + dt.timedelta(days=1)).isoformat()}
            for s in (TRAIN, VALID) if (part := sample.filter(pl.col(SPLIT) == s)).height
        }  # fmt: skip
    meta = {
        "format": FORMAT, "dataset": spec.name, "problem_type": problem_type, "target": target,
        "threshold": 0.5 if problem_type == "classification" else None, "columns": kinds, "importance": importance,
        "rows": {TRAIN: int((~is_valid).sum()), VALID: int(is_valid.sum()), "importance": len(order)},
        "seed": seed, "windows": dict(windows), "stats": column_stats(sample, kinds),
    }  # fmt: skip
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False, default=str)
    return {PARQUET: buffer.getvalue(), JSON: text.encode()}


def read_reference(raw: Mapping[str, bytes]) -> Reference | None:
    """The reference of a bundle's files (e.g. ``VerifiedBundle.raw``); None for a bundle written before references.

    Raises:
        ValueError: only one of the two files is present, or either is not what this code reads (the message names it).
    """
    present = [name for name in FILES if name in raw]
    if not present:
        return None
    if len(present) == 1:
        raise ValueError(f"the bundle holds {present[0]} but not {(set(FILES) - set(present)).pop()}: its reference is incomplete")
    try:
        meta = json.loads(raw[JSON])
        fmt = meta["format"]
        if fmt != FORMAT:
            raise ValueError(f"format {fmt!r}; this code reads format {FORMAT}")
        columns, importance, problem_type = dict(meta["columns"]), dict(meta["importance"]), meta["problem_type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{JSON} is not a reference profile this code reads ({exc})") from None
    try:
        sample = pl.read_parquet(io.BytesIO(raw[PARQUET]))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ValueError(f"{PARQUET} is not a readable Parquet file ({exc})") from None
    missing = [c for c in [EVENT_DATE, SPLIT, *columns, LABEL, PREDICTION] if c not in sample.columns]
    if missing:
        raise ValueError(f"{PARQUET} lacks the column(s) {missing} that {JSON} names")
    return Reference(sample=sample, columns=columns, importance=importance, problem_type=problem_type, threshold=meta.get("threshold"), meta=meta)


def load_reference(store: ArtifactStore, path: str, digest: str, files: Mapping[str, str] | None = None) -> Reference | None:
    """Verify the bundle at ``path`` against ``digest`` (:func:`aiflow.models.bundle.verify_bundle`), then read its reference.

    Returns None for a bundle written before references existed.

    Raises:
        BundleIntegrityError: a file of the bundle (the reference files included) differs from what was
            recorded; the message names it.
    """
    return read_reference(verify_bundle(store, path, digest, files).raw)
