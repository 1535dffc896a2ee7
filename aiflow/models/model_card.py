"""Model card: a Markdown page per registered model version (data, metrics, slices, gates, lineage, artifact).

Pure string building from a :class:`~aiflow.models.registry.ModelVersion`; writing it somewhere is the caller's job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from aiflow.models.metric_names import SPLITS, TEST, VALID, split_of, unprefixed
from aiflow.models.registry import ModelVersion


def model_card(
    version: ModelVersion,
    *,
    spec_name: str,
    slices: Mapping[str, Mapping[str, Any]] | None = None,
    champion: ModelVersion | None = None,
    champion_test_metrics: Mapping[str, float] | None = None,
) -> str:
    """The model card of ``version`` as Markdown.

    Args:
        version: the registered version.
        spec_name: name of the dataset spec it was trained for.
        slices: slice name (e.g. ``origin=JFK``) -> metric -> value, shown as one table.
        champion: the version serving when this card was written; its test metrics are shown next to this model's.
        champion_test_metrics: the champion's metrics (bare names) on this model's test rows, from the same
            evaluation; without them the champion's own registered test metrics are shown.
    """
    mv = version
    verdict = "passed" if mv.gates_passed else "FAILED"
    parts = [
        f"# Model card: {mv.name} v{mv.version}",
        "",
        f"Dataset spec `{_cell(spec_name)}` · registered {mv.created_at:%Y-%m-%d %H:%M:%S UTC} · trained because: "
        f"{_cell(mv.reason)} · family **{_cell(mv.family or 'pytorch')}** · gates **{verdict}**",
        "",
        "## Data",
        "",
        _table(
            ["field", "value"],
            [
                ["Training table", f"`{mv.training_table}`"],
                ["Delta version", mv.training_version],
                ["Feature state version", mv.state_version],
            ],
        ),
        "",
        "## Metrics",
        "",
        _metrics(mv, champion, champion_test_metrics),
    ]
    if mv.family_metrics:
        parts += ["", f"## Model families (validation; this version is the **{_cell(mv.family)}** model)", "", _families(mv)]
    if slices:
        parts += ["", "## Slices", "", _slices(slices)]
    parts += ["", "## Gates", "", _gates(mv)]
    parts += [
        "",
        "## Lineage",
        "",
        _table(
            ["field", "value"],
            [
                ["Code version", f"`{mv.code_version}`" if mv.code_version else "unknown"],
                ["Reason", mv.reason],
                ["Run id", mv.run_id],
                ["Registered at", mv.created_at.isoformat()],
            ],
        ),
        "",
        "Parameters:",
        "",
        "```json",
        json.dumps(mv.params, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "## Artifact",
        "",
        _table(["field", "value"], [["URI", f"`{mv.artifact_uri}`"], ["SHA-256", f"`{mv.artifact_sha256}`"]]),
        "",
    ]
    return "\n".join(parts)


def _metrics(mv: ModelVersion, champion: ModelVersion | None, champion_test: Mapping[str, float] | None) -> str:
    """One row per metric and split: this model, the baseline (validation rows), the champion (test rows), and Δs.

    The registry stores a version's metrics prefixed (``valid_*``, ``test_*``) and its baseline's bare.
    """
    ours = {VALID: unprefixed(VALID, mv.metrics), TEST: unprefixed(TEST, mv.metrics)}
    other = {k: v for k, v in mv.metrics.items() if split_of(k) is None}
    theirs: Mapping[str, float] = {}
    if champion is not None:
        theirs = champion_test if champion_test is not None else unprefixed(TEST, champion.metrics)
    names = list(dict.fromkeys([*ours[VALID], *mv.baseline_metrics, *ours[TEST], *other]))
    if not names:
        return "No metrics recorded."
    header = ["metric", "split", "this model", "naive reference", "Δ vs naive"]
    if champion is not None:
        header += [f"champion v{champion.version}", "Δ vs champion"]
    rows = []
    for name in names:
        for prefix in (VALID, TEST):
            value = ours[prefix].get(name)
            baseline = mv.baseline_metrics.get(name) if prefix == VALID else None
            if value is None and baseline is None:
                continue
            row = [name, SPLITS[prefix], value, baseline, _delta(value, baseline)]
            if champion is not None:
                champ = theirs.get(name) if prefix == TEST else None
                row += [champ, _delta(value, champ)]
            rows.append(row)
        if name in other:
            rows.append([name, "–", other[name], None, "", *([None, ""] if champion is not None else [])])
    return _table(header, rows)


def _families(mv: ModelVersion) -> str:
    """One row per metric, one column per trained family: what the other family scored on the same validation rows."""
    families = list(mv.family_metrics)
    names = list(dict.fromkeys(name for values in mv.family_metrics.values() for name in values))
    return _table(["metric", *families], [[name, *(mv.family_metrics[f].get(name) for f in families)] for name in names])


def _slices(slices: Mapping[str, Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for values in slices.values() for key in values))
    return _table(["slice", *columns], [[name, *(values.get(c) for c in columns)] for name, values in slices.items()])


def _gates(mv: ModelVersion) -> str:
    if not mv.gate_results:
        return f"No gates recorded (gates_passed: {mv.gates_passed})."
    rows = []
    for gate, result in mv.gate_results.items():
        if result.get("configured") is False:
            verdict = "– not required"
        else:
            verdict = "✅ passed" if result.get("passed") else "❌ failed"
        rows.append([gate, verdict, result.get("value"), result.get("threshold"), result.get("margin"), result.get("detail") or ""])
    return _table(["gate", "result", "value", "threshold", "margin", "detail"], rows)


def _delta(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return ""
    return f"{a - b:+.4f}"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.4e}"
    return str(value)


def _cell(value: Any) -> str:
    """A value safe inside a Markdown table cell."""
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
