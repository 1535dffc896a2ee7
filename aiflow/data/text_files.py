"""Text landing files (CSV, JSON lines) before parsing: their encoding, their line ends and their header.

What a reader would otherwise misread as a missing column is read correctly when it can be (UTF-16 or UTF-32 with a
byte-order mark, a UTF-8 byte-order mark, CR-only line ends of old Mac exports), or rejected naming the real cause
when it cannot (UTF-16 without a byte-order mark, bytes that are not UTF-8, a header naming a column twice).
"""

from __future__ import annotations

import codecs
import csv
import io


class RejectedFile(Exception):
    """The whole file is unusable; ``str(exc)`` says why (parser error or missing column)."""


#: Byte-order marks, longest first (UTF-32 LE starts with the UTF-16 LE mark).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip


def as_utf8(data: bytes, name: str) -> bytes:
    """``data`` as UTF-8 without a byte-order mark, with LF (or CRLF) line ends.

    Raises:
        RejectedFile: the bytes are neither UTF-8 nor text with a byte-order mark, naming the encoding and where.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                data = data.decode(encoding).encode("utf-8")
            except UnicodeDecodeError as exc:
                raise RejectedFile(
                    f"{name}: starts with a {encoding.upper().removesuffix('-SIG')} byte-order mark but is not valid "
                    f"{encoding.upper().removesuffix('-SIG')} ({exc.reason} at byte {exc.start}): save it as UTF-8"
                ) from exc
            break
    else:
        head = data[:4096]
        if head.count(b"\x00") * 4 >= len(head) > 0:
            raise RejectedFile(
                f"{name}: every other byte is NUL: it looks like UTF-16 (or UTF-32) without a byte-order mark; save it as "
                f"UTF-8, or as UTF-16 with a byte-order mark"
            )
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise RejectedFile(
                f"{name}: is not UTF-8: byte 0x{data[exc.start]:02x} on line {line} (byte {exc.start}); it may be Latin-1 or "
                f"Windows-1252: save it as UTF-8"
            ) from exc
    if b"\r" in data and b"\n" not in data:
        data = data.replace(b"\r", b"\n")  # CR-only line ends (classic Mac OS exports)
    return data


def csv_header(data: bytes) -> list[str]:
    """The column names of a CSV file's first record, as written (duplicates kept)."""
    first = data.split(b"\n", 1)[0]
    if b'"' not in first:
        return next(csv.reader([first.decode("utf-8").rstrip("\r")]), [])
    return next(csv.reader(io.StringIO(data.decode("utf-8"), newline="")), [])


def check_unique_columns(columns: list[str], name: str) -> None:
    """Reject a file whose header names a column twice (a reader would keep both under made-up names).

    Raises:
        RejectedFile: naming the column and both positions.
    """
    seen: dict[str, int] = {}
    for position, column in enumerate(columns, start=1):
        if column in seen:
            raise RejectedFile(
                f"{name}: column {column!r} appears twice in the header (columns {seen[column]} and {position}): "
                f"remove or rename one and land the file again"
            )
        seen[column] = position
