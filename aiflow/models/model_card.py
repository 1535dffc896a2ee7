"""Model card: a Markdown page per registered model version (data, metrics, slices, gates, lineage, artifact).

Pure string building from a :class:`~aiflow.models.registry.ModelVersion`; writing it somewhere is the caller's job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from aiflow.models.registry import ModelVersion


def model_card(
    version: ModelVersion,
    *,
    spec_name: str,
    slices: Mapping[str, Mapping[str, Any]] | None = None,
    champion: ModelVersion | None = None,
) -> str:
    """The model card of ``version`` as Markdown.

    Args:
        version: the registered version.
        spec_name: name of the dataset spec it was trained for.
        slices: slice name (e.g. ``origin=JFK``) -> metric -> value, shown as one table.
        champion: the version serving when this card was written; its metrics are shown side by side.
    """
    mv = version
    verdict = "passed" if mv.gates_passed else "FAILED"
    parts = [
        f"# Model card: {mv.name} v{mv.version}",
        "",
        f"Dataset spec `{_cell(spec_name)}` · registered {mv.created_at:%Y-%m-%d %H:%M:%S UTC} · trained because: "
        f"{_cell(mv.reason)} · gates **{verdict}**",
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
        _metrics(mv, champion),
    ]
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


def _metrics(mv: ModelVersion, champion: ModelVersion | None) -> str:
    names = list(dict.fromkeys([*mv.metrics, *mv.baseline_metrics]))
    if not names:
        return "No metrics recorded."
    header = ["metric", "this model", "baseline", "Δ vs baseline"]
    if champion is not None:
        header += [f"champion v{champion.version}", "Δ vs champion"]
    rows = []
    for name in names:
        ours = mv.metrics.get(name)
        row = [name, ours, mv.baseline_metrics.get(name), _delta(ours, mv.baseline_metrics.get(name))]
        if champion is not None:
            row += [champion.metrics.get(name), _delta(ours, champion.metrics.get(name))]
        rows.append(row)
    return _table(header, rows)


def _slices(slices: Mapping[str, Mapping[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for values in slices.values() for key in values))
    return _table(["slice", *columns], [[name, *(values.get(c) for c in columns)] for name, values in slices.items()])


def _gates(mv: ModelVersion) -> str:
    if not mv.gate_results:
        return f"No gates recorded (gates_passed: {mv.gates_passed})."
    rows = []
    for gate, result in mv.gate_results.items():
        extra = {k: v for k, v in result.items() if k not in ("passed", "value", "threshold")}
        detail = ", ".join(f"{k}: {v}" for k, v in extra.items())
        rows.append([gate, "✅ passed" if result.get("passed") else "❌ failed", result.get("value"), result.get("threshold"), detail])
    return _table(["gate", "result", "value", "threshold", "detail"], rows)


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
