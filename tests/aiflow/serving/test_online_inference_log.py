"""The inference log's buffering on real Delta tables: a flush by size before the interval, a flush by time, a failed append
that keeps its rows (counted) and lands them at the next flush, one table per dataset, rows partitioned by UTC date."""

from __future__ import annotations

import datetime as dt
import math
import shutil
import sys
import time
from pathlib import Path

import polars as pl

from aiflow.serving.inference_log import InferenceLog, log_rows, log_table
from aiflow.storage.lake import Lake


def rows(n: int, dataset: str = "trips", start: int = 0, now: dt.datetime | None = None) -> list[dict]:
    return log_rows(request_ids=[f"r{start + i}" for i in range(n)], inputs=['{"x": 1}'] * n, dataset=dataset, version=3,
                    variant="champion", predictions=[1.0] * n, probabilities=[0.75] * n, latency_ms=2.5, now=now)  # fmt: skip


def ids(lake: Lake, dataset: str = "trips") -> set[str]:
    table = log_table(dataset)
    return set(lake.scan(table).collect()["request_id"].to_list()) if lake.exists(table) else set()


def wait_until(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_flushes_by_size_before_the_interval_and_by_time_after_it(tmp_path):
    lake = Lake(tmp_path / "lake")
    log = InferenceLog(lake, interval=60, batch_rows=5)
    log.start()
    try:
        log.add(rows(3))
        time.sleep(0.5)
        assert ids(lake) == set() and log.pending() == 3  # under the size, long before the interval
        log.add(rows(2, start=3))
        assert wait_until(lambda: ids(lake) == {f"r{i}" for i in range(5)})  # the size triggered it
    finally:
        log.close()
    timed = InferenceLog(Lake(tmp_path / "lake2"), interval=0.3, batch_rows=1000)
    timed.start()
    try:
        timed.add(rows(2, dataset="fares"))
        assert wait_until(lambda: ids(timed.lake, "fares") == {"r0", "r1"}, timeout=5)  # the interval triggered it
    finally:
        timed.close()


def test_a_failed_append_keeps_its_rows_and_the_next_flush_lands_them(tmp_path):
    lake = Lake(tmp_path / "lake")
    events: list[tuple[int, Exception | None]] = []
    log = InferenceLog(lake, interval=60, batch_rows=10_000, on_flush=lambda n, e: events.append((n, e)))
    blocker = tmp_path / "lake" / "inference_log" / "trips"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a Delta table")  # a file where the table's folder must go: the append fails
    log.add(rows(4))
    log.add(rows(2, dataset="fares", start=10))
    assert log.flush() == 2  # fares landed, trips did not
    assert log.pending() == 4 and [n for n, e in events if e is not None] == [0] and events[-1] == (2, None)
    blocker.unlink()
    shutil.rmtree(blocker, ignore_errors=True)
    assert log.close() == 4
    assert ids(lake) == {"r0", "r1", "r2", "r3"} and ids(lake, "fares") == {"r10", "r11"}


def test_rows_are_partitioned_by_their_utc_date(tmp_path):
    lake = Lake(tmp_path / "lake")
    log = InferenceLog(lake)
    late = dt.datetime(2026, 3, 1, 23, 59, tzinfo=dt.UTC)
    log.add(rows(2, now=late) + rows(1, start=5, now=late + dt.timedelta(minutes=2)))
    assert log.close() == 3
    table = lake.scan(log_table("trips")).collect().sort("request_id")
    assert table["date"].to_list() == [dt.date(2026, 3, 1)] * 2 + [dt.date(2026, 3, 2)]
    assert table.schema["time"] == pl.Datetime("us", "UTC") and table["probability"].to_list() == [0.75] * 3
    assert lake.table(log_table("trips")).metadata().partition_columns == ["date"]


def test_request_batches_become_the_same_rows_as_one_row_per_record(tmp_path):
    """The flush types the per-request columns once per request: the rows must equal the row-by-row ones, for requests of
    different sizes, datasets, variants, regression (no probability) and a UTC date boundary; inputs keep their values
    (non-ASCII, nested, an integer past 64 bits, which orjson refuses and the stdlib encoder writes)."""
    import json

    from aiflow.serving.inference_log import LogBatch

    late = dt.datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=dt.UTC)
    batches = [
        LogBatch([f"a{i}" for i in range(3)], [{"x": i, "city": "Zürich", "tags": [1, {"k": None}]} for i in range(3)], "trips", 2,
                 "champion", [1.0, 0.0, 1.0], [0.9, 0.1, 0.8], 3.25, late),
        LogBatch(["b0"], [{"x": 2**70}], "fares", 5, "shadow", [12.5], [None], 1.0, late + dt.timedelta(microseconds=1)),
        LogBatch(["c0", "c1"], [{"x": -1.5}, {}], "trips", 3, "canary", [0.0, 1.0], [0.2, 0.7], 0.5, late - dt.timedelta(days=40)),
    ]  # fmt: skip
    log = InferenceLog(Lake(tmp_path / "lake"))
    for b in batches:
        log.add_batch(b)
    assert log.flush() == 6
    got = pl.concat([log.lake.scan(log_table(d)).collect() for d in ("trips", "fares")]).sort("request_id")
    expected = pl.concat([
        pl.DataFrame(log_rows(request_ids=b.request_ids, inputs=[json.dumps(r) for r in b.records], dataset=b.dataset, version=b.version,
                              variant=b.variant, predictions=b.predictions, probabilities=b.probabilities, latency_ms=b.latency_ms, now=b.time), schema=got.schema)
        for b in batches
    ]).sort("request_id")  # fmt: skip
    assert got.drop("input").equals(expected.drop("input"))
    assert [json.loads(t) for t in got["input"]] == [json.loads(t) for t in expected["input"]]
    assert got.filter(pl.col("request_id") == "b0")["date"].item() == dt.date(2026, 3, 2)  # the row's own UTC date


def test_a_poison_record_becomes_an_error_row_and_the_writer_keeps_logging(tmp_path):
    """A record nested 1,018 deep (orjson refuses it, the stdlib encoder overflows its recursion) once killed the writer
    thread: nothing logged afterwards, no error counted, readiness green. Now it is an error row with its request id,
    the requests around it are logged, and the thread lives on."""
    from aiflow.serving.inference_log import UNENCODABLE, LogBatch

    lake = Lake(tmp_path / "lake")
    flushes: list[tuple[int, Exception | None]] = []
    log = InferenceLog(lake, interval=0.1, batch_rows=1000, on_flush=lambda n, e: flushes.append((n, e)))
    log.start()
    deep: object = "bottom"
    # deeper than the interpreter's recursion limit, whatever it is now: a library in the same process may have raised
    # it (cel-python sets 2,500), and then 1,018 levels are encodable, hence logged as "ok", rightly
    for _ in range(sys.getrecursionlimit() + 18):
        deep = [deep]
    now = dt.datetime.now(dt.UTC)

    def batch(rid: str, record: dict) -> LogBatch:
        return LogBatch([rid], [record], "trips", 1, "champion", [1.0], [0.7], 1.0, now)

    try:
        log.add_batch(batch("before", {"x": 1}))
        log.add_batch(batch("poison", {"x": 1, "extra": deep}))
        assert wait_until(lambda: {"before", "poison"} <= ids(lake))
        log.add_batch(batch("after", {"x": 2}))
        assert wait_until(lambda: "after" in ids(lake)) and log.alive()
    finally:
        log.close()
    table = lake.scan(log_table("trips")).collect()
    poison = table.filter(pl.col("request_id") == "poison").row(0, named=True)
    assert poison["status"] == UNENCODABLE and "RecursionError" in poison["input"]
    assert table.filter(pl.col("request_id") != "poison")["status"].to_list() == ["ok", "ok"]
    assert all(e is None for _, e in flushes)


def test_a_flush_of_error_rows_alone_writes_the_log_schema(tmp_path):
    """The server logs a refused request with no prediction and no probability (and any number type for its latency):
    a flush holding only such rows still creates the table with the log's column types, and scored rows append to it."""
    from aiflow.serving.inference_log import SCHEMA, LogBatch

    when = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    log = InferenceLog(Lake(tmp_path / "lake"))
    log.add_batch(
        LogBatch(["e0", "e1"], [{"x": "bad"}, {}], "trips", 4, "champion", [None, None], [None, None], 7, when, "error: HTTP 422")
    )
    assert log.flush() == 2
    table = log.lake.scan(log_table("trips")).collect()
    assert dict(table.schema) == SCHEMA
    assert table.sort("request_id").select("request_id", "prediction", "probability", "latency_ms", "status").rows() == [
        ("e0", None, None, 7.0, "error: HTTP 422"), ("e1", None, None, 7.0, "error: HTTP 422")]  # fmt: skip
    log.add_batch(LogBatch(["s0"], [{"x": 1}], "trips", 4, "champion", [1], [0.25], 2.5, when))
    assert log.flush() == 1
    scored = log.lake.scan(log_table("trips")).filter(pl.col("request_id") == "s0").collect()
    assert scored.select("prediction", "probability", "latency_ms", "status").row(0) == (1.0, 0.25, 2.5, "ok")


class _Unprintable:
    """An object whose text cannot be made: both encoders fail on it with its own (long) error."""

    def __str__(self) -> str:
        raise TypeError("no text for this object: " + "x" * 300)


def test_unencodable_records_say_why_and_the_log_names_them(tmp_path, caplog):
    """An error row's input is a JSON object naming the encoder's error (its type, then at most 200 characters of its
    message); the error log says how many records failed and names the first five request ids."""
    import json
    import logging

    from aiflow.serving.inference_log import UNENCODABLE, LogBatch

    circular: dict = {"x": 1}
    circular["self"] = circular
    records = [{"x": 1}, circular, *[{"x": _Unprintable()}] * 5]
    ids_ = ["ok", "loop", "p1", "p2", "p3", "p4", "p5"]
    when = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    log = InferenceLog(Lake(tmp_path / "lake"))
    log.add_batch(LogBatch(ids_, records, "trips", 1, "champion", [1.0] * 7, [0.5] * 7, 1.0, when))
    with caplog.at_level(logging.ERROR, logger="aiflow.serving"):
        assert log.flush() == 7
    rows_ = {r["request_id"]: r for r in log.lake.scan(log_table("trips")).collect().iter_rows(named=True)}
    assert (json.loads(rows_["ok"]["input"]), rows_["ok"]["status"]) == ({"x": 1}, "ok")
    assert json.loads(rows_["loop"]["input"]) == {"_aiflow_error": "ValueError: Circular reference detected"}
    expected = {"_aiflow_error": "TypeError: " + ("no text for this object: " + "x" * 300)[:200]}
    assert all(json.loads(rows_[i]["input"]) == expected for i in ids_[2:])
    assert [rows_[i]["status"] for i in ids_] == ["ok"] + [UNENCODABLE] * 6
    assert [r.getMessage() for r in caplog.records if r.name == "aiflow.serving"] == [
        "inference log: 6 record(s) could not be encoded as JSON; logged as error rows (request ids loop, p1, p2, p3, p4)"]  # fmt: skip


def test_nan_and_infinity_are_written_null_by_either_encoder(tmp_path):
    """JSON has no NaN nor infinity: they are written null, also in a record orjson refuses (an integer past 64 bits,
    written by the stdlib encoder; each special value alone, then all together), so monitoring's reader
    (``pl.read_ndjson``) still reads every logged input."""
    import json

    from aiflow.serving.inference_log import LogBatch

    # keys that do not spell the constants: the text must be rewritten because of the values, not the keys
    special = {"not_a_number": math.nan, "plus": math.inf, "minus": -math.inf, "nested": [math.nan, {"v": math.inf}]}
    nulls = {"not_a_number": None, "plus": None, "minus": None, "nested": [None, {"v": None}]}
    alone = [{name: value} for name, value in special.items()]
    records = [{"x": 1, "text": "NaN"} | special] + [{"x": 2**70} | one for one in alone] + [{"x": 2**70, "text": "NaN"} | special]
    expected = [{"x": 1, "text": "NaN"} | nulls] + [{"x": 2**70, name: nulls[name]} for name in special] + [
        {"x": 2**70, "text": "NaN"} | nulls]  # fmt: skip
    request_ids = [f"r{i}" for i in range(len(records))]
    when = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    log = InferenceLog(Lake(tmp_path / "lake"))
    log.add_batch(LogBatch(request_ids, records, "trips", 1, "champion", [1.0] * len(records), [0.5] * len(records), 1.0, when))
    assert log.flush() == len(records)
    inputs = log.lake.scan(log_table("trips")).collect().sort("request_id")["input"].to_list()

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} in a logged input: not JSON")

    assert [json.loads(t, parse_constant=strict) for t in inputs] == expected
    read = pl.read_ndjson("\n".join(inputs).encode(), infer_schema_length=None)
    assert read["x"].to_list() == [1] + [2**70] * 5 and read["not_a_number"].to_list() == [None] * 6


def test_request_batches_count_toward_the_size_trigger_and_the_writer_reports_its_life(tmp_path):
    """Requests queued column-wise add up: the log flushes once exactly ``batch_rows`` rows wait, not before; a log not
    started yet counts as alive (nothing to watch), a started one as alive, a closed one as not."""
    from aiflow.serving.inference_log import LogBatch

    def request(ids_: list[str]) -> LogBatch:
        n = len(ids_)
        return LogBatch(ids_, [{"x": 1}] * n, "trips", 1, "champion", [1.0] * n, [0.5] * n, 1.0, dt.datetime.now(dt.UTC))

    lake = Lake(tmp_path / "lake")
    log = InferenceLog(lake, interval=60, batch_rows=5)
    assert log.alive()
    log.start()
    try:
        assert log.alive()
        log.add_batch(request(["a", "b", "c"]))
        log.add_batch(request(["d"]))
        time.sleep(0.5)
        assert ids(lake) == set() and log.pending() == 4  # under the size, long before the interval
        log.add_batch(request(["e"]))
        assert wait_until(lambda: ids(lake) == {"a", "b", "c", "d", "e"})  # exactly the size triggered it
        assert log.pending() == 0
    finally:
        log.close()
    assert not log.alive()


def test_rows_without_a_time_are_stamped_now_in_utc():
    before = dt.datetime.now(dt.UTC)
    stamped = rows(2)
    after = dt.datetime.now(dt.UTC)
    assert [r["time"].tzinfo for r in stamped] == [dt.UTC, dt.UTC] and before <= stamped[0]["time"] <= after
    assert stamped[0]["date"] == stamped[0]["time"].date()


def test_rows_and_request_batches_flushed_together_all_land_with_the_log_types(tmp_path):
    """Rows queued one dict each (regression: no probability; a whole-number prediction and latency) and a request batch
    land in the same flush, typed as the log's schema; a flush with nothing queued appends nothing."""
    from aiflow.serving.inference_log import SCHEMA, LogBatch

    when = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    log = InferenceLog(Lake(tmp_path / "lake"))
    assert log.flush() == 0 and not log.lake.exists(log_table("trips"))
    log.add(log_rows(request_ids=["r0", "r1"], inputs=['{"x": 1}'] * 2, dataset="trips", version=2, variant="champion",
                     predictions=[3, 4], probabilities=[None, None], latency_ms=2, now=when))  # fmt: skip
    log.add_batch(LogBatch(["b0"], [{"x": 2}], "trips", 2, "champion", [5.5], [None], 1.5, when))
    assert log.flush() == 3
    table = log.lake.scan(log_table("trips")).collect().sort("request_id")
    assert dict(table.schema) == SCHEMA
    assert table.select("request_id", "prediction", "probability", "latency_ms").rows() == [
        ("b0", 5.5, None, 1.5), ("r0", 3.0, None, 2.0), ("r1", 4.0, None, 2.0)]  # fmt: skip
    assert log.flush() == 0 and log.close() == 0


def test_a_flush_that_fails_in_the_writer_is_logged_and_counted_and_the_writer_goes_on(tmp_path, caplog):
    """A row the log cannot even type (a caller's mistake) fails its whole flush in the writer thread: the error is
    logged with its traceback, counted as (0 rows, the error), and the writer lives on to log the next rows."""
    import logging

    lake = Lake(tmp_path / "lake")
    flushes: list[tuple[int, Exception | None]] = []
    log = InferenceLog(lake, interval=0.1, batch_rows=1000, on_flush=lambda n, e: flushes.append((n, e)))
    log.start()
    try:
        with caplog.at_level(logging.ERROR, logger="aiflow.serving"):
            log.add([{"request_id": "broken", "time": "not a time"}])
            assert wait_until(lambda: any(e is not None for _, e in flushes))
        log.add(rows(1, start=7))
        assert wait_until(lambda: ids(lake) == {"r7"}) and log.alive()
    finally:
        log.close()
    (count, error), *rest = flushes
    assert count == 0 and isinstance(error, Exception) and rest == [(1, None)]
    [record] = [r for r in caplog.records if r.name == "aiflow.serving"]
    assert record.getMessage() == f"inference log: a flush failed and its rows were lost: {error}" and record.exc_info[1] is error


def test_rows_that_reach_the_size_during_a_flush_are_flushed_right_after_it(tmp_path):
    """A size trigger that fires while the writer is busy appending (nobody is waiting to hear it) is not lost: the
    writer flushes again at once instead of sleeping for the interval."""
    import threading

    lake = Lake(tmp_path / "lake")
    busy, release = threading.Event(), threading.Event()

    def on_flush(n: int, error: Exception | None) -> None:
        if not busy.is_set():  # the first flush: hold the writer here while the next rows arrive
            busy.set()
            release.wait(10)

    log = InferenceLog(lake, interval=60, batch_rows=2, on_flush=on_flush)
    log.start()
    try:
        log.add(rows(2))
        assert busy.wait(10)
        log.add(rows(2, start=2))  # exactly the size, while the writer is busy
        release.set()
        assert wait_until(lambda: ids(lake) == {"r0", "r1", "r2", "r3"}, timeout=5)
    finally:
        log.close()


def test_a_process_that_never_closes_its_log_still_exits(tmp_path):
    """The writer thread does not hold the interpreter open: a process that exits without close() (its rows since the
    last flush are lost, as on a hard kill) ends at once instead of waiting for the writer forever."""
    import subprocess

    script = (
        "from aiflow.serving.inference_log import InferenceLog\n"
        "from aiflow.storage.lake import Lake\n"
        f"InferenceLog(Lake({str(tmp_path / 'lake')!r}), interval=3600).start()\n"
        "print('started', flush=True)\n"
    )
    import aiflow.serving.inference_log as module

    local = InferenceLog(Lake(tmp_path / "local"), interval=3600)  # here too (a mutation run picks the tests that start one)
    local.start()
    assert local.close() == 0 and not local.alive()
    code_root = Path(module.__file__).parents[2]  # the aiflow under test (a mutation run's copy, say), not an installed one
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=code_root)
    assert (done.returncode, done.stdout) == (0, "started\n")


def test_appends_that_fail_for_several_datasets_keep_every_row_and_say_where(tmp_path, caplog):
    """Two tables blocked in one flush: both parts are kept (none overwrites the other), counted, and logged with the
    table's location and the error; once unblocked, every row lands in commits signed by the server."""
    import logging

    lake = Lake(tmp_path / "lake")
    log = InferenceLog(lake, interval=60, batch_rows=10_000)
    blockers = [tmp_path / "lake" / "inference_log" / name for name in ("trips", "fares")]
    blockers[0].parent.mkdir(parents=True)
    for blocker in blockers:
        blocker.write_text("not a Delta table")
    log.add(rows(4))
    log.add(rows(2, dataset="fares", start=10))
    with caplog.at_level(logging.ERROR, logger="aiflow.serving"):
        assert log.flush() == 0
    assert log.pending() == 6
    messages = sorted(r.getMessage() for r in caplog.records if r.name == "aiflow.serving")
    assert [m.split(" failed (kept for the next flush): ")[0] for m in messages] == [
        f"inference log: appending 2 rows to {lake.uri('inference_log/fares')}",
        f"inference log: appending 4 rows to {lake.uri('inference_log/trips')}",
    ]
    assert all("Not a directory" in m.split(" failed (kept for the next flush): ")[1] for m in messages)  # the error's text
    for blocker in blockers:
        blocker.unlink()
    assert log.close() == 6
    assert ids(lake) == {"r0", "r1", "r2", "r3"} and ids(lake, "fares") == {"r10", "r11"}
    assert lake.commit_metadata(log_table("trips"), "writer") == [(0, "aiflow serve")]


def test_row_lists_of_different_lengths_are_refused():
    """One prediction short (a scoring bug) must not silently drop a record from the log."""
    import pytest

    with pytest.raises(ValueError, match="zip"):
        log_rows(request_ids=["a", "b"], inputs=["{}", "{}"], dataset="trips", version=1, variant="champion",
                 predictions=[1.0], probabilities=[None, None], latency_ms=1.0)  # fmt: skip
