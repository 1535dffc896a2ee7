"""The replay's final table: the gist of every kind of decision reason the policy writes (real sentences from
``aiflow.monitoring.policy.decide``), and no line wider than 100 columns whatever the reason."""

from __future__ import annotations

import dataclasses
import datetime as dt

import polars as pl

from aiflow.cli.replay_report import render, short_reason
from aiflow.monitoring.policy import Policy, Thresholds, WindowSignals, decide
from aiflow.spec import demo_spec_path, load_spec

W = dt.date(2013, 4, 1)


def window(i: int, realized: float, rows: int = 1000) -> WindowSignals:
    start = W + dt.timedelta(days=7 * i)
    return WindowSignals(start, start + dt.timedelta(days=6), 1, rows, labelled=rows, realized_metric=realized)


def test_each_kind_of_reason_has_a_short_gist():
    policy = Policy(min_rows=500, min_labels=100, use_drift=False, use_estimated=False, use_realized=True, hysteresis=2,
                    decisive_drop=None, cooldown_days=28, budget=4, budget_days=120)  # fmt: skip (0.15 is 3x the threshold)
    t = Thresholds("roc_auc", 0.5, 0.05, 0.05, 0.75, "calibrated", 8)
    few = decide(policy, t, [window(0, 0.6, rows=102)], [], running=False)
    calm = decide(policy, t, [window(0, 0.74)], [], running=False)
    held = decide(policy, t, [window(0, 0.6)], [], running=False)
    fired = decide(policy, t, [window(0, 0.6), window(1, 0.6)], [], running=False)
    cooling = decide(policy, t, [window(1, 0.6), window(2, 0.6)], [fired], running=False)
    running = decide(policy, t, [window(0, 0.6), window(1, 0.6)], [], running=True)
    gists = [short_reason(d.reason, 40) for d in (few, calm, held, fired, cooling, running)]
    assert gists == [
        "too few rows (102 < 500)", "no signal crossed its threshold", "realized held 1 of 2 windows",
        "realized roc_auc drop 0.150 > 0.050", f"cooldown until {fired.window_end + dt.timedelta(days=28)}",
        "a retrain is already running",
    ]  # fmt: skip
    paced = decide(dataclasses.replace(policy, budget_burst=1, cooldown_days=0), t, [window(1, 0.6), window(2, 0.6)], [fired], running=False)
    assert short_reason(paced.reason, 40) == f"budget paced until {fired.window_end + dt.timedelta(days=30)}"
    decisive = decide(dataclasses.replace(policy, decisive_drop=3.0), t, [window(0, 0.6)], [], running=False)
    assert short_reason(decisive.reason, 40) == "realized roc_auc drop 0.150 > 0.050"  # one window, 3x the threshold
    assert short_reason("something new the policy says one day, much longer than the column", 30).endswith("…")


def test_the_table_fits_100_columns():
    spec = load_spec(demo_spec_path())
    table = pl.DataFrame(
        {"window_start": [W], "version": [12], "rows": [123456], "drift": [0.5], "estimated_roc_auc": [0.7], "roc_auc": [None],
         "labelled": [0], "decision": ["retrain"], "reason": ["retrain: " + "x" * 300 + " in window 2013-04-01"]}
    )  # fmt: skip
    text = render(table, spec)
    assert max(len(line) for line in text.splitlines()) <= 100 and "retrain" in text and " - " in text


def test_a_window_that_judged_a_challenger_says_its_verdict_and_gain():
    spec = load_spec(demo_spec_path())
    table = pl.DataFrame(
        {"window_start": [W, W + dt.timedelta(days=7)], "version": [2, 3], "rows": [900, 900], "drift": [0.0, 0.0],
         "estimated_roc_auc": [0.7, 0.7], "roc_auc": [0.66, 0.7], "labelled": [900, 900], "decision": ["skip", "skip"],
         "reason": ["skip: challenger v3 stays in shadow (retrain: realized roc_auc drop 0.1 > 0.05 in window 2013-04-01)",
                    "skip: no signal crossed its threshold in window " + "y" * 200],
         "challenger_version": [3, 3], "challenger_action": ["wait", "promote"], "challenger_gain": [0.004, 0.0123]}
    )  # fmt: skip
    lines = render(table, spec).splitlines()[2:]
    assert lines[0].endswith("skip     v3 waits (+0.004); a retrain waits")
    assert "skip     v3 promoted (+0.012); no signal crossed" in lines[1]
    assert max(len(line) for line in lines) <= 100
