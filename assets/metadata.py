"""Metadata shared by every asset that writes a Delta table: where it is, its version, schema and a preview."""

import polars as pl
from dagster import MetadataValue, TableColumn, TableSchema

from aiflow.storage.lake import Lake

PREVIEW_ROWS = 10


def table_metadata(lake: Lake, table: str, *, preview_filter: pl.Expr | None = None) -> dict:
    """Delta version, URI, row count, schema and a small Markdown preview of ``table``."""
    if not lake.exists(table):
        return {"delta_uri": MetadataValue.path(lake.uri(table)), "delta_version": -1}
    lf = lake.scan(table)
    schema = lf.collect_schema()
    preview = (lf.filter(preview_filter) if preview_filter is not None else lf).head(PREVIEW_ROWS).collect()
    return {
        "delta_uri": MetadataValue.path(lake.uri(table)),
        "delta_version": lake.version(table),
        "dagster/row_count": lf.select(pl.len()).collect().item(),
        "dagster/column_schema": TableSchema(columns=[TableColumn(name, str(dtype)) for name, dtype in schema.items()]),
        "preview": MetadataValue.md(markdown_table(preview)),
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
