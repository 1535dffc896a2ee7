"""Metadata shared by every asset that writes a Delta table: where it is, its version, schema, a preview, its data version."""

import datetime as dt
import math

import polars as pl
from dagster import DataVersion, MetadataValue, TableColumn, TableRecord, TableSchema

from aiflow.data.maintenance import content_version
from aiflow.data.parse import RULE
from aiflow.storage.lake import Lake

PREVIEW_ROWS = 10


def uri_value(uri: str) -> MetadataValue:
    """A location as a link the UI can open: a URL for ``scheme://`` locations, a path otherwise."""
    return MetadataValue.url(uri) if "://" in uri else MetadataValue.path(uri)


def table_data_version(lake: Lake, table: str) -> DataVersion:
    """The data version of an asset that owns ``table``: the version of its newest row-changing commit.

    A run that changes nothing (and compaction or vacuum) leaves it as it was, so everything downstream
    stays fresh; a table that does not exist yet has the data version ``absent``.
    """
    version = content_version(lake, table)
    return DataVersion("absent" if version is None else f"v{version}")


def table_metadata(
    lake: Lake, table: str, *, preview_filter: pl.Expr | None = None, descriptions: dict[str, str] | None = None
) -> dict:
    """URI, Delta version, row count, schema and a small inline preview of ``table`` (only the URI if it is missing).

    The row count (``dagster/row_count``) is the table's total, whatever the run added. ``descriptions`` (column name ->
    text, from the dataset spec) go into the column schema the UI shows.
    """
    if not lake.exists(table):
        return {"delta_uri": uri_value(lake.uri(table)), "table_exists": False}
    lf = lake.scan(table)
    schema = lf.collect_schema()
    preview = (lf.filter(preview_filter) if preview_filter is not None else lf).head(PREVIEW_ROWS).collect()
    return {
        "delta_uri": uri_value(lake.uri(table)),
        "delta_version": lake.version(table),
        "dagster/row_count": lf.select(pl.len()).collect().item(),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name, str(dtype), description=(descriptions or {}).get(name) or None) for name, dtype in schema.items()]
        ),
        "preview": frame_table(preview),
    }


def quarantine_summary(lake: Lake, table: str) -> dict:
    """Rows in the quarantine table ``table`` by stage and rule (the table's totals), as inline metadata."""
    if not lake.exists(table):
        return {"table_rows_quarantined": 0}
    by_rule = lake.scan(table).group_by("_stage", RULE).agg(pl.len().alias("rows")).sort("_stage", "rows", descending=[False, True]).collect()
    return {
        "table_rows_quarantined": int(by_rule["rows"].sum()),
        "quarantine_by_rule": frame_table(by_rule.rename({"_stage": "stage", RULE: "rule"})),
    }


def markdown_table(df: pl.DataFrame, max_chars: int = 40) -> str:
    """A DataFrame as a Markdown table for the UI (Polars' own Markdown formatter)."""
    if df.is_empty():
        return "_no rows_"
    df = df.with_columns(pl.col(pl.String).str.replace_all("|", "\\|", literal=True))
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        fmt_str_lengths=max_chars,
        tbl_cols=-1,
        tbl_rows=df.height,
        tbl_width_chars=10_000,
    ):
        return str(df)


#: How Polars types show in a MetadataValue.table schema (the UI formats numbers and booleans natively).
_TABLE_TYPES = {pl.Boolean: "bool", pl.Float32: "float", pl.Float64: "float"}


def _cell(value, digits: int):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, int | bool | str) or value is None:
        return value
    return str(value)


def frame_table(df: pl.DataFrame, *, digits: int = 4, max_rows: int = 100, max_chars: int = 200) -> MetadataValue:
    """A DataFrame as an inline table in the UI (``MetadataValue.table``): floats rounded, nulls as empty cells.

    Nested and temporal values become text; at most ``max_rows`` rows and ``max_chars`` characters per text cell.
    """
    df = df.head(max_rows)
    columns = []
    for name, dtype in df.schema.items():
        kind = "int" if dtype.is_integer() else _TABLE_TYPES.get(dtype.base_type(), "string")
        columns.append(TableColumn(name, kind))
    records = []
    for row in df.iter_rows(named=True):
        cells = {k: _cell(v, digits) for k, v in row.items()}
        cells = {k: (v[:max_chars] if isinstance(v, str) else v) for k, v in cells.items()}
        records.append(TableRecord(cells))
    return MetadataValue.table(records=records, schema=TableSchema(columns=columns))
