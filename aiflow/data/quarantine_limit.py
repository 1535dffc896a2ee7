"""The quarantine limit: a file whose rows mostly go to quarantine is rejected whole (DESIGN convention 20).

A file whose rows fail in bulk says something is wrong with the file, the spec or the reader, not with a
few rows: ingesting its few good rows and quarantining the rest would make the run green, and record the
file as ingested so that landing it again (fixed, or after a fix of the reader) adds nothing. Instead the
file is rejected: no row of it in bronze or in quarantine, its ledger entry ``rejected`` with the share
and the top reasons, and the run that saw it fails.
"""

from __future__ import annotations

import polars as pl

from aiflow.data.parse import REASON, RULE

#: Prefix of the error of a file rejected by the limit (the ledger's ``error`` starts with it).
OVER_LIMIT = "quarantine limit"


def top_reasons(bad: pl.DataFrame, n: int = 3) -> list[str]:
    """The most frequent causes among quarantined rows: rule and column, how many rows, one example each."""
    column = pl.col(REASON).str.extract(r"^column '([^']*)'", 1).alias("__column")
    grouped = (
        bad.group_by(RULE, column, maintain_order=True)
        .agg(pl.len().alias("__n"), pl.col(REASON).first().alias("__example"))
        .sort("__n", descending=True, maintain_order=True)
        .head(n)
    )
    return [
        f"{rule}{f' on {col!r}' if col is not None else ''}: {count} row{'' if count == 1 else 's'} (e.g. {example})"
        for rule, col, count, example in grouped.iter_rows()
    ]


def over_limit(file: str, good: int, bad: pl.DataFrame, limit: float) -> str | None:
    """Why ``file`` is rejected by the limit (its ``good`` rows and ``bad`` quarantined rows), or None if it is within it."""
    total = good + bad.height
    if not total or bad.height / total <= limit:
        return None
    return (
        f"{file}: {OVER_LIMIT}: {bad.height} of {total} rows ({bad.height / total:.0%}) would go to quarantine, more than "
        f"max_quarantined_share {limit:g}; top reasons: {'; '.join(top_reasons(bad))}. Nothing of the file was ingested: "
        f"fix the file (or the spec) and land it again"
    )
