"""What a replay shows at the end: one row per monitored window (drift, estimated and realized metric, labels, serving
version, decision and a short reason) and a chart over data time with the thresholds and the serving versions as bands."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import polars as pl

from aiflow.evaluation.metrics import PRIMARY
from aiflow.monitoring import history
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Lake

WIDTH = 100


def summary(lake: Lake, spec: DatasetSpec) -> pl.DataFrame:
    """One row per monitored window: drift, estimated and realized metric, labels, serving version, decision and reason."""
    metric = PRIMARY[spec.problem_type][0]
    drift = history.drift_summary(lake, spec.name).filter(pl.col("source") == "online")
    if not drift.height:
        return pl.DataFrame()
    drift = drift.sort("window_start", "rows").unique("window_start", keep="last")
    keys = ["window_start", "model_version"]
    table = drift.select(*keys, "rows", "drifted", "columns", pl.col("weighted_drift_share").alias("drift"))
    perf = history.read_performance(lake, spec.name)
    if perf.height:
        wanted = [c for c in (f"estimated_{metric}", metric, "labelled") if c in perf.columns]
        table = table.join(perf.select(*keys, *wanted), on=keys, how="left")
    decisions = history.read_decisions(lake, spec.name)
    if decisions.height:
        table = table.join(
            decisions.select("window_start", pl.col("action").alias("decision"), "reason", "fired", "threshold_drift_share",
                             "threshold_estimated_drop", "threshold_realized_drop", "reference_metric", "challenger_version",
                             "challenger_action", "challenger_gain"),
            on="window_start", how="left",
        )  # fmt: skip
    return table.rename({"model_version": "version"}).sort("window_start")


_SHORT = [
    (re.compile(r"has too few rows to judge \((\d+) < (\d+)\)"), "too few rows ({0} < {1})"),
    (re.compile(r"hysteresis not yet met in .*?\((\w+) held (\d+) of (\d+) windows"), "{0} held {1} of {2} windows"),
    (re.compile(r"^skip: cooldown until (\S+) "), "cooldown until {0}"),
    (re.compile(r"^skip: cooldown, window (\d+) of (\d+) "), "cooldown: window {0} of {1}"),
    (re.compile(r"^skip: retrain budget exhausted"), "retrain budget exhausted"),
    (re.compile(r"^skip: retrain budget paced .*? from the window ending (\S+),"), "budget paced until {0}"),
    (re.compile(r"^skip: a retrain is already running"), "a retrain is already running"),
    (re.compile(r"^skip: no signal crossed"), "no signal crossed its threshold"),
    (re.compile(r"^skip: challenger (v\d+) (stays in shadow|was just promoted)"), "a retrain waits"),
    (re.compile(r"^retrain: (.*?) in window "), "{0}"),
]


def short_reason(reason: str | None, width: int) -> str:
    """The gist of a decision's reason, to fit a terminal (the decisions table keeps the whole sentence)."""
    if not reason:
        return ""
    for pattern, template in _SHORT:
        found = pattern.search(reason)
        if found:
            return textwrap.shorten(template.format(*found.groups()), width=width, placeholder="…")
    return textwrap.shorten(reason, width=width, placeholder="…")


def challenger_note(row: dict) -> str:
    """``v3 promoted (+0.012); `` when the window judged a challenger (its verdict, and the gain it saw)."""
    action = row.get("challenger_action")
    if not action:
        return ""
    gain = row.get("challenger_gain")
    said = {"promote": "promoted", "retire": "retired", "wait": "waits"}.get(action, action)
    return f"v{row.get('challenger_version')} {said}" + (f" ({gain:+.3f})" if gain is not None else "") + "; "


def render(table: pl.DataFrame, spec: DatasetSpec, width: int = WIDTH) -> str:
    """The summary as fixed-width text, at most ``width`` columns: the reason abbreviated (full text in the decisions table)."""
    if not table.height:
        return "no window was monitored"
    metric = PRIMARY[spec.problem_type][0]
    short = {f"estimated_{metric}": "est", metric: "real"}
    head = f"{'window':<10} {'rows':>6} {'drift':>5} {'est':>6} {'real':>6} {'labels':>6} {'v':>2} {'decision':<8} "
    room = max(10, width - len(head))
    lines = [head + "reason", "-" * min(width, len(head) + room)]

    def num(row: dict, col: str, fmt: str) -> str:
        value = row.get(col)
        return format(value, fmt) if isinstance(value, int | float) and value == value else "-"

    for row in table.iter_rows(named=True):
        lines.append(
            f"{row['window_start']!s:<10} {row['rows']:>6} {num(row, 'drift', '5.2f')} {num(row, f'estimated_{metric}', '6.3f')} "
            f"{num(row, metric, '6.3f')} {num(row, 'labelled', '>6')} {row['version']:>2} {row.get('decision') or '-':<8} "
            + (note := challenger_note(row)) + short_reason(row.get("reason"), max(10, room - len(note)))
        )
    del short
    return "\n".join(lines)


def chart(table: pl.DataFrame, spec: DatasetSpec, path: Path) -> None:
    """Drift (with its threshold) and the metric (estimated, realized, with the reference) over data time; the serving
    versions as shaded bands, retrain decisions as red lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not table.height:
        return
    metric = PRIMARY[spec.problem_type][0]
    x = table["window_start"].to_list()
    fig, ax = plt.subplots(figsize=(11, 4.8))
    versions = table["version"].to_list()
    start = 0
    for i in range(1, len(x) + 1):  # one band per run of windows served by the same version
        if i == len(x) or versions[i] != versions[start]:
            end = x[i] if i < len(x) else x[-1]
            ax.axvspan(x[start], end, color=("#eeeeee" if versions[start] % 2 else "#dde8f5"), zorder=0)
            ax.text(x[start], 0.97, f" v{versions[start]}", va="top", fontsize=8, transform=ax.get_xaxis_transform())
            start = i
    ax.plot(x, table["drift"].to_list(), color="tab:orange", marker=".", label="drift (importance-weighted share)")
    if "threshold_drift_share" in table.columns:
        ax.step(x, table["threshold_drift_share"].to_list(), where="post", color="tab:orange", alpha=0.4, ls=":", label="drift threshold")
    ax.set_ylabel("drift share")
    ax.set_ylim(0, 1)
    ax2 = ax.twinx()
    for col, style in ((f"estimated_{metric}", "--"), (metric, "-")):
        if col in table.columns:
            ax2.plot(x, table[col].to_list(), style, color="tab:blue", marker=".", label=col.replace("_", " ") + " (live)")
    if "reference_metric" in table.columns:
        ax2.step(x, table["reference_metric"].to_list(), where="post", color="tab:blue", alpha=0.35, ls=":", label=f"reference {metric}")
    ax2.set_ylabel(metric)
    if "decision" in table.columns:
        for when, decision in zip(x, table["decision"].to_list(), strict=True):
            if decision == "retrain":
                ax.axvline(when, color="tab:red", alpha=0.6)
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, loc="lower left", fontsize=7)
    ax.set_title(f"{spec.name}: drift and live {metric} per {spec.monitoring.window.removesuffix('ly')} of data time "
                 "(bands: serving version; red: retrain decided)", fontsize=10)  # fmt: skip
    ax.set_xlabel(f"window start (data time, {spec.timezone})")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
