"""The online input schema of a model: which raw fields a request carries, their types, and request validation.

The schema comes from the dataset spec the model was trained with (its bundle's ``spec.json``): one field
per categorical and numeric feature column, the side-table values the as-of join would bring
(``<table>_<column>``, optional floats), and the event time (calendar features are derived from it).
Fields the spec marks ``required`` (and the event time) must be present and non-null; the others may be
null or absent (encoded as at training). Extra fields are allowed and ignored by the model (they are kept in
the inference log as received). Unseen categories are not an error: the shared encoder maps them to the
unknown bucket exactly as in training.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiflow.data.encoding import numeric_inputs
from aiflow.spec import DatasetSpec

#: Open Inference Protocol datatype of each spec column type (dates and datetimes travel as ISO-8601 text).
OIP_TYPES = {
    "string": "BYTES", "date": "BYTES", "datetime": "BYTES", "bool": "BOOL",
    "int32": "INT64", "int64": "INT64", "float32": "FP32", "float64": "FP64",
}  # fmt: skip


class RecordError(ValueError):
    """One or more records do not fit the model's input schema; ``problems`` lists (record index, field, problem)."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        self.problems = problems
        shown = "; ".join(f"record {i}: field {f!r}: {p}" for i, f, p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(shown + more)

    def details(self) -> list[dict]:
        return [{"record": i, "field": f, "problem": p} for i, f, p in self.problems]


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # a spec column type
    required: bool

    @property
    def datatype(self) -> str:
        return OIP_TYPES[self.type]


def input_fields(spec: DatasetSpec) -> list[Field]:
    """The raw fields a record carries for ``spec``'s model: features, side values, then the event time."""
    fields: list[Field] = []
    seen: set[str] = set()
    for name in [*spec.features.categorical, *numeric_inputs(spec)]:
        if name in seen:
            continue
        seen.add(name)
        column = spec.columns.get(name)
        fields.append(Field(name, column.type, column.required) if column else Field(name, "float64", False))
    if spec.event_time not in seen:
        fields.append(Field(spec.event_time, spec.columns[spec.event_time].type, True))
    return fields


#: Dates and times outside the nanosecond range (pandas, Evidently) would overflow a reader of the inference log.
EARLIEST, LATEST = dt.date(1678, 1, 1), dt.date(2261, 12, 31)


def _problem(value: object, kind: str) -> str | None:
    """Why ``value`` (decoded JSON) does not fit the spec type ``kind``, or None when it fits."""
    if kind == "string":
        return None if isinstance(value, str) else f"expected a string, got {type(value).__name__} {value!r}"
    if kind == "bool":
        return None if isinstance(value, bool) else f"expected true or false, got {type(value).__name__} {value!r}"
    if kind in ("int32", "int64"):
        if isinstance(value, int) and not isinstance(value, bool):
            return None
        if isinstance(value, float) and value.is_integer():
            return None
        return f"expected an integer, got {type(value).__name__} {value!r}"
    if kind in ("float32", "float64"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {type(value).__name__} {value!r}"
        return None if math.isfinite(value) else f"expected a finite number, got {value!r}"
    if kind in ("date", "datetime"):
        if not isinstance(value, str):
            return f"expected an ISO-8601 {kind} string, got {type(value).__name__} {value!r}"
        try:
            parsed = (dt.date if kind == "date" else dt.datetime).fromisoformat(value.replace("Z", "+00:00") if kind == "datetime" else value)
            if isinstance(parsed, dt.datetime) and parsed.tzinfo is not None:
                parsed = parsed.astimezone(dt.UTC)  # 9999-12-31T23:59:59-12:00 overflows here: refused below, not a 500
        except (ValueError, OverflowError):
            return f"expected an ISO-8601 {kind} (e.g. {'2013-01-01' if kind == 'date' else '2013-01-01T10:00:00Z'}), got {value!r}"
        if not EARLIEST <= (parsed if isinstance(parsed, dt.date) and not isinstance(parsed, dt.datetime) else parsed.date()) <= LATEST:
            return f"expected a {kind} between {EARLIEST} and {LATEST} (the range every reader of the log takes), got {value!r}"
        return None
    return f"unsupported column type {kind}"


_FAST_TYPES: dict[str, frozenset[type]] = {
    "string": frozenset({str}), "date": frozenset({str}), "datetime": frozenset({str}), "bool": frozenset({bool}),
    "int32": frozenset({int}), "int64": frozenset({int}), "float32": frozenset({int, float}), "float64": frozenset({int, float}),
}  # fmt: skip
_NONE = type(None)


def _column_fits(values: list, f: Field) -> bool:
    """Whether every value of one field across the batch surely fits (True), or the record-by-record check must say (False).

    Only exact types are accepted here (``bool`` is not an ``int``; an integral float for an integer column goes
    to the slow path), and date/datetime text is parsed once per distinct value.
    """
    allowed = _FAST_TYPES.get(f.type)
    if allowed is None:
        return False
    kinds = set(map(type, values))  # one pass in C over the column
    if _NONE in kinds:
        if f.required:
            return False
        kinds.discard(_NONE)
    if not kinds <= allowed:
        return False
    if float in kinds:
        return all(math.isfinite(v) for v in values if type(v) is float)
    if f.type in ("date", "datetime"):
        return all(_problem(v, f.type) is None for v in set(values) if v is not None)
    return True


def validate_records(records: object, fields: Sequence[Field]) -> list[dict]:
    """Check decoded JSON ``records`` against ``fields``; return them as a list of dicts.

    The batch is checked field by field over all records first; only when that finds something does the
    record-by-record check run, to name every problem.

    Raises:
        RecordError: every problem found, each naming the record index and the field.
    """
    if isinstance(records, Mapping):
        records = [records]
    if not isinstance(records, list) or not records:
        raise RecordError([(0, "records", "expected a non-empty list of JSON objects (or one object)")])
    if all(type(r) is dict for r in records) and all(_column_fits([r.get(f.name) for r in records], f) for f in fields):
        return [dict(r) for r in records]
    problems: list[tuple[int, str, str]] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            problems.append((index, "<record>", f"expected a JSON object, got {type(record).__name__}"))
            continue
        for f in fields:
            value = record.get(f.name)
            if value is None:
                if f.required:
                    problems.append((index, f.name, "missing (required by the model's input schema)" if f.name not in record else "null"))
                continue
            why = _problem(value, f.type)
            if why:
                problems.append((index, f.name, why))
    if problems:
        raise RecordError(problems)
    return [dict(r) for r in records]
