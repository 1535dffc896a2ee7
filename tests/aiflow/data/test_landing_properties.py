"""Scope: generated malformed landing files (Hypothesis): CSV and JSON lines mixing good records with bad values, null event
times, wrong field counts, stray quotes, broken JSON, empty lines, three line ends and three encodings. Nothing is lost:
every record is ingested or quarantined with a reason at its own record number, the counts add up, and a file is rejected
whole only when no line of it can be read or when it is over the quarantine limit. Parser level, then real Delta tables."""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiflow.data.ingest import INGESTED, REJECTED, ingest
from aiflow.data.parse import RejectedFile, parse_file
from aiflow.spec import parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TINY, write_file

HEADER = ["trip_id", "carrier", "origin", "distance", "delay", "ts"]
GOOD = ["good", "good_quoted"]
#: Kinds of CSV line and JSON line: the good ones, and the bad ones (each quarantined as one record).
CSV_KINDS = [*GOOD, "bad_value", "null_time", "missing_field", "extra_field", "quote_line_start", "quote_field_start", "quote_inside"]
JSON_KINDS = ["good", "bad_value", "null_time", "truncated", "array", "scalar"]
UNREADABLE_JSON = {"truncated", "array", "scalar"}
ROW = "_source_row"


def _csv_line(kind: str, n: int) -> str:
    fields = [str(n), "AA", "JFK", str(100 + n), "", f"2013-01-0{1 + n % 9}T{n % 24:02d}:00:00Z"]
    if kind == "good_quoted":
        fields[1] = '"A,A"'  # a legitimate quoted field holding the separator
    elif kind == "bad_value":
        fields[3] = "far"
    elif kind == "null_time":
        fields[5] = "NA"
    elif kind == "missing_field":
        fields.pop()
    elif kind == "extra_field":
        fields.append("x")
    elif kind == "quote_line_start":
        fields[0] = '"' + fields[0]
    elif kind == "quote_field_start":
        fields[1] = '"AA'
    elif kind == "quote_inside":
        fields[1] = 'A"A'
    return ",".join(fields)


def _json_line(kind: str, n: int) -> str:
    record = {"trip_id": n, "carrier": "AA", "origin": "JFK", "distance": 100 + n, "delay": None, "ts": f"2013-01-0{1 + n % 9}T00:00:00Z"}
    if kind == "bad_value":
        record["distance"] = "far"
    elif kind == "null_time":
        record["ts"] = None
    elif kind == "truncated":
        return json.dumps(record)[:-7]
    elif kind == "array":
        return json.dumps(list(record.values()))
    elif kind == "scalar":
        return str(n)
    return json.dumps(record)


@dataclass
class Landed:
    fmt: str
    kinds: list[str]  # one per record, in order (empty lines are no record)
    data: bytes

    @property
    def good(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds, start=1) if k in GOOD]

    @property
    def bad(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds, start=1) if k not in GOOD]

    @property
    def unreadable(self) -> bool:
        """No line is a JSON object: nothing to read the columns from."""
        return self.fmt == "jsonl" and all(k in UNREADABLE_JSON for k in self.kinds)


@st.composite
def landed_files(draw) -> Landed:
    fmt = draw(st.sampled_from(["csv", "jsonl"]))
    kinds = draw(st.lists(st.sampled_from(CSV_KINDS if fmt == "csv" else JSON_KINDS), min_size=1, max_size=12))
    empty_after = draw(st.sets(st.integers(0, len(kinds) - 1), max_size=2))
    lines = [",".join(HEADER)] if fmt == "csv" else []
    for n, kind in enumerate(kinds):
        lines.append(_csv_line(kind, n) if fmt == "csv" else _json_line(kind, n))
        if n in empty_after:
            lines.append("")
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(lines) + (end if draw(st.booleans()) else "")
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
    return Landed(fmt, kinds, text.encode(encoding))


def _table(limit: float = 1.0):
    data = copy.deepcopy(TINY)
    data["landing"]["max_quarantined_share"] = limit
    return parse_spec(data, "tiny")


TABLE = _table()


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(landed_files())
def test_every_record_is_parsed_good_or_quarantined_at_its_own_number(landed):
    try:
        parsed = parse_file(landed.data, landed.fmt, TABLE, f"f.{landed.fmt}")
    except RejectedFile as exc:
        assert landed.unreadable, f"rejected a file with readable lines: {exc}"
        assert str(exc).startswith(f"f.{landed.fmt}: ")
        return
    assert not landed.unreadable
    assert parsed.good["_source_row"].to_list() == landed.good
    assert sorted(parsed.bad["_source_row"].to_list()) == landed.bad
    assert parsed.bad["_reason"].null_count() == 0 and parsed.bad["_rule"].null_count() == 0
    assert parsed.rows == len(landed.kinds)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(landed_files(), min_size=1, max_size=3), st.sampled_from([0.5, 1.0]))
def test_a_batch_of_generated_files_loses_no_row_and_its_counts_add_up(files, limit):
    table = _table(limit)
    with tempfile.TemporaryDirectory() as tmp:
        names = {f"f{i}.{f.fmt}": f for i, f in enumerate(files)}
        for name, f in names.items():
            write_file(Path(tmp, "landing"), name, f.data)
        lake = Lake(f"{tmp}/lake")
        report = ingest(lake, LocalLandingZone(f"{tmp}/landing"), table)
        bronze = lake.scan(Tables.bronze("trips")).collect() if lake.exists(Tables.bronze("trips")) else pl.DataFrame({"_source_file": [], ROW: []})
        quarantine = lake.scan(Tables.quarantine("trips")).collect() if lake.exists(Tables.quarantine("trips")) else None
        outcomes = {o.file: o for o in report.files}
        for name, f in names.items():
            o = outcomes[name]
            if o.outcome == "duplicate":  # two drawn files with the same bytes: the first one holds the rows
                assert f.data == names[o.duplicate_of].data
                continue
            in_bronze = bronze.filter(pl.col("_source_file") == name)
            in_quarantine = quarantine.filter(pl.col("_source_file") == name) if quarantine is not None else pl.DataFrame({ROW: []})
            over = len(f.bad) / len(f.kinds) > limit
            if f.unreadable or over:
                assert o.outcome == REJECTED and o.error and o.over_limit is (over and not f.unreadable), (name, o)
                assert in_bronze.height == 0 and in_quarantine.height == 0
                continue
            assert o.outcome == INGESTED, (name, o.error)
            assert (o.rows_ingested, o.rows_quarantined) == (len(f.good), len(f.bad))
            assert sorted(in_bronze["_source_row"].to_list()) == f.good
            assert sorted(in_quarantine["_source_row"].to_list()) == f.bad
            assert in_quarantine.height == 0 or in_quarantine["_reason"].null_count() == 0
        assert report.rows_ingested == bronze.height
        assert report.rows_quarantined == (quarantine.height if quarantine is not None else 0)

