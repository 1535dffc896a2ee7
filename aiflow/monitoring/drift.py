"""Per-column data drift between a model's reference sample and a window of current data.

Evidently decides every verdict: each column is tested with Evidently's own stat tests
(``evidently.legacy.calculations.stattests``), the method is the one Evidently's ``DataDriftPreset``
would pick for that column (``get_stattest``: by column kind, reference size and number of distinct
values) unless overridden, and the threshold is the method's Evidently default unless overridden.
What this module adds is the scaling: only the drift columns are touched, the current frame is
sampled (seeded) to ``max_rows``, each column is converted to pandas alone and tested once, and no
plots are built. ``preset_verdicts`` runs the preset itself (the baseline of the tests and the
benchmark); ``drift_report_html`` renders Evidently's HTML report on bounded samples.

Missing values are handled as Evidently handles them: nulls, NaN and ±inf are dropped from each
column on each side before the test. A column left with no values on either side is not tested (a row
with method ``"no values"``, a null score and ``drifted = False``) where Evidently would raise.

Evidently takes ~5 s to import, so it is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

#: The two column kinds of the drift space (features-table columns: ``cat_*``/``cal_*`` codes are
#: categorical, ``num_*`` are numeric).
KINDS = ("categorical", "numeric")

#: Default bound on the rows of ``current`` that are tested (a seeded sample above it). Drift scores
#: of the default methods (normed Wasserstein, Jensen-Shannon) move by well under 0.01 between 200k
#: rows and the full frame, so verdicts only differ for columns sitting on the threshold.
DEFAULT_MAX_ROWS = 200_000

#: The method a column gets when it has no values left after dropping nulls.
NO_VALUES = "no values"

_RESULT_SCHEMA = {
    "column": pl.String,
    "kind": pl.String,
    "method": pl.String,
    "score": pl.Float64,
    "threshold": pl.Float64,
    "drifted": pl.Boolean,
}


@dataclass(frozen=True)
class DriftResult:
    """Per-column drift verdicts of one current window against a reference.

    Attributes:
        columns: One row per column of ``kinds``: ``column, kind, method, score, threshold, drifted``.
        share: Drifted columns / columns.
        reference_rows: Reference rows used (after the ``max_rows`` bound).
        current_rows: Current rows used (after the ``max_rows`` bound).
        current_rows_total: Rows of the current frame as given.
        sampled: Whether either side was sampled down to ``max_rows``.
        seed: The sampling seed.
    """

    columns: pl.DataFrame
    share: float
    reference_rows: int
    current_rows: int
    current_rows_total: int
    sampled: bool
    seed: int

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns, in ``kinds`` order."""
        return self.columns.filter(pl.col("drifted"))["column"].to_list()


def _column_type(kind: str) -> Any:
    from evidently.legacy.core import ColumnType

    return ColumnType.Categorical if kind == "categorical" else ColumnType.Numerical


def valid_methods(kind: str) -> list[str]:
    """Evidently stat test names usable on a column of this kind (``"categorical"`` or ``"numeric"``)."""
    from evidently.legacy.calculations.stattests import registry

    column_type = _column_type(kind)
    return sorted(name for name, by_type in registry._registered_stat_tests.items() if column_type in by_type)


def _check_kinds(kinds: Mapping[str, str]) -> None:
    if not kinds:
        raise ValueError("drift needs at least one column in `kinds`")
    bad = {c: k for c, k in kinds.items() if k not in KINDS}
    if bad:
        raise ValueError(f"unknown column kind(s) {bad}: each column is one of {list(KINDS)}")


def _resolve_overrides(kinds: Mapping[str, str], stattests: Mapping[str, str] | None, stattest: str | None) -> dict[str, Any]:
    """The Evidently ``StatTest`` forced on each column (absent: Evidently's default choice)."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest

    unknown = sorted(set(stattests or {}) - set(kinds))
    if unknown:
        raise ValueError(f"stattests name column(s) {unknown} that are not drift columns (known: {sorted(kinds)})")
    forced: dict[str, Any] = {}
    for column, kind in kinds.items():
        name = (stattests or {}).get(column, stattest)
        if name is None:
            continue
        try:
            forced[column] = get_registered_stattest(name, _column_type(kind))
        except Exception as exc:  # Evidently raises its own error types for unknown / wrong-type names
            raise ValueError(
                f"column {column!r} ({kind}): unknown drift method {name!r}; "
                f"valid methods for a {kind} column: {', '.join(valid_methods(kind))}"
            ) from exc
    return forced


def _bounded(frame: pl.DataFrame, columns: list[str], max_rows: int | None, seed: int) -> pl.DataFrame:
    frame = frame.select(columns)
    if max_rows is not None and frame.height > max_rows:
        return frame.sample(n=max_rows, seed=seed)
    return frame


def _values(series: pl.Series, kind: str, side: str) -> Any:
    """One column as the pandas Series Evidently tests: nulls, NaN and ±inf dropped."""
    if isinstance(series.dtype, (pl.Categorical, pl.Enum)):
        series = series.cast(pl.String)
    if kind == "numeric" and not series.dtype.is_numeric():
        raise ValueError(f"column {series.name!r} in the {side} data is {series.dtype}, a numeric column must be numeric")
    series = series.drop_nulls()
    if series.dtype.is_float():
        series = series.filter(series.is_finite())
    return series.to_pandas()


def detect_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    kinds: Mapping[str, str],
    *,
    stattests: Mapping[str, str] | None = None,
    stattest: str | None = None,
    threshold: float | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    seed: int = 0,
) -> DriftResult:
    """Test every column of ``kinds`` for drift of ``current`` against ``reference``, Evidently deciding.

    Args:
        reference: The reference sample (features-table columns).
        current: The window to test; may be large (sampled to ``max_rows``).
        kinds: Column -> ``"categorical"`` or ``"numeric"``; the columns tested, in this order.
        stattests: Per-column Evidently method name (``psi``, ``ks``, ``wasserstein``, ``jensenshannon``,
            ``chisquare``, ...), overriding ``stattest`` and the default choice.
        stattest: One Evidently method for every column without a per-column one.
        threshold: Threshold for every column (default: each method's Evidently default).
        max_rows: Bound on the rows used from each side (seeded sample above it); None = all rows.
        seed: Sampling seed.

    Returns:
        The per-column verdicts and the drifted share.

    Raises:
        ValueError: Empty ``current``; a column missing from either frame; an unknown kind; an unknown
            method name (naming the column and listing the valid names); a numeric column that is not.
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest

    _check_kinds(kinds)
    if current.height == 0:
        raise ValueError("the current data has no rows: there is nothing to test for drift")
    if reference.height == 0:
        raise ValueError("the reference data has no rows: drift needs a reference sample")
    columns = list(kinds)
    for side, frame in (("current", current), ("reference", reference)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"drift column(s) {missing} missing from the {side} data (it has {frame.columns})")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be positive or None, got {max_rows}")
    forced = _resolve_overrides(kinds, stattests, stattest)

    ref = _bounded(reference, columns, max_rows, seed)
    cur = _bounded(current, columns, max_rows, seed)
    rows: list[dict[str, Any]] = []
    for column in columns:
        kind = kinds[column]
        ref_values = _values(ref[column], kind, "reference")
        cur_values = _values(cur[column], kind, "current")
        if ref_values.empty or cur_values.empty:
            rows.append(dict(column=column, kind=kind, method=NO_VALUES, score=None, threshold=None, drifted=False))
            continue
        column_type = _column_type(kind)
        test = forced.get(column) or get_stattest(ref_values, cur_values, column_type, None)
        outcome = test(ref_values, cur_values, column_type, threshold)
        rows.append(
            dict(
                column=column,
                kind=kind,
                method=test.name,
                score=float(outcome.drift_score),
                threshold=float(outcome.actual_threshold),
                drifted=bool(outcome.drifted),
            )
        )
    table = pl.DataFrame(rows, schema=_RESULT_SCHEMA)
    return DriftResult(
        columns=table,
        share=table["drifted"].sum() / table.height,
        reference_rows=ref.height,
        current_rows=cur.height,
        current_rows_total=current.height,
        sampled=ref.height < reference.height or cur.height < current.height,
        seed=seed,
    )


def weighted_share(result: DriftResult, importance: Mapping[str, float]) -> float:
    """Share of importance on drifted columns (columns without importance weigh 0).

    When every tested column has zero importance, this is the plain drifted share.
    """
    return columns_share(result.columns, importance)


def columns_share(columns: pl.DataFrame, importance: Mapping[str, float]) -> float:
    """:func:`weighted_share` of per-column verdicts (``column``, ``drifted``), e.g. a subset of a result's columns or
    verdicts combined from two comparisons."""
    weights = [max(float(importance.get(c, 0.0)), 0.0) for c in columns["column"]]
    total = sum(weights)
    if total == 0:
        return float(columns["drifted"].mean() or 0.0)
    drifted = sum(w for w, d in zip(weights, columns["drifted"], strict=True) if d)
    return drifted / total


def _dataset(frame: pl.DataFrame, kinds: Mapping[str, str]) -> Any:
    from evidently import DataDefinition, Dataset

    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numeric"],
        categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
    )
    pdf = frame.select(list(kinds)).with_columns(pl.col(pl.Categorical, pl.Enum).cast(pl.String)).to_pandas()
    return Dataset.from_pandas(pdf, data_definition=definition)


def preset_verdicts(reference: pl.DataFrame, current: pl.DataFrame, kinds: Mapping[str, str]) -> dict[str, bool]:
    """Evidently's ``DataDriftPreset`` on the full frames: column -> drifted (the test FAILed).

    The baseline the fast path is checked against; slow on large frames (it computes every column twice
    and a plot per column).
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    _check_kinds(kinds)
    snapshot = Report([DataDriftPreset(include_tests=True)], include_tests=True).run(_dataset(current, kinds), _dataset(reference, kinds))
    verdicts: dict[str, bool] = {}
    prefix = "Value Drift for column "
    for test in snapshot.dict()["tests"]:
        name = test["name"]
        if name.startswith(prefix):
            verdicts[name[len(prefix) :]] = test["status"] == "FAIL"
    missing = [c for c in kinds if c not in verdicts]
    if missing:
        raise ValueError(f"Evidently's preset returned no verdict for column(s) {missing}")
    return {c: verdicts[c] for c in kinds}


def drift_report_html(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    kinds: Mapping[str, str],
    *,
    stattests: Mapping[str, str] | None = None,
    stattest: str | None = None,
    threshold: float | None = None,
    max_rows: int = 20_000,
    seed: int = 0,
) -> str:
    """Evidently's self-contained HTML drift report (``DataDriftPreset``) on seeded samples of both sides.

    The same method overrides as ``detect_drift``; both sides are sampled to ``max_rows`` so the report
    stays at a few seconds whatever the window size.

    Raises:
        ValueError: As ``detect_drift`` for empty frames, missing columns and unknown methods.
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    _check_kinds(kinds)
    if current.height == 0 or reference.height == 0:
        raise ValueError("the drift report needs rows on both sides (current and reference)")
    columns = list(kinds)
    for side, frame in (("current", current), ("reference", reference)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"drift column(s) {missing} missing from the {side} data (it has {frame.columns})")
    _resolve_overrides(kinds, stattests, stattest)
    preset = DataDriftPreset(
        method=stattest,
        per_column_method=dict(stattests) if stattests else None,
        threshold=threshold,
        include_tests=True,
    )
    snapshot = Report([preset], include_tests=True).run(
        _dataset(_bounded(current, columns, max_rows, seed), kinds),
        _dataset(_bounded(reference, columns, max_rows, seed), kinds),
    )
    return snapshot.get_html_str(as_iframe=False)
