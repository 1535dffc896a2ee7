"""Batch scoring: the champion scores new feature partitions into ``predictions/<dataset>``.

Incremental like the other stages: the predictions commit records the features version it scored
and the dates it wrote; the next run scores only the feature dates rewritten since. Every row carries
the model name and version that produced it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from aiflow.spec import EVENT_DATE, DatasetSpec
from aiflow.storage.lake import Lake, Tables

if TYPE_CHECKING:
    from aiflow.models.bundle import LoadedModel

SCORE, PREDICTION = "score", "prediction"


@dataclass
class ScoringReport:
    """What a batch-scoring run did: the dates it scored, rows written, the features version it read."""

    table: str
    dates: list[dt.date] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    version: int | None = None
    upstream: dict[str, int | None] = field(default_factory=dict)
    full_refresh: bool = False


def prediction_frame(rows: pl.DataFrame, scores, spec: DatasetSpec, model_name: str, model_version: int, threshold: float = 0.5) -> pl.DataFrame:
    """Ids, event time and date, the score, the decision and the model that made it."""
    ids = list(dict.fromkeys([*spec.key, spec.event_time]))
    out = rows.select(ids + [EVENT_DATE]).with_columns(pl.Series(SCORE, scores, dtype=pl.Float64))
    if spec.problem_type == "classification":
        out = out.with_columns((pl.col(SCORE) >= threshold).cast(pl.Int8).alias(PREDICTION))
    else:
        out = out.with_columns(pl.col(SCORE).alias(PREDICTION))
    return out.with_columns(
        pl.lit(model_name).alias("model_name"),
        pl.lit(model_version, pl.Int64).alias("model_version"),
        pl.lit(dt.datetime.now(dt.UTC), pl.Datetime("us", "UTC")).alias("scored_at"),
    )


def score_new_partitions(
    lake: Lake, spec: DatasetSpec, model: LoadedModel, model_name: str, model_version: int, *, rescore_all: bool = False
) -> ScoringReport:
    """Score the feature dates not scored yet (all of them the first time, or with ``rescore_all``)."""
    features, predictions = Tables.features(spec.name), Tables.predictions(spec.name)
    report = ScoringReport(table=predictions)
    if not lake.exists(features):
        raise RuntimeError(f"no features table at {lake.uri(features)}")
    version = lake.version(features)
    report.upstream = {features: version}
    last = lake.last_metadata(predictions, "features_version")
    dates = None if (rescore_all or last is None) else lake.dates_since(features, int(last))
    if dates is None:
        report.full_refresh = True
        dates = sorted(lake.scan(features, version).select(pl.col(EVENT_DATE).unique()).collect().to_series().to_list())
    report.dates = dates
    if not dates:
        return report
    rows = lake.scan(features, version).filter(pl.col(EVENT_DATE).is_in(dates)).collect()
    out = prediction_frame(rows, model.predict(rows), spec, model_name, model_version)
    report.rows_in = report.rows_out = out.height
    report.version = lake.replace_dates(
        predictions,
        out,
        dates,
        partitioning=spec.partitioning,
        metadata={"features_version": str(version), "model_version": str(model_version), "dates": [d.isoformat() for d in dates]},
    )
    return report
