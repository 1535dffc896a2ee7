"""Records of a text landing file that cannot be read, found before the file is parsed, so they sink their line only.

A CSV row whose number of fields differs from the header's, a stray quote (a quoted field that does not close on its
line, text after a closing quote, a quote inside an unquoted value) or a JSON line that is not a JSON object is taken
out of the file with its line number and the problem; :mod:`aiflow.data.parse` puts it back as a quarantined record.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import numpy as np

from aiflow.data.text_files import RejectedFile


@dataclass
class BadLine:
    """A record of a file that cannot be read: its position among the file's records, and why."""

    position: int  # 0-based, among the file's records (the header and empty lines are not records)
    line: int  # 1-based line number in the file
    reason: str
    text: str


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def csv_bad_lines(data: bytes, name: str) -> tuple[bytes, list[BadLine]]:
    """Rows of a CSV file whose number of fields differs from the header's, and the file without them.

    Fields are counted per line with numpy when the file has no quote character (the common case,
    cheap); a file with quotes is walked with the ``csv`` module, which knows quoted separators and
    line breaks. Empty lines are dropped (they are no record). A clean file comes back unchanged.
    """
    if b'"' in data:
        return _csv_bad_lines_quoted(data, name)
    raw = np.frombuffer(data, np.uint8)
    breaks = np.flatnonzero(raw == 10)
    ends = breaks if data.endswith(b"\n") else np.append(breaks, len(raw))
    starts = np.concatenate(([0], breaks + 1))[: len(ends)]
    if len(ends) < 2:
        return data, []
    commas = np.flatnonzero(raw == 44)
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    stripped_ends = ends - (raw[np.maximum(ends - 1, 0)] == 13) * (ends > starts)
    empty = stripped_ends == starts
    expected = int(fields[0])
    wrong = (fields != expected) & ~empty
    wrong[0] = False
    drop = wrong | (empty if expected > 1 else np.zeros_like(empty))
    drop[0] = False
    if not drop.any():
        return data, []
    is_record = ~empty if expected > 1 else np.ones_like(empty)
    is_record[0] = False  # the header
    positions = np.cumsum(is_record) - 1  # each line's index among the file's records
    bad = [
        BadLine(int(positions[i]), int(i) + 1, f"line {i + 1}: {_plural(int(fields[i]), 'field')}, expected {expected}",
                data[starts[i]:stripped_ends[i]].decode("utf-8", "replace"))
        for i in np.flatnonzero(wrong)
    ]
    keep = np.flatnonzero(~drop)
    good = b"".join(data[starts[i]:ends[i]] + b"\n" for i in keep)
    return good, bad


def _csv_bad_lines_quoted(data: bytes, name: str) -> tuple[bytes, list[BadLine]]:
    """:func:`csv_bad_lines` for a file with quoted fields; a stray quote sinks its line only.

    Records are read strictly, one at a time. A record the reader cannot take (a quote closed in the middle of a
    field), or that a quote opened on its first line stretched over the next lines into the wrong number of fields,
    quarantines that first line alone, and reading starts again on the next line. A quote inside an unquoted value
    (``U"A``, which other readers refuse) quarantines its line too.
    """
    text = data.decode("utf-8", "replace")
    lines = list(io.StringIO(text, newline=""))

    def reader_from(index: int):
        return csv.reader((lines[k] for k in range(index, len(lines))), strict=True)

    reader, base = reader_from(0), 0
    try:
        header = next(reader)
    except StopIteration:
        return data, []
    except csv.Error as exc:
        raise RejectedFile(f"{name}: cannot parse as csv: line 1 (the header): {exc}") from exc
    expected, position = len(header), 0
    keep, bad, changed = [*lines[: reader.line_num]], [], False
    while True:
        first = base + reader.line_num  # 0-based index of the record's first line
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # only this line is bad: read again from the next one
            spanned = base + reader.line_num - first > 1  # a quote opened here ran into later lines before the error
            problem = "a quoted field opens on this line and does not close on it" if spanned else _quote_error(exc)
            bad.append(BadLine(position, first + 1, f"line {first + 1}: stray quote: {problem}", lines[first].rstrip("\r\n")))
            changed, position = True, position + 1
            reader, base = reader_from(first + 1), first + 1
            continue
        done = base + reader.line_num
        record = lines[first:done]
        if not row and expected > 1:
            changed = True
        elif len(row) != expected and done - first > 1:  # a quote opened here swallowed the next lines
            reason = f"line {first + 1}: stray quote: a quoted field opens on this line and does not close on it"
            bad.append(BadLine(position, first + 1, reason, lines[first].rstrip("\r\n")))
            changed, position = True, position + 1
            reader, base = reader_from(first + 1), first + 1
        elif len(row) != expected:
            bad.append(BadLine(position, first + 1, f"line {first + 1}: {_plural(len(row), 'field')}, expected {expected}",
                               "".join(record).rstrip("\r\n")))  # fmt: skip
            changed, position = True, position + 1
        elif (stray := _stray_quote(row, "".join(record))) is not None:
            reason = f"line {first + 1}: stray quote in field {stray + 1} ({header[stray]!r}): quote the whole value and double the quote"
            bad.append(BadLine(position, first + 1, reason, "".join(record).rstrip("\r\n")))
            changed, position = True, position + 1
        else:
            keep += record
            position += 1
    if not changed:
        return data, []
    if keep and not keep[-1].endswith(("\n", "\r")):
        keep[-1] += "\n"
    return "".join(keep).encode(), bad


def _quote_error(exc: csv.Error) -> str:
    """The csv module's complaint about a quote, in the words of someone fixing the file."""
    text = str(exc)
    if "unexpected end of data" in text:
        return "a quoted field opens on this line and does not close on it"
    if "expected after" in text:
        return "text follows a closing quote inside the same field"
    return text


def _stray_quote(row: list[str], raw: str) -> int | None:
    """The first field holding a quote that its raw text does not write quoted and doubled (``U"A``), or None."""
    for k, value in enumerate(row):
        if '"' in value and '"' + value.replace('"', '""') + '"' not in raw:
            return k
    return None


def jsonl_bad_lines(data: bytes) -> tuple[bytes, list[BadLine]]:
    """Lines of a JSON-lines file that are not a JSON object, and the file without them (empty lines are no record)."""
    good: list[bytes] = []
    bad: list[BadLine] = []
    position = 0
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        text = line.decode("utf-8", "replace")
        try:
            value = json.loads(line)
        except ValueError as exc:
            reason = f"line {number}: not valid JSON ({getattr(exc, 'msg', exc)} at column {getattr(exc, 'colno', '?')})"
            bad.append(BadLine(position, number, reason, text))
        else:
            if isinstance(value, dict):
                good.append(line)
            else:
                bad.append(BadLine(position, number, f"line {number}: a JSON {type(value).__name__}, expected an object", text))
        position += 1
    return b"\n".join(good) + b"\n", bad
