"""The loop's decisions on worlds whose truth is known (issue 21): every policy on the same score matrices.

For each world (:mod:`benchmarks.worlds`) and seed, every model is trained and scored once
(:mod:`benchmarks.loop_matrix`); the policies (:mod:`benchmarks.loop_policies`) are replayed on that matrix: the
shipped loop (``default``: the real ``decide``, ``calibrate``, ``paired_evidence``, ``judge``,
``decisive_offline``), ``never``, ``every_window``, fixed schedules, a CARA-style cost threshold and the
retrospective oracle. Numbers are means over seeds, except ``detection_delay_windows`` (the worst seed; null when a
seed never promoted after the change, or when nothing changed).

Cost objective (what the oracle minimises): ``total_cost = sum over windows of loss_w + cost * promotions`` where
``loss_w`` is what the serving model loses against the freshest model on window w's rows with their true labels:
ROC AUC points, or the relative RMSE reduction (``gain_of``); ``cost`` is ``ChallengerPolicy().cost`` unless
``--challenger-args`` says otherwise.

Run: ``python -m benchmarks.loop_worlds --quick --out FILE`` (a JSON list: one object per world and policy).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

from aiflow.monitoring.challenger import ChallengerPolicy
from aiflow.monitoring.policy import Policy
from benchmarks import loop_policies as lp
from benchmarks.loop_matrix import TRAIN_WINDOWS, Matrix, build_matrix, schedule_cost
from benchmarks.worlds import World, all_worlds

SCHEDULES = (2, 3, 4, 6, 8)
QUICK = {"windows": 24, "rows": 1000, "seeds": 3}
FULL = {"windows": 40, "rows": 2000, "seeds": 5}
COST_SLACK = 0.10  # the cost goal: within 10 % of the oracle's, with an absolute floor of 10 % of a promotion every window


def say(message: str) -> None:
    print(message, flush=True)


def measure(m: Matrix, run: lp.Run, cost: float) -> dict:
    """One run's numbers against the truth."""
    w, first, delay = m.world, m.first, m.world.label_delay
    live = [m.M[s, first + i] for i, s in enumerate(run.serving)]
    at = {first + i: s for i, s in enumerate(run.serving)}

    def changed(lo: int, hi: int) -> bool:  # the concept changed in windows lo..hi
        return any(w.changed[u] for u in range(max(lo, 0), hi + 1))

    false_retrains = sum(1 for v, _k in run.retrains if not changed(at[v] - delay, v - delay))
    # a promotion is false when nothing the metric sees changed since the replaced champion's data (through the promoted
    # model's data; a reinstated earlier champion: through the window before it serves again)
    back = set(run.reinstated)
    false_promotions = sum(1 for p, k in run.promotions if not changed(at[p - 1] - delay, (p if (p, k) in back else k) - 1 - delay))
    delay_w = None
    if w.change_at is not None:
        delay_w = next((p - w.change_at for p, _k in run.promotions if p > w.change_at), None)
    trained = [first, *(k for _v, k in run.retrains)]
    on_broken = sum(1 for k in trained if w.broken_from is not None and max(m.train_windows[k]) >= w.broken_from)
    alerts = sorted(x for x in m.broken if x >= first)
    return {
        "retrains": len(run.retrains), "promotions": len(run.promotions), "false_alarms": false_retrains,
        "false_promotions": false_promotions, "detection_delay_windows": delay_w, "detected": delay_w is not None,
        "live_metric": float(np.mean(live)), "total_cost": schedule_cost(m.loss, run.serving, first, cost),
        "blocked_retrains": len(run.blocked), "alerts": len(alerts), "first_alert_window": alerts[0] if alerts else None,
        "trained_on_broken": on_broken, "retired": len(run.retired), "reinstated": len(run.reinstated),
    }  # fmt: skip


def runs_of(m: Matrix, policy: Policy, cp: ChallengerPolicy) -> list[lp.Run]:
    return [lp.default(m, policy, cp), lp.never(m), lp.schedule(m, 1), *(lp.schedule(m, s) for s in SCHEDULES),
            lp.cara(m, cp.cost), lp.oracle_run(m, cp.cost)]  # fmt: skip


def aggregate(rows: list[dict]) -> dict:
    """Means over seeds; the detection delay of the worst seed (null when one never detected)."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if key == "detection_delay_windows":
            out[key] = None if any(v is None for v in values) else max(values)
        elif key == "first_alert_window":
            out[key] = min((v for v in values if v is not None), default=None)
        elif key == "detected":
            out["detected_seeds"] = sum(values)
        else:
            out[key] = round(float(np.mean(values)), 5)
    return out


def goals(world: World, row: dict, ref: dict, cost: float, monitored: int) -> dict:
    """The issue's goals for one policy's row (None where a goal does not apply to the world)."""
    higher = world.metric == "roc_auc"
    allowed = ref["oracle_cost"] + max(COST_SLACK * abs(ref["oracle_cost"]), COST_SLACK * cost * monitored)
    live_ok = (
        row["live_metric"] >= 0.99 * ref["best_schedule_metric"] if higher else row["live_metric"] <= ref["best_schedule_metric"] / 0.99
    )
    g = {
        "cost_within_10pct_of_oracle": row["total_cost"] <= allowed,
        "cost_at_most_cara": row["total_cost"] <= ref["cara_cost"] + 1e-12,
        "live_at_least_99pct_of_best_schedule": bool(live_ok),
        "at_most_half_best_schedule_retrains": row["retrains"] <= ref["best_schedule_retrains"] / 2,
        "no_promotion": None, "detected_within_2_windows": None, "broken_alert_and_nothing_trained": None,
    }  # fmt: skip
    if world.kind in ("no_drift", "covariate_shift"):
        g["no_promotion"] = row["promotions"] == 0
    if world.kind == "abrupt_concept":
        g["detected_within_2_windows"] = row["detection_delay_windows"] is not None and row["detection_delay_windows"] <= 2
    if world.kind == "sparse_late_labels":  # labels arrive late: within 2 windows of their arrival
        d = row["detection_delay_windows"]
        g["detected_within_2_windows"] = d is not None and d <= 2 + world.label_delay
    if world.kind == "broken_feature":
        g["broken_alert_and_nothing_trained"] = row["first_alert_window"] == world.broken_from and row["trained_on_broken"] == 0
    g["cost_allowed"] = round(allowed, 5)
    return g


def run_world(world: World, seeds: list[int], policy: Policy, cp: ChallengerPolicy, train_windows: int = TRAIN_WINDOWS) -> list[dict]:
    per_policy: dict[str, list[dict]] = {}
    monitored = 0
    for seed in seeds:
        m = build_matrix(world, seed, train_windows)
        monitored = world.windows - m.first
        for run in runs_of(m, policy, cp):
            per_policy.setdefault(run.policy, []).append(measure(m, run, cp.cost))
    agg = {name: aggregate(rows) for name, rows in per_policy.items()}
    best = min((f"schedule_{s}" for s in SCHEDULES), key=lambda n: (agg[n]["total_cost"], agg[n]["retrains"]))
    ref = {
        "best_schedule": best, "best_schedule_metric": agg[best]["live_metric"], "best_schedule_retrains": agg[best]["retrains"],
        "never_metric": agg["never"]["live_metric"], "oracle_metric": agg["oracle"]["live_metric"],
        "oracle_cost": agg["oracle"]["total_cost"], "cara_cost": agg["cara"]["total_cost"],
    }  # fmt: skip
    out = []
    for name, row in agg.items():
        out.append({
            "world": world.name, "task": world.task, "policy": name, "higher_is_better": world.metric == "roc_auc",
            "metric": world.metric, **row, **ref, "cost": cp.cost, "seeds": len(seeds), "windows": world.windows,
            "monitored_windows": monitored, "rows_per_window": world.rows, "train_windows": train_windows, "truth": world.truth,
            "change_at": world.change_at, "goals": goals(world, row, ref, cp.cost, monitored),
        })  # fmt: skip
    return out


SHOWN = ("default", "never", "every_window", "cara", "oracle")
GOALS = {"cost_within_10pct_of_oracle": "~orac", "cost_at_most_cara": "<=car", "live_at_least_99pct_of_best_schedule": "live",
         "at_most_half_best_schedule_retrains": "retr", "no_promotion": "0prom", "detected_within_2_windows": "delay",
         "broken_alert_and_nothing_trained": "brokn"}  # fmt: skip


def table(rows: list[dict]) -> str:
    """Per world: the shipped default, the references and the best schedule (≤ 120 columns)."""
    head = (f"{'world':<20}{'policy':<13}{'retrains':>9}{'promoted':>9}{'false':>6}{'blocked':>8}{'delay':>6}{'live':>8}"
            f"{'total cost':>12}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for row in rows:
        if row["policy"] not in SHOWN and row["policy"] != row["best_schedule"]:
            continue
        delay = "-" if row["detection_delay_windows"] is None else f"{row['detection_delay_windows']:g}"
        lines.append(
            f"{row['world']:<20}{row['policy']:<13}{row['retrains']:>9.3g}{row['promotions']:>9.3g}{row['false_alarms']:>6.3g}"
            f"{row['blocked_retrains']:>8.3g}{delay:>6}{row['live_metric']:>8.4f}{row['total_cost']:>12.4f}"
        )
    return "\n".join(lines)


def goals_table(rows: list[dict]) -> str:
    """The default's goals per world, with the numbers they compare."""
    head = (f"{'world':<20}{'cost':>8}{'allowed':>9}{'cara':>8}{'live':>8}{'best sch':>9}{'(retr)':>7}{'retr':>6}  "
            + " ".join(f"{v:>5}" for v in GOALS.values()))  # fmt: skip
    lines = [head, "-" * len(head)]
    for row in rows:
        if row["policy"] != "default":
            continue
        g = row["goals"]
        marks = " ".join(f"{'-' if g[k] is None else ('ok' if g[k] else 'MISS'):>5}" for k in GOALS)
        lines.append(
            f"{row['world']:<20}{row['total_cost']:>8.4f}{g['cost_allowed']:>9.4f}{row['cara_cost']:>8.4f}{row['live_metric']:>8.4f}"
            f"{row['best_schedule_metric']:>9.4f}{row['best_schedule_retrains']:>7.3g}{row['retrains']:>6.3g}  {marks}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"quick size {QUICK} (default: full {FULL})")
    parser.add_argument("--out", help="write the JSON list here")
    parser.add_argument("--worlds", nargs="+", help="only these worlds (names as in the table)")
    parser.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    parser.add_argument("--windows", type=int)
    parser.add_argument("--rows", type=int)
    parser.add_argument("--train-windows", type=int, default=TRAIN_WINDOWS, help="windows each model trains on (default %(default)s)")
    parser.add_argument("--policy-args", default="{}", help="JSON overrides of the default Policy, e.g. '{\"hysteresis\": 2}'")
    parser.add_argument("--challenger-args", default="{}", help="JSON overrides of ChallengerPolicy, e.g. '{\"cost\": 0.005}'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    size.update({k: getattr(args, k) for k in size if getattr(args, k) is not None})
    policy = dataclasses.replace(lp.default_policy(), **json.loads(args.policy_args))
    cp = dataclasses.replace(ChallengerPolicy(), **json.loads(args.challenger_args))
    worlds = [w for w in all_worlds(windows=size["windows"], rows=size["rows"]) if not args.worlds or w.name in args.worlds]
    say(f"loop worlds: {len(worlds)} worlds, {size['seeds']} seed(s), {size['windows']} windows of {size['rows']} rows; "
        f"models on {args.train_windows} window(s); cost {cp.cost}; policy {policy}; challenger {cp}")  # fmt: skip
    started = time.monotonic()
    rows: list[dict] = []
    for world in worlds:
        t0 = time.monotonic()
        rows += run_world(world, list(range(size["seeds"])), policy, cp, args.train_windows)
        say(f"  {world.name}: {time.monotonic() - t0:.1f} s ({world.truth})")
    say("\n" + table(rows) + "\n\ngoals of the default (ok / MISS / - where the goal does not apply):\n" + goals_table(rows))
    say(f"\nwall time {time.monotonic() - started:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
        say(f"written: {args.out} (a JSON list, one object per world and policy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
