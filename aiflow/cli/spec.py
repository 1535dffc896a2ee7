"""``aiflow spec``: check a dataset spec (every problem at once) and write its JSON Schema for editors.

``aiflow spec check FILE [--sample LANDING_FILE]`` validates a spec and, given a sample landing file,
lists what ingestion would make of each of its columns; ``aiflow spec schema`` writes the JSON Schema
generated from the pydantic model (see the README's "Bring your own dataset").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiflow.data.parse import RejectedFile, read_file, split_typed, with_row_numbers
from aiflow.spec import ROW_ID, DatasetSpec, SpecError, TableSpec, load_spec
from aiflow.storage.landing import FORMAT_BY_SUFFIX


def add_spec_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``spec`` command group on the ``aiflow`` CLI's subparsers."""
    spec = subparsers.add_parser("spec", help="Dataset specs: check one, write the JSON Schema for editors.")
    sub = spec.add_subparsers(dest="spec_command", required=True)

    check = sub.add_parser("check", help="Validate a spec (every problem at once); with --sample, the columns it would read.")
    check.add_argument("file", help="The dataset spec YAML.")
    check.add_argument("--sample", help="A landing file: list the columns ingestion would read from it, and its rows.")
    check.add_argument("--table", help="The table the sample lands in (default: the main table).")
    check.set_defaults(func=cmd_check, needs_settings=False)

    schema = sub.add_parser("schema", help="Write the spec's JSON Schema (for YAML completion and validation in an editor).")
    schema.add_argument("-o", "--output", help="File to write (default: standard output).")
    schema.set_defaults(func=cmd_schema, needs_settings=False)


def json_schema() -> dict:
    """The dataset spec's JSON Schema, generated from :class:`aiflow.spec.DatasetSpec`."""
    schema = DatasetSpec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "aiflow dataset spec"}


def cmd_schema(args) -> int:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote the dataset spec's JSON Schema to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_check(args) -> int:
    try:
        spec = load_spec(args.file)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    tables = {t.name: t for t in spec.tables}
    print(f"{args.file}: valid dataset spec '{spec.name}' ({spec.problem_type}; tables: {', '.join(tables)})")
    if not args.sample:
        return 0
    table = tables.get(args.table or spec.name)
    if table is None:
        print(f"aiflow: error: --table {args.table!r}: no table of that name (tables: {', '.join(tables)})", file=sys.stderr)
        return 1
    return _check_sample(Path(args.sample), table)


def _check_sample(path: Path, table: TableSpec) -> int:
    """Print, for each column of the sample, what ingestion does with it; then the rows it would keep and quarantine."""
    fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        print(f"aiflow: error: {path}: unknown file type (expected {', '.join(sorted(FORMAT_BY_SUFFIX))})", file=sys.stderr)
        return 1
    try:
        raw = read_file(path.read_bytes(), fmt, table, path.name)
    except (OSError, RejectedFile) as exc:
        print(f"{path}: would be rejected: {exc}", file=sys.stderr)
        return 1
    good, bad, new_columns = split_typed(with_row_numbers(raw), table)
    sources = {col: src for src, col in table.renames.items()}
    print(f"{path} → table '{table.name}':")
    for name, column in table.columns.items():
        if name == ROW_ID and table.row_identity:
            print(f"  {name:<24} {'string':<9} generated ({table.row_identity})")
            continue
        read = f"read from {sources[name]!r}" if name in sources else "read"
        state = read if name in raw.columns else "absent: null on every row"
        print(f"  {name:<24} {column.type:<9} {state}")
    for name in new_columns:
        print(f"  {name:<24} {'string':<9} not in the spec: kept as text")
    print(f"rows: {good.height} kept, {bad.height} quarantined")
    for row in bad.head(10).select("_source_row", "_reason").iter_rows():
        print(f"  row {row[0]}: {row[1]}")
    return 0
