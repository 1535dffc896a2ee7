"""Validate a candidate against the gates and against the champion, on the same held-out rows.

The rows are the test split of the features table at the candidate's pinned Delta version; the
champion (if any) is scored on exactly those rows, and so are the earlier champions it is given (a concept that
comes back was learnt by the champion that served it: :func:`aiflow.monitoring.challenger.reinstatement`). Every
model is loaded from a verified bundle (SHA-256 checked before anything is deserialised).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

from aiflow.data.split import pinned_windows
from aiflow.evaluation.gates import (
    GateConfig,
    GateResult,
    LatencyReading,
    absolute_gates,
    apply_off,
    baseline_gate,
    champion_gate,
    effective_gates,
    latency_gate,
    schema_gate,
    slice_gate,
)
from aiflow.evaluation.metrics import PRIMARY, compute_metrics, slice_metrics
from aiflow.evaluation.paired import Evidence, paired_evidence
from aiflow.evaluation.plots import comparison_plot
from aiflow.spec import EVENT_DATE, DatasetSpec
from aiflow.storage.artifacts import ArtifactStore

if TYPE_CHECKING:  # torch and skops load with a model, not with the code location
    from aiflow.models.bundle import LoadedModel
    from aiflow.models.registry import ModelVersion

SCORE = "_score"


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: where its bundle is and the digest it must have.

    ``artifact_uri`` may be relative to ``artifact_root`` (as the registry stores it); ``files`` (each
    file's SHA-256, from the registry) lets a mismatch name exactly the file that differs.
    """

    label: str
    artifact_uri: str
    artifact_sha256: str
    version: int | None = None
    artifact_root: str | None = None
    files: Mapping[str, str] | None = None

    @property
    def location(self) -> str:
        """The bundle's URI (a relative location resolved against ``artifact_root``)."""
        from aiflow.models.registry import resolve_location

        return resolve_location(self.artifact_uri, self.artifact_root)

    @classmethod
    def of(cls, version: ModelVersion, artifact_root: str | None) -> ModelRef:
        """The reference of a registered version, its location resolved against the current artifact root."""
        return cls(f"v{version.version}", version.artifact_uri, version.artifact_sha256, version.version, artifact_root, version.bundle_files)


@dataclass
class ValidationReport:
    rows: int
    primary_metric: str
    candidate_metrics: dict[str, float]
    candidate_slices: pl.DataFrame
    gates: list[GateResult]
    latency_ms_per_1k: float
    plot_png: bytes
    champion: ModelRef | None = None
    champion_metrics: dict[str, float] | None = None
    champion_slices: pl.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    evidence: Evidence | None = None  # the candidate's gain over the champion on these rows (paired bootstrap)
    earlier: dict[int, Evidence] = field(default_factory=dict)  # each earlier champion's gain over the champion, same rows

    def evidence_metrics(self) -> dict[str, float]:
        """``gain_vs_champion`` and its bounds (``_low``, ``_high``) for the evaluation's test metrics, and
        ``v<N>_gain_vs_champion`` (and bounds) for each earlier champion v<N>; {} without a champion."""
        out = {}
        for prefix, e in [("", self.evidence), *((f"v{v}_", e) for v, e in sorted(self.earlier.items()))]:
            if e is not None and e.gain is not None and e.low is not None and e.high is not None:
                out |= {f"{prefix}gain_vs_champion": e.gain, f"{prefix}gain_vs_champion_low": e.low, f"{prefix}gain_vs_champion_high": e.high}
        return out

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def slice_table(self) -> pl.DataFrame:
        """One row per slice value: rows, the candidate's primary metric and, with a champion, the
        champion's on the same rows and the difference (candidate minus champion)."""
        metric = self.primary_metric
        columns = ["slice", "value", "rows", metric]
        if self.candidate_slices.is_empty() or metric not in self.candidate_slices.columns:
            return pl.DataFrame(schema={"slice": pl.String, "value": pl.String, "rows": pl.Int64, metric: pl.Float64})
        table = self.candidate_slices.select(columns)
        champ = self.champion_slices
        if champ is not None and not champ.is_empty() and metric in champ.columns:
            champion_col = f"champion_{metric}"
            table = table.join(champ.select("slice", "value", pl.col(metric).alias(champion_col)), on=["slice", "value"], how="left")
            table = table.with_columns((pl.col(metric) - pl.col(champion_col)).alias("delta_vs_champion"))
        return table


_EARLIER = re.compile(r"^v(\d+)_gain_vs_champion_low$")


def evidence_of_metrics(metrics: Mapping[str, float], metric: str, rows: int) -> tuple[Evidence | None, dict[int, Evidence]]:
    """The offline evidence :meth:`ValidationReport.evidence_metrics` recorded, read back: the candidate's against the
    champion (None without) and each earlier champion's, by version (the bounds are one-sided at 90 %)."""

    def read(prefix: str) -> Evidence | None:
        keys = [f"{prefix}gain_vs_champion{s}" for s in ("", "_low", "_high")]
        if not all(k in metrics for k in keys):
            return None
        gain, low, high = (metrics[k] for k in keys)
        return Evidence(metric, rows, gain=gain, low=low, high=high, confidence=0.9)

    earlier = {int(m.group(1)): read(f"v{m.group(1)}_") for k in metrics if (m := _EARLIER.match(k))}
    return read(""), {v: e for v, e in earlier.items() if e is not None}


def load_model(ref: ModelRef, artifact_options: dict[str, str] | None = None) -> LoadedModel:
    """Load a bundle by its URI after checking its hash (``artifact_options``: S3 options; None reads the environment)."""
    from aiflow.models.bundle import load_bundle

    return load_bundle(ArtifactStore(ref.location, storage_options=artifact_options), "", ref.artifact_sha256, ref.files or None)


def held_out_rows(features_uri: str, data_version: int, spec: DatasetSpec, storage_options: dict | None = None) -> pl.DataFrame:
    """The test window of the split policy (:mod:`aiflow.data.split`) in the features table at exactly ``data_version``."""
    windows = pinned_windows(features_uri, data_version, spec.split, storage_options)
    rows = pl.scan_delta(features_uri, version=data_version, storage_options=storage_options or None).filter(windows.test()).collect()
    if rows.is_empty():
        raise ValueError(
            f"{features_uri} at version {data_version} has no rows in the test window ({windows.describe()}): nothing to evaluate on"
        )
    return rows


def prediction_latency_ms_per_1k(model: LoadedModel, rows: pl.DataFrame, repeats: int = 5) -> float:
    """Median wall time to predict 1,000 rows (fewer if the table is smaller, scaled up)."""
    return paired_latency(model, None, rows, repeats).candidate_ms


def paired_latency(candidate, champion, rows: pl.DataFrame, repeats: int = 7) -> LatencyReading:
    """Time to predict 1,000 rows (fewer if the table is smaller, scaled up) of the candidate and the champion,
    interleaved (ABBA…) so both see the same machine: a busy neighbour slows both, not one. Medians and ranges."""
    sample = rows.head(1000)
    scale = 1000 * 1000 / max(sample.height, 1)
    times: dict[str, list[float]] = {"candidate": [], "champion": []}
    models = {"candidate": candidate, "champion": champion}
    for model in (candidate, champion):  # warm up (first-call allocations, lazy imports)
        if model is not None:
            model.predict(sample)
    for i in range(repeats):
        order = ("candidate", "champion") if i % 2 == 0 else ("champion", "candidate")
        for name in order:
            if models[name] is None:
                continue
            start = time.perf_counter()
            models[name].predict(sample)
            times[name].append((time.perf_counter() - start) * scale)
    c, r = times["candidate"], times["champion"]
    ratio = statistics.median(a / b for a, b in zip(c, r, strict=True) if b > 0) if r and any(b > 0 for b in r) else None
    return LatencyReading(
        statistics.median(c), (min(c), max(c)), statistics.median(r) if r else None, (min(r), max(r)) if r else None, repeats, ratio
    )


def _inputs(model: LoadedModel) -> set[str]:
    return set(model.input_columns)


def validate(
    candidate: ModelRef,
    *,
    features_uri: str,
    data_version: int,
    spec: DatasetSpec,
    candidate_valid_metrics: dict[str, float],
    baseline_valid_metrics: dict[str, float],
    champion: ModelRef | None,
    config: GateConfig,
    storage_options: dict | None = None,
    artifact_options: dict[str, str] | None = None,
    earlier: Sequence[ModelRef] = (),
) -> ValidationReport:
    """Evaluate the candidate (and the champion, and the ``earlier`` champions, on the same rows) and run every gate.

    An earlier champion that cannot be compared (its bundle no longer loads or verifies, an input column is gone) is left
    out with a note: it never fails the candidate's evaluation."""
    config = effective_gates(spec, config)  # the launchpad over the spec's gates over the problem type's defaults
    rows = held_out_rows(features_uri, data_version, spec, storage_options)
    target, problem, metric = spec.target.name, spec.problem_type, PRIMARY[spec.problem_type][0]
    model = load_model(candidate, artifact_options)
    scored = rows.with_columns(pl.Series(SCORE, model.predict(rows)))
    y = scored[target].to_numpy()
    cand = compute_metrics(y, scored[SCORE].to_numpy(), problem)
    cand_slices = slice_metrics(scored, spec.slices, problem, target=target, score=SCORE)

    champ_metrics = champ_slices = champ_model = evidence = None
    earlier_evidence: dict[int, Evidence] = {}
    curves = {f"candidate ({candidate.label})": scored[SCORE].to_numpy()}
    missing = sorted(_inputs(model) - set(rows.columns))
    changed: list[str] = []
    notes = []
    if champion is not None:
        champ_model = load_model(champion, artifact_options)
        champ_scored = rows.with_columns(pl.Series(SCORE, champ_model.predict(rows)))
        champ_metrics = compute_metrics(y, champ_scored[SCORE].to_numpy(), problem)
        champ_slices = slice_metrics(champ_scored, spec.slices, problem, target=target, score=SCORE)
        curves[f"champion ({champion.label})"] = champ_scored[SCORE].to_numpy()
        changed = sorted(_inputs(model) ^ _inputs(champ_model))
        evidence = paired_evidence(y, champ_scored[SCORE].to_numpy(), scored[SCORE].to_numpy(), metric)
        earlier_evidence = _earlier_evidence(earlier, rows, y, champ_scored[SCORE].to_numpy(), metric, notes, artifact_options)
    else:
        notes.append("no champion yet: the candidate is compared with the gates and the baseline only")

    reading = paired_latency(model, champ_model if champion is not None else None, rows)
    latency = reading.candidate_ms
    gates = [
        *absolute_gates(cand, config),
        champion_gate(metric, cand.get(metric), champ_metrics.get(metric) if champ_metrics else None, config.champion_tolerance),
        slice_gate(metric, cand_slices, champ_slices, config.slice_tolerance),
        baseline_gate(metric, candidate_valid_metrics.get(metric), baseline_valid_metrics.get(metric), config.must_beat_baseline),
        latency_gate(reading, config.latency_budget_ms_per_1k, config.latency_factor),
        schema_gate(missing, changed, config.allow_input_change),
    ]
    gates = apply_off(gates, config)
    plot = comparison_plot(y, curves, problem, f"{spec.name}: test rows from {rows[EVENT_DATE].min()} ({rows.height:,})")
    return ValidationReport(
        rows=rows.height,
        primary_metric=metric,
        candidate_metrics=cand,
        candidate_slices=cand_slices,
        gates=gates,
        latency_ms_per_1k=latency,
        plot_png=plot,
        champion=champion,
        champion_metrics=champ_metrics,
        champion_slices=champ_slices,
        notes=notes,
        evidence=evidence,
        earlier=earlier_evidence,
    )


def _earlier_evidence(earlier: Sequence[ModelRef], rows: pl.DataFrame, y, champion_scores, metric: str, notes: list[str],
                      artifact_options: dict[str, str] | None) -> dict[int, Evidence]:  # fmt: skip
    """Each earlier champion's gain over the champion on the held-out rows; one that cannot be scored gets a note."""
    out = {}
    for ref in earlier:
        try:
            model = load_model(ref, artifact_options)
            missing = sorted(_inputs(model) - set(rows.columns))
            if missing:
                notes.append(f"earlier champion {ref.label} not compared: its input column(s) {', '.join(missing)} are gone")
                continue
            scores = model.predict(rows)
        except Exception as exc:  # a bundle deleted, tampered or unreadable must not fail the candidate's evaluation
            notes.append(f"earlier champion {ref.label} not compared: {type(exc).__name__}: {exc}")
            continue
        assert ref.version is not None, "an earlier champion is a registered version"
        out[ref.version] = paired_evidence(y, champion_scores, scores, metric)
    return out
