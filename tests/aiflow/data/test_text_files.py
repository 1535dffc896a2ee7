"""Scope: landing files whose encoding, line ends, quoting or header used to be misreported (issue 22 item 7): UTF-16/32 and
CR-only files read correctly, undecodable ones rejected naming the encoding, a stray quote quarantining its line only, a
duplicated header column rejected naming it; parser level and one real ingestion into Delta tables."""

from __future__ import annotations

import json

import polars as pl
import pytest

from aiflow.data.ingest import INGESTED, REJECTED, ingest
from aiflow.data.parse import MALFORMED, RejectedFile, parse_file
from aiflow.data.text_files import as_utf8
from aiflow.spec import TableSpec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TINY, write_file

HEADER = "trip_id,carrier,origin,distance,delay,ts"
ROWS = [
    "1,AA,JFK,100,,2013-01-01T10:00:00Z",
    "2,UA,EWR,200,5,2013-01-01T11:00:00Z",
    "3,DL,LGA,300,,2013-01-01T12:00:00Z",
]
TEXT = "\n".join([HEADER, *ROWS]) + "\n"


@pytest.fixture(scope="module")
def table() -> TableSpec:
    return TableSpec.model_validate({k: TINY[k] for k in ("name", "landing", "columns", "key", "event_time", "quality")})


@pytest.mark.parametrize(
    "data",
    [
        TEXT.replace("\n", "\r").encode(),  # CR-only line ends
        TEXT.replace("\n", "\r\n").encode(),
        TEXT.encode("utf-16"),  # with its byte-order mark (little-endian here)
        b"\xfe\xff" + TEXT.encode("utf-16-be"),
        TEXT.encode("utf-32"),
        b"\xef\xbb\xbf" + TEXT.encode(),
    ],
    ids=["cr", "crlf", "utf16", "utf16be", "utf32", "utf8bom"],
)
def test_line_ends_and_byte_order_marks_are_read_like_the_plain_file(table, data):
    parsed = parse_file(data, "csv", table, "f.csv")
    plain = parse_file(TEXT.encode(), "csv", table, "f.csv")
    assert parsed.bad.height == 0
    assert parsed.good.equals(plain.good)


def test_a_json_lines_file_in_utf16_is_read(table):
    records = [{k: v or None for k, v in zip(HEADER.split(","), r.split(","), strict=True)} for r in ROWS]
    text = "\n".join(json.dumps(r) for r in records) + "\n"
    assert parse_file(text.encode("utf-16"), "jsonl", table, "f.jsonl").good.height == 3


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (TEXT.encode("utf-16-le"), "looks like UTF-16 (or UTF-32) without a byte-order mark"),
        (TEXT.replace("AA", "Ä").encode("latin-1"), "is not UTF-8: byte 0xc4 on line 2"),
        (b"\xff\xfe" + b"\x00\xd8" + "x".encode("utf-16-le"), "starts with a UTF-16 byte-order mark but is not valid UTF-16"),
    ],
    ids=["utf16-no-bom", "latin1", "broken-utf16"],
)
def test_an_undecodable_file_is_rejected_naming_its_encoding_not_a_missing_column(table, data, cause):
    with pytest.raises(RejectedFile, match="f.csv: ") as info:
        parse_file(data, "csv", table, "f.csv")
    assert cause in str(info.value) and "missing required column" not in str(info.value)
    assert "UTF-8" in str(info.value)  # what to do


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('"2,UA,EWR,200,5,2013-01-01T11:00:00Z', "line 3: stray quote: a quoted field opens on this line and does not close on it"),
        ('2,"UA,EWR,200,5,2013-01-01T11:00:00Z', "line 3: stray quote: a quoted field opens on this line and does not close on it"),
        ('2,U"A,EWR,200,5,2013-01-01T11:00:00Z', "line 3: stray quote in field 2 ('carrier')"),
        ('2,"U"A,EWR,200,5,2013-01-01T11:00:00Z', "line 3: stray quote: text follows a closing quote"),
    ],
    ids=["line-start", "field-start", "inside-value", "after-closing"],
)
def test_a_stray_quote_quarantines_its_line_and_keeps_the_others(table, line, reason):
    data = "\n".join([HEADER, ROWS[0], line, ROWS[2], '4,B6,JFK,400,,"2013-01-01T13:00:00Z"']) + "\n"
    parsed = parse_file(data.encode(), "csv", table, "f.csv")
    assert parsed.good["trip_id"].to_list() == [1, 3, 4]
    assert parsed.good["_source_row"].to_list() == [1, 3, 4]  # record numbers as in the file
    (bad,) = parsed.bad.rows(named=True)
    assert (bad["_source_row"], bad["_rule"], bad["_record"]) == (2, MALFORMED, line)
    assert bad["_reason"].startswith(reason)


def test_quoted_fields_across_lines_and_doubled_quotes_are_still_read(table):
    data = f'{HEADER}\n1,"A\nA",JFK,100,,2013-01-01T10:00:00Z\n2,"say ""hi""",EWR,200,,2013-01-01T11:00:00Z\n'
    parsed = parse_file(data.encode(), "csv", table, "f.csv")
    assert parsed.bad.height == 0 and parsed.good["carrier"].to_list() == ["A\nA", 'say "hi"']


def test_a_duplicated_header_column_rejects_the_file_naming_it(table):
    data = "trip_id,carrier,origin,distance,delay,carrier,ts\n1,AA,JFK,100,,BB,2013-01-01T10:00:00Z\n"
    with pytest.raises(RejectedFile, match=r"f\.csv: column 'carrier' appears twice in the header \(columns 2 and 6\)"):
        parse_file(data.encode(), "csv", table, "f.csv")


def test_as_utf8_leaves_a_clean_file_untouched():
    assert as_utf8(TEXT.encode(), "f.csv") == TEXT.encode()


def test_one_batch_of_odd_files_ingests_each_by_its_own_cause(tmp_path):
    from aiflow.spec import parse_spec

    spec = parse_spec({**TINY, "landing": {**TINY["landing"]}}, "tiny")
    landing = tmp_path / "landing"
    write_file(landing, "a_utf16.csv", TEXT.encode("utf-16"))
    write_file(landing, "b_cr.csv", TEXT.replace("1,AA", "11,AA").replace("\n", "\r").encode())
    write_file(landing, "c_quote.csv", "\n".join([HEADER, ROWS[0].replace("1,", "21,", 1), '22,U"A,EWR,1,,2013-01-02T00:00:00Z',
                                                  ROWS[2].replace("3,", "23,", 1)]).encode())  # fmt: skip
    write_file(landing, "d_dup.csv", f"{HEADER},carrier\n".encode())
    lake = Lake(tmp_path / "lake")
    report = ingest(lake, LocalLandingZone(landing), spec)

    outcomes = {f.file: (f.outcome, f.rows_ingested, f.rows_quarantined) for f in report.files}
    assert outcomes == {
        "a_utf16.csv": (INGESTED, 3, 0),
        "b_cr.csv": (INGESTED, 3, 0),
        "c_quote.csv": (INGESTED, 2, 1),
        "d_dup.csv": (REJECTED, 0, 0),
    }
    assert "column 'carrier' appears twice" in next(f.error for f in report.files if f.file == "d_dup.csv")
    quarantine = lake.scan(Tables.quarantine("trips")).collect()
    assert quarantine.select("_source_file", "_source_row", "_rule").rows() == [("c_quote.csv", 2, MALFORMED)]
    assert lake.scan(Tables.bronze("trips")).select(pl.len()).collect().item() == 8
