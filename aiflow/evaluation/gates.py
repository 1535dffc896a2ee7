"""Model gates: a candidate is deployable only if every gate passes. Pure functions.

Each gate says whether it passed, the value it saw, the threshold, and by how much it missed, so
the Dagster check can show which gate failed and by how much.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from aiflow.evaluation.metrics import HIGHER_IS_BETTER, regression_of


class GateConfig(BaseModel):
    """Thresholds of the blocking model gates (editable in the launchpad)."""

    model_config = ConfigDict(extra="forbid")

    absolute: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.6},
        description="Per metric: the floor (higher-is-better metrics) or ceiling (lower-is-better) on the test rows.",
    )
    champion_tolerance: float = Field(0.005, ge=0, description="Largest allowed regression of the primary metric vs the champion, same rows.")
    slice_tolerance: float = Field(0.03, ge=0, description="Largest allowed regression of the primary metric in any slice vs the champion.")
    must_beat_baseline: bool = Field(True, description="The primary validation metric must beat the scikit-learn baseline's.")
    latency_budget_ms_per_1k: float = Field(250.0, gt=0, description="Largest prediction time for 1,000 rows, in milliseconds.")
    allow_input_change: bool = Field(False, description="Allow a candidate whose input columns differ from the champion's.")


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: the value it saw, the threshold it held it to, and the margin.

    ``margin`` is in the metric's units, positive when the gate passed with room to spare and negative
    by how much it missed; None when the gate has no numeric threshold. ``configured`` is False for a
    gate the configuration switched off (it then passes and says so).
    """

    gate: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str
    margin: float | None = None
    configured: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def absolute_gates(metrics: dict[str, float], config: GateConfig) -> list[GateResult]:
    out = []
    for metric, bound in config.absolute.items():
        if metric not in HIGHER_IS_BETTER:
            raise ValueError(f"gates.absolute: unknown metric {metric!r} (known: {sorted(HIGHER_IS_BETTER)})")
        value = metrics.get(metric)
        if value is None or math.isnan(value):
            out.append(GateResult(f"absolute:{metric}", False, value, bound, f"{metric} could not be computed on the test rows"))
            continue
        higher = HIGHER_IS_BETTER[metric]
        margin = value - bound if higher else bound - value
        ok = margin >= 0
        word = "at least" if higher else "at most"
        miss = "" if ok else f", misses by {abs(margin):.4f}"
        out.append(GateResult(f"absolute:{metric}", ok, value, bound, f"{metric} {_fmt(value)} must be {word} {bound}{miss}.", margin))
    return out


def champion_gate(metric: str, candidate: float | None, champion: float | None, tolerance: float) -> GateResult:
    if candidate is None or math.isnan(candidate):
        return GateResult("vs_champion", False, candidate, champion, f"The candidate's {metric} could not be computed on the test rows.")
    if champion is None or math.isnan(champion):
        return GateResult("vs_champion", True, candidate, None, "No champion (or no champion metric) to compare with.")
    worse = regression_of(metric, candidate, champion)
    ok = worse <= tolerance
    return GateResult(
        "vs_champion",
        ok,
        candidate,
        champion,
        f"{metric} {_fmt(candidate)} vs champion {_fmt(champion)} on the same rows: "
        + ("no regression beyond" if ok else f"regresses by {worse:.4f}, more than") + f" the tolerance {tolerance}.",
        tolerance - worse,
    )


def slice_gate(metric: str, candidate: pl.DataFrame, champion: pl.DataFrame | None, tolerance: float) -> GateResult:
    if champion is None or champion.is_empty() or metric not in candidate.columns:
        return GateResult("slices_vs_champion", True, None, tolerance, "No champion slices to compare with.")
    joined = candidate.join(champion, on=["slice", "value"], suffix="_champion")
    worst_gap, worst = -math.inf, None
    for row in joined.iter_rows(named=True):
        c, r = row[metric], row[f"{metric}_champion"]
        if c is None or r is None or math.isnan(c) or math.isnan(r):
            continue
        gap = regression_of(metric, c, r)
        if gap > worst_gap:
            worst_gap, worst = gap, row
    if worst is None:
        return GateResult("slices_vs_champion", True, None, tolerance, "No slice has a defined metric on both sides.")
    ok = worst_gap <= tolerance
    where = f"{worst['slice']}={worst['value']}"
    return GateResult(
        "slices_vs_champion",
        ok,
        worst_gap,
        tolerance,
        f"worst slice {where}: {metric} {_fmt(worst[metric])} vs champion {_fmt(worst[f'{metric}_champion'])} "
        + ("within" if ok else "regresses beyond") + f" tolerance {tolerance} (gap {worst_gap:.4f}).",
        tolerance - worst_gap,
    )


def baseline_gate(metric: str, candidate_valid: float | None, baseline_valid: float | None, required: bool) -> GateResult:
    if not required:
        return GateResult(
            "beats_baseline", True, candidate_valid, baseline_valid, "Not configured: must_beat_baseline is off.", configured=False
        )
    if candidate_valid is None or baseline_valid is None:
        return GateResult("beats_baseline", False, candidate_valid, baseline_valid, f"Validation {metric} is missing for the model or the baseline.")
    margin = -regression_of(metric, candidate_valid, baseline_valid)
    ok = margin > 0
    return GateResult(
        "beats_baseline",
        ok,
        candidate_valid,
        baseline_valid,
        f"validation {metric} {_fmt(candidate_valid)} vs scikit-learn baseline {_fmt(baseline_valid)}: "
        + ("beats it." if ok else "does not beat it."),
        margin,
    )


def latency_gate(ms_per_1k: float, budget: float) -> GateResult:
    ok = ms_per_1k <= budget
    detail = f"{ms_per_1k:.1f} ms per 1,000 rows, budget {budget:.0f} ms" + ("." if ok else f" (over by {ms_per_1k - budget:.1f} ms).")
    return GateResult("latency", ok, ms_per_1k, budget, detail, budget - ms_per_1k)


def schema_gate(missing: list[str], changed: list[str], allow_change: bool) -> GateResult:
    problems = []
    if missing:
        problems.append(f"inputs missing from the features table: {missing}")
    if changed and not allow_change:
        problems.append(f"inputs differ from the serving champion's: {changed}")
    detail = "; ".join(problems) + "." if problems else "Inputs match the features table and the champion."
    return GateResult("input_schema", not problems, None, None, detail[0].upper() + detail[1:])
