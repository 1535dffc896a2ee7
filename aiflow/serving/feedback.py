"""Feedback: ground-truth labels for earlier request ids, merged into ``labels/<dataset>`` (Delta).

Idempotent by a Delta merge on ``request_id``: the same id sent twice keeps one row, the latest label wins
(within one call, the last occurrence). An id the server never served is kept with ``known = false``
rather than dropped (it may come from another server whose log has not flushed yet, or be a client bug the
monitoring wants to see). Concurrent merges that conflict are retried.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable

import polars as pl
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from aiflow.serving.schema import RecordError
from aiflow.storage.lake import Lake

SCHEMA = {"request_id": pl.String, "label": pl.Float64, "received_at": pl.Datetime("us", "UTC"), "known": pl.Boolean}


def labels_table(dataset: str) -> str:
    return f"labels/{dataset}"


#: A regression label beyond this magnitude is refused: its square overflows every error metric (1e308 is finite).
MAX_REGRESSION_LABEL = 1e12


def parse_feedback(items: object, problem_type: str | None = None) -> list[tuple[str, float]]:
    """``[{"request_id": ..., "label": ...}, ...]`` → (id, label) pairs, last occurrence of an id winning.

    Args:
        problem_type: ``classification`` takes 0 or 1 (or a boolean), ``regression`` a finite number of magnitude at
            most :data:`MAX_REGRESSION_LABEL`; None (the dataset's model not loaded yet) any finite number.

    Raises:
        RecordError: an item is not an object, lacks an id, or its label is not a number or a boolean, or is out of the
            problem type's range (named by position and field).
    """
    if not isinstance(items, list) or not items:
        raise RecordError([(0, "labels", "expected a non-empty list of {\"request_id\": ..., \"label\": ...} objects")])
    problems, out = [], {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append((i, "<item>", f"expected a JSON object, got {type(item).__name__}"))
            continue
        rid, label = item.get("request_id"), item.get("label")
        if not isinstance(rid, str) or not rid:
            problems.append((i, "request_id", f"expected a non-empty string, got {rid!r}"))
        if isinstance(label, bool):
            label = float(label)
        if not isinstance(label, int | float) or not math.isfinite(label):
            problems.append((i, "label", f"expected a number (class or value), got {label!r}"))
        elif problem_type == "classification" and label not in (0, 1):
            problems.append((i, "label", f"a classification label is 0 or 1 (or true/false), got {label!r}"))
        elif problem_type == "regression" and abs(label) > MAX_REGRESSION_LABEL:
            problems.append((i, "label", f"a regression label's magnitude is at most {MAX_REGRESSION_LABEL:g}, got {label!r}"))
        elif isinstance(rid, str) and rid:
            out.pop(rid, None)
            out[rid] = float(label)
    if problems:
        raise RecordError(problems)
    return list(out.items())


@retry(retry=retry_if_exception_type(CommitFailedError), stop=stop_after_attempt(8), wait=wait_random_exponential(0.05, max=2), reraise=True)
def record_feedback(lake: Lake, dataset: str, pairs: list[tuple[str, float]], known: Callable[[Iterable[str]], set[str]]) -> dict:
    """Merge labels into ``labels/<dataset>``; ``known(ids)`` says which ids were served. Returns counts."""
    ids = [rid for rid, _ in pairs]
    served = known(ids)
    now = dt.datetime.now(dt.UTC)
    frame = pl.DataFrame(
        {"request_id": ids, "label": [lab for _, lab in pairs], "received_at": [now] * len(ids), "known": [r in served for r in ids]},
        schema=SCHEMA,
    )
    table = labels_table(dataset)
    if not lake.exists(table):
        lake.append(table, frame.head(0))  # create empty, then merge (a concurrent creator is fine)
    (
        DeltaTable(lake.uri(table), storage_options=lake.storage_options or None)
        .merge(frame.to_arrow(), predicate="t.request_id = s.request_id", source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return {"received": len(ids), "known": sum(frame["known"]), "unknown": [r for r in ids if r not in served]}


def read_labels(lake: Lake, dataset: str) -> pl.DataFrame:
    """The labels of ``dataset`` (one row per request id)."""
    table = labels_table(dataset)
    return lake.scan(table).collect() if lake.exists(table) else pl.DataFrame(schema=SCHEMA)
