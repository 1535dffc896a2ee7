"""The inference log: one row per scored record in ``inference_log/<dataset>`` (Delta, partitioned by UTC date).

Rows are buffered in memory and appended in batches off the request path by one background thread: when
``batch_rows`` rows are waiting, or ``interval`` seconds after the last flush, whichever comes first. Closing
the log (the server's graceful shutdown, e.g. on SIGTERM) flushes what is left. **Loss bound on a hard kill**
(``kill -9``, OOM): the rows received since the last flush, i.e. at most one flush interval of traffic (plus
an append in flight). A failed append keeps its rows for the next flush and counts a flush error. Several
server processes may append to the same table at once: Delta appends do not conflict.

Columns: ``request_id``, ``time`` (UTC), ``date`` (partition), ``dataset``, ``model_version``, ``variant``,
``input`` (the record as received, JSON text), ``prediction`` (class or value), ``probability`` (of the
positive class; null for regression), ``latency_ms`` (of the whole request), ``status``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson
import polars as pl

from aiflow.storage.lake import Lake

log = logging.getLogger("aiflow.serving")

SCHEMA = {
    "request_id": pl.String,
    "time": pl.Datetime("us", "UTC"),
    "date": pl.Date,
    "dataset": pl.String,
    "model_version": pl.Int64,
    "variant": pl.String,
    "input": pl.String,
    "prediction": pl.Float64,
    "probability": pl.Float64,
    "latency_ms": pl.Float64,
    "status": pl.String,
}


_stdlib_dumps = json.JSONEncoder(default=str).encode


def _dumps(record: dict) -> str:
    """A record as JSON text: orjson (9x faster than the stdlib encoder; compact, UTF-8), or the stdlib encoder for what
    orjson refuses (an integer past 64 bits). Every reader parses the text, so the layout does not matter; a NaN, which
    JSON cannot hold, is written ``null`` (the server answers 422 to one in a model input; an extra field may hold one).

    Raises:
        UnencodableRecord: neither encoder can write it (nested past the stdlib's recursion limit, say).
    """
    try:
        return orjson.dumps(record, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        try:
            text = _stdlib_dumps(record)
            if "NaN" in text or "Infinity" in text:  # the stdlib writes them bare, which no JSON reader takes: null, as orjson
                text = _stdlib_dumps(json.loads(text, parse_constant=lambda _: None))
            return text
        except (TypeError, ValueError, RecursionError, OverflowError) as exc:
            raise UnencodableRecord(f"{type(exc).__name__}: {str(exc)[:200]}") from None


class UnencodableRecord(ValueError):
    """A record no JSON encoder can write: logged as an error row with its request id, never lost silently."""


#: The status of a log row whose record could not be written as JSON (its ``input`` says why).
UNENCODABLE = "error: input not encodable as JSON"


def _encoded(record: dict) -> tuple[str, bool]:
    try:
        return _dumps(record), True
    except UnencodableRecord as exc:
        return orjson.dumps({"_aiflow_error": str(exc)}).decode(), False


@dataclass(frozen=True)
class LogBatch:
    """The scored records of one request, column-wise; the records become JSON text at flush, off the request path."""

    request_ids: list[str]
    records: list[dict]  # as received (not mutated afterwards)
    dataset: str
    version: int
    variant: str
    predictions: list[float]
    probabilities: list[float | None]
    latency_ms: float
    time: dt.datetime
    status: str = "ok"

    def __len__(self) -> int:
        return len(self.request_ids)


_PER_REQUEST = ("time", "dataset", "model_version", "variant", "latency_ms", "status")


def _frame(batches: list[LogBatch]) -> pl.DataFrame:
    """The log rows of ``batches``: the per-request columns typed once per request and repeated by index (typing them
    per row cost 2.3 us/row), the per-record ones built from the concatenated lists."""
    per_request = pl.DataFrame(
        {name: [getattr(b, "version" if name == "model_version" else name) for b in batches] for name in _PER_REQUEST},
        schema={name: SCHEMA[name] for name in _PER_REQUEST},
    ).with_columns(pl.col("time").dt.date().alias("date"))
    repeated = per_request[np.repeat(np.arange(len(batches)), [len(b) for b in batches])]
    encoded = [_encoded(r) for b in batches for r in b.records]
    per_record = pl.DataFrame(
        {"request_id": [i for b in batches for i in b.request_ids], "input": [text for text, _ in encoded],
         "prediction": [v for b in batches for v in b.predictions], "probability": [v for b in batches for v in b.probabilities]},
        schema={name: SCHEMA[name] for name in ("request_id", "input", "prediction", "probability")},
    )  # fmt: skip
    frame = pl.concat([repeated, per_record], how="horizontal").select(list(SCHEMA))
    failed = [i for i, (_, ok) in enumerate(encoded) if not ok]
    if failed:
        log.error("inference log: %d record(s) could not be encoded as JSON; logged as error rows (request ids %s)",
                  len(failed), ", ".join(frame["request_id"].gather(failed[:5]).to_list()))  # fmt: skip
        frame = frame.with_columns(pl.when(pl.int_range(pl.len()).is_in(failed)).then(pl.lit(UNENCODABLE)).otherwise("status").alias("status"))
    return frame


def log_table(dataset: str) -> str:
    """The inference log of ``dataset`` under the lake root."""
    return f"inference_log/{dataset}"


class InferenceLog:
    """Buffered, batched appends of scored records to the lake.

    Args:
        lake: where the tables live.
        interval: seconds between time-triggered flushes (the hard-kill loss bound).
        batch_rows: rows that trigger a flush before the interval ends.
        on_flush: called with (rows appended, error or None) after every flush attempt (metrics).
    """

    def __init__(self, lake: Lake, *, interval: float = 1.0, batch_rows: int = 1000,
                 on_flush: Callable[[int, Exception | None], None] | None = None):  # fmt: skip
        self.lake, self.interval, self.batch_rows = lake, interval, batch_rows
        self._rows: list[dict | LogBatch] = []  # row dicts, or one LogBatch per request
        self._pending = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._on_flush = on_flush
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()  # one append at a time (the thread, or close)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def pending(self) -> int:
        return self._pending

    def add(self, rows: list[dict]) -> None:
        """Queue rows (never blocks on storage)."""
        with self._cond:
            self._rows.extend(rows)
            self._pending += len(rows)
            if self._pending >= self.batch_rows:
                self._cond.notify()

    def add_batch(self, batch: LogBatch) -> None:
        """Queue the rows of one request, column-wise (never blocks on storage; JSON text is made at flush)."""
        with self._cond:
            self._rows.append(batch)
            self._pending += len(batch)
            if self._pending >= self.batch_rows:
                self._cond.notify()

    def alive(self) -> bool:
        """Whether the background thread runs (readiness turns red when it does not)."""
        return self._thread is None or self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stopping and self._pending < self.batch_rows:
                    self._cond.wait(self.interval)
                if self._stopping:
                    return
            try:
                self.flush()
            except Exception as exc:  # never die on one bad flush: say what was lost, count it, go on
                log.exception("inference log: a flush failed and its rows were lost: %s", exc)
                if self._on_flush:
                    self._on_flush(0, exc)

    def flush(self) -> int:
        """Append every queued row now (one commit per dataset); return the rows appended."""
        with self._flush_lock:
            with self._cond:
                items, self._rows, self._pending = self._rows, [], 0
            if not items:
                return 0
            rows = [i for i in items if isinstance(i, dict)]
            batches = [i for i in items if isinstance(i, LogBatch)]
            frames = [pl.DataFrame(rows, schema=SCHEMA)] if rows else []
            if batches:
                frames.append(_frame(batches))
            frame = pl.concat(frames) if len(frames) > 1 else frames[0]
            done = 0
            for (dataset,), part in frame.partition_by("dataset", as_dict=True).items():
                try:
                    self.lake.append(log_table(str(dataset)), part, partition_by=["date"], metadata={"writer": "aiflow serve"})
                    done += part.height
                except Exception as exc:  # keep the rows for the next flush; the error is counted and logged
                    log.error("inference log: appending %d rows to %s failed (kept for the next flush): %s",
                              part.height, self.lake.uri(log_table(str(dataset))), exc)  # fmt: skip
                    with self._cond:
                        self._rows[:0] = part.to_dicts()
                        self._pending += part.height
                    if self._on_flush:
                        self._on_flush(0, exc)
            if self._on_flush and done:
                self._on_flush(done, None)
            return done

    def close(self) -> int:
        """Stop the background thread and flush what is left; return the rows appended by this last flush."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        return self.flush()


def log_rows(*, request_ids: list[str], inputs: list[str], dataset: str, version: int, variant: str, predictions: list[float],
             probabilities: list[float | None], latency_ms: float, status: str = "ok", now: dt.datetime | None = None) -> list[dict]:  # fmt: skip
    """Rows for the scored records of one request."""
    now = now or dt.datetime.now(dt.UTC)
    return [
        {"request_id": rid, "time": now, "date": now.date(), "dataset": dataset, "model_version": version, "variant": variant,
         "input": text, "prediction": pred, "probability": prob, "latency_ms": latency_ms, "status": status}  # fmt: skip
        for rid, text, pred, prob in zip(request_ids, inputs, predictions, probabilities, strict=True)
    ]
