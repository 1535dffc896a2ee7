"""Scope: the landing-zone sensor on real files and real ledgers: batching, a bounded cursor seeded from the ledger, re-dropped files, and the runs it requests."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import time

import polars as pl
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

from aiflow.data.ingest import LEDGER_SCHEMA, ingest
from aiflow.spec import demo_spec_path, load_spec, parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from resources.profiles import local_resources
from sensors.landing import landing_sensor
from tests.aiflow.tiny import TINY, csv_bytes, write_file
from tests.dagster_helpers import local_defs, local_home


def _resources(defs):
    return {"landing": defs.resources["landing"], "lake": defs.resources["lake"]}


def _evaluate(defs, home, cursor=None, sensor=None):
    spec_sensor = sensor or defs.resolve_sensor_def("flights_landing_sensor")
    context = build_sensor_context(instance=DagsterInstance.ephemeral(), cursor=cursor, resources=_resources(defs))
    items = list(spec_sensor(context))
    requests = [i for i in items if isinstance(i, RunRequest)]
    skipped = [i for i in items if isinstance(i, SkipReason)]
    return requests, context.cursor, skipped


def _files(request, op="flights__bronze_flights"):
    return request.run_config["ops"][op]["config"]["files"]


def test_new_files_are_requested_once_and_replaced_files_again(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    requests, cursor, _ = _evaluate(defs, home)
    assert len(requests) == 1
    assert _files(requests[0]) == [f"2013-01-0{d}.csv" for d in range(1, 6)]
    assert _files(requests[0], "flights__bronze_weather") == ["weather-2013.csv"]

    again, cursor2, skipped = _evaluate(defs, home, cursor)
    assert again == [] and len(skipped) == 1

    # a new day and a replaced file (new content, later mtime) are requested; the rest are not
    (home / "landing" / "flights" / "2013-01-06.csv").write_text((home / "landing" / "flights" / "2013-01-01.csv").read_text())
    replaced = home / "landing" / "flights" / "2013-01-02.csv"
    replaced.write_text(replaced.read_text() + "\n")
    os.utime(replaced, (time.time() + 5, time.time() + 5))
    third, _, _ = _evaluate(defs, home, cursor2)
    assert len(third) == 1
    assert _files(third[0]) == ["2013-01-02.csv", "2013-01-06.csv"]
    assert _files(third[0], "flights__bronze_weather") == []
    assert third[0].run_key != requests[0].run_key


def test_batches_respect_the_limit_and_put_side_tables_first(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    sensor = landing_sensor(load_spec(demo_spec_path()), max_files_per_run=2)
    requests, cursor, _ = _evaluate(defs, home, sensor=sensor)
    assert [(_files(r, "flights__bronze_weather"), _files(r)) for r in requests] == [
        (["weather-2013.csv"], ["2013-01-01.csv"]),
        ([], ["2013-01-02.csv", "2013-01-03.csv"]),
        ([], ["2013-01-04.csv", "2013-01-05.csv"]),
    ]
    assert len({r.run_key for r in requests}) == 3
    assert set(_in_flight(cursor)["flights"]) == {f"2013-01-0{d}.csv" for d in range(1, 6)}


def _in_flight(cursor: str) -> dict[str, dict[str, str]]:
    return json.loads(cursor)["in_flight"]


def test_removed_files_leave_the_cursor(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    _, cursor, _ = _evaluate(defs, home)
    (home / "landing" / "flights" / "2013-01-03.csv").unlink()
    _, cursor2, _ = _evaluate(defs, home, cursor)
    assert "2013-01-03.csv" not in _in_flight(cursor2)["flights"]
    assert len(_in_flight(cursor2)["flights"]) == 4


def test_first_tick_after_an_ingest_requests_nothing_and_then_only_what_changed(tmp_path, demo_landing):
    """No cursor at all (a new sensor, or a reset one): the ledger says what was ingested."""
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    spec = load_spec(demo_spec_path())
    lake = Lake(home / "lake")
    for table in spec.tables:
        report = ingest(lake, LocalLandingZone(home / "landing" / table.name), table)
        assert report.rows_ingested > 0

    requests, cursor, skipped = _evaluate(defs, home, cursor=None)
    assert requests == [] and [s.skip_message for s in skipped] == ["no new files in the landing zones"]
    assert _in_flight(cursor) == {"flights": {}, "weather": {}}

    # a new file is requested once
    (home / "landing" / "flights" / "2013-01-06.csv").write_text((home / "landing" / "flights" / "2013-01-01.csv").read_text())
    requests, cursor, _ = _evaluate(defs, home, cursor)
    assert [_files(r) for r in requests] == [["2013-01-06.csv"]]
    again, cursor, _ = _evaluate(defs, home, cursor)
    assert again == []
    # a replaced file (same name, new content) is requested, though the ledger holds its name
    replaced = home / "landing" / "flights" / "2013-01-02.csv"
    replaced.write_text(replaced.read_text() + "\n")
    os.utime(replaced, (time.time() + 5, time.time() + 5))
    requests, cursor, _ = _evaluate(defs, home, cursor)
    assert [_files(r) for r in requests] == [["2013-01-02.csv"]]
    assert set(_in_flight(cursor)["flights"]) == {"2013-01-02.csv", "2013-01-06.csv"}

    # once both are ingested, the cursor forgets them and nothing is requested
    ingest(lake, LocalLandingZone(home / "landing" / "flights"), spec, ["2013-01-02.csv", "2013-01-06.csv"])
    requests, cursor, _ = _evaluate(defs, home, cursor)
    assert requests == []
    assert _in_flight(cursor)["flights"] == {}


def test_a_cursor_of_the_first_format_is_pruned_by_the_ledger(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    defs = local_defs(home)
    spec = load_spec(demo_spec_path())
    lake = Lake(home / "lake")
    ingest(lake, LocalLandingZone(home / "landing" / "flights"), spec)
    listed = {f.name: f.signature for f in LocalLandingZone(home / "landing" / "flights").list()}
    old = json.dumps({"flights": listed, "weather": {}})  # every file seen, as the first cursor kept it
    requests, cursor, _ = _evaluate(defs, home, cursor=old)
    assert [_files(r, "flights__bronze_weather") for r in requests] == [["weather-2013.csv"]]
    assert [_files(r) for r in requests] == [[]]
    assert _in_flight(cursor) == {"flights": {}, "weather": {"weather-2013.csv": _in_flight(cursor)["weather"]["weather-2013.csv"]}}


def _record_in_ledger(lake: Lake, zone: LocalLandingZone, table_name: str, names: set[str]) -> None:
    """Ledger rows for files, as an ingestion writes them (the sensor reads only names, sizes and mtimes)."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        {"file": f.name, "uri": f.uri, "sha256": f.name, "size_bytes": f.size, "modified": f.modified, "format": f.format,
         "outcome": "ingested", "rows_ingested": 1, "rows_quarantined": 0, "new_columns": [], "event_dates": [],
         "batch_id": "b", "ingested_at": now}
        for f in zone.list() if f.name in names
    ]  # fmt: skip
    lake.append(Tables.ledger(table_name), pl.DataFrame(rows, schema=LEDGER_SCHEMA))


def test_cursor_stays_bounded_over_thousands_of_files_on_the_tiny_spec(tmp_path):
    """3,000 tiny files of the tiny spec (not the demo): the cursor holds at most the files in flight."""
    spec = parse_spec(copy.deepcopy(TINY), "tiny")
    home = tmp_path / "home"
    zone_root = home / "landing" / "trips"
    for i in range(3000):
        write_file(zone_root, f"part-{i:05d}.csv", csv_bytes([f"{i},AA,JFK,100,1,yes,2012-12-01,3.0,2013-01-01T10:00:00Z"]))
    write_file(home / "landing" / "weather", "w.csv", b"origin,temp,ts\nJFK,1.5,2013-01-01T10:00:00Z\n")
    resources = local_resources(str(home))
    sensor = landing_sensor(spec, max_files_per_run=400, max_in_flight=1000)
    lake = Lake(home / "lake")
    zones = {"trips": LocalLandingZone(zone_root), "weather": LocalLandingZone(home / "landing" / "weather")}

    def tick(cursor):
        context = build_sensor_context(
            instance=DagsterInstance.ephemeral(), cursor=cursor, resources={"landing": resources["landing"], "lake": resources["lake"]}
        )
        items = list(sensor(context))
        return [i for i in items if isinstance(i, RunRequest)], [i.skip_message for i in items if isinstance(i, SkipReason)], context.cursor

    requested: dict[str, list[str]] = {"trips": [], "weather": []}
    cursor, ticks = None, 0
    while True:
        requests, _, cursor = tick(cursor)
        if not requests:
            break
        ticks += 1
        in_flight = json.loads(cursor)["in_flight"]
        assert 0 < sum(len(v) for v in in_flight.values()) <= 1000
        assert all(len(_files(r, "trips__bronze_trips")) + len(_files(r, "trips__bronze_weather")) <= 400 for r in requests)
        for table in requested:
            names = [n for r in requests for n in _files(r, f"trips__bronze_{table}")]
            assert set(names) == set(in_flight[table])
            requested[table] += names
        waiting = 3001 - sum(len(v) for v in requested.values())
        if waiting:
            # nothing more while the requested files are in flight: the backlog waits, it is not dropped
            more, skipped, _ = tick(cursor)
            assert more == [] and skipped == [f"{waiting} new file(s) wait: 1000 requested files are not in the ledger yet"]
        for table, zone in zones.items():
            _record_in_ledger(lake, zone, table, set(in_flight[table]))
    assert ticks == 4
    assert requested["weather"] == ["w.csv"]
    assert sorted(requested["trips"]) == [f"part-{i:05d}.csv" for i in range(3000)]  # each exactly once
    # every file is in the ledger: the cursor is back to nothing, whatever the number of files ever seen
    assert json.loads(cursor)["in_flight"] == {"trips": {}, "weather": {}}
    assert len(cursor) < 100
