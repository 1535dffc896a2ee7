"""The split policy made concrete: which event dates train, validate and test a model.

One function turns the spec's :class:`~aiflow.spec.Split` and the event dates of the data into
:class:`Windows` (concrete dates). Training (``aiflow.train.data``), evaluation
(``aiflow.evaluation.validation.held_out_rows``), the feature-state fit (``aiflow.data.refine``) and
the training request's lineage (``aiflow.train.request``) all call it, so they cannot disagree.

* ``fixed``: the spec's dates, whatever the data.
* ``relative``: counted in calendar days back from the newest event date ``last`` of the pinned data,
  in time order train | valid | test: test = ``(last - test_days, last]``, validation = the
  ``valid_days`` before it, training = the ``train_days`` before that (all history when unset). The
  test window is the newest data, so a model is judged on the period closest to the one it will
  score, and a retrain after new data trains on newer rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from aiflow.spec import EVENT_DATE, Split


@dataclass(frozen=True)
class Windows:
    """Concrete windows (event dates, UTC): train ``[train_from, valid_from)``, valid ``[valid_from, test_from)``,
    test ``[test_from, test_until]``; ``train_from``/``test_until`` None means unbounded."""

    policy: str
    train_from: dt.date | None
    valid_from: dt.date
    test_from: dt.date
    test_until: dt.date | None = None

    def train(self) -> pl.Expr:
        """Polars filter of the training rows."""
        where = pl.col(EVENT_DATE) < self.valid_from
        return where if self.train_from is None else where & (pl.col(EVENT_DATE) >= self.train_from)

    def valid(self) -> pl.Expr:
        return (pl.col(EVENT_DATE) >= self.valid_from) & (pl.col(EVENT_DATE) < self.test_from)

    def test(self) -> pl.Expr:
        where = pl.col(EVENT_DATE) >= self.test_from
        return where if self.test_until is None else where & (pl.col(EVENT_DATE) <= self.test_until)

    def as_split(self) -> Split:
        """The same windows as a fixed split (what a pinned training request records)."""
        return Split(kind="fixed", train_from=self.train_from, valid_from=self.valid_from, test_from=self.test_from)

    def as_dict(self) -> dict[str, str | None]:
        """Plain strings for lineage and metadata."""
        iso = {k: (v.isoformat() if v is not None else None) for k, v in
               (("train_from", self.train_from), ("valid_from", self.valid_from), ("test_from", self.test_from), ("test_until", self.test_until))}  # fmt: skip
        return {"policy": self.policy, **iso}

    def describe(self) -> str:
        """``train [start, valid_from) | valid [...) | test [...]`` for logs."""
        start = self.train_from.isoformat() if self.train_from else "all history"
        end = self.test_until.isoformat() if self.test_until else "on"
        return f"{self.policy} split: train {start} .. <{self.valid_from} | valid {self.valid_from} .. <{self.test_from} | test {self.test_from} .. {end}"


def split_windows(split: Split, dates: Iterable[dt.date]) -> Windows:
    """The concrete windows of ``split`` for data holding these event dates.

    Raises:
        ValueError: a relative split over no data at all (nothing to count back from).
    """
    if not split.relative:
        # the checks of the spec guarantee both dates for a fixed split
        return Windows("fixed", split.train_from, split.valid_from, split.test_from)  # type: ignore[arg-type]
    last = max(dates, default=None)
    if last is None:
        raise ValueError("split: a relative split counts back from the newest event date, but the data holds no rows")
    test_from = last - dt.timedelta(days=split.test_days - 1)  # type: ignore[operator]
    valid_from = test_from - dt.timedelta(days=split.valid_days)  # type: ignore[arg-type]
    train_from = None if split.train_days is None else valid_from - dt.timedelta(days=split.train_days)
    return Windows("relative", train_from, valid_from, test_from, last)


def frame_windows(frame: pl.LazyFrame, split: Split) -> Windows:
    """The windows of ``split`` over the event dates of ``frame`` (read only for a relative split)."""
    if not split.relative:
        return split_windows(split, [])
    last = frame.select(pl.col(EVENT_DATE).max()).collect().item()
    return split_windows(split, [] if last is None else [last])


def pinned_windows(uri: str, version: int, split: Split, storage_options: dict | None = None) -> Windows:
    """The windows of ``split`` over the features table ``uri`` at exactly ``version``."""
    if not split.relative:
        return split_windows(split, [])
    try:
        return frame_windows(pl.scan_delta(uri, version=version, storage_options=storage_options or None), split)
    except ValueError as exc:
        raise ValueError(f"{uri} at version {version}: {exc}") from exc
