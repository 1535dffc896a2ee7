"""Worlds whose truth is known, through the real loop (issue 21): ``aiflow replay`` under a real ``dagster-daemon``.

:mod:`benchmarks.loop_worlds` replays the shipped policy's *functions* on one score matrix per world. This module
checks the same verdicts where they are made in production: a world (:mod:`benchmarks.worlds`, one seed) is written
as a dataset a user would bring (daily CSV files, a spec with the shipped defaults: families, gates, signals,
cooldown, challenger on evidence), then ``aiflow replay`` lands it week by week, serves it over HTTP, sends the labels
back and lets the daemon ingest, score, monitor, decide, retrain, shadow, promote or retire. What it measured is read
back from the lake (the replay's own summary table) and set beside the engine-level run of the same world and seed.

The real loop trains its own families on its own split, so its live metric is not the engine level's logistic
regression's; the verdicts are what must agree: no promotion where nothing changed, a change detected within two
windows where the concept flips.

Run: ``python -m benchmarks.loop_worlds_replay --out FILE`` (no_drift and abrupt_concept, seed 0, 24 weekly windows of
1,000 rows; ~5 min each here). A JSON list, one object per world with ``real`` and ``engine`` figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from aiflow.monitoring.challenger import ChallengerPolicy
from benchmarks import loop_policies as lp
from benchmarks.loop_matrix import TRAIN_WINDOWS, build_matrix
from benchmarks.loop_worlds import measure
from benchmarks.worlds import CLASSIFICATION, DAY0, FEATURES, World, make_world, world_spec

ROOT = Path(__file__).resolve().parents[1]


def write_world(world: World, seed: int, root: Path) -> tuple[Path, Path]:
    """The world's stream as daily CSV files (a window's rows spread over its 7 days) and its spec. Returns (spec, data)."""
    if world.label_fraction < 1:  # the replay takes a record's label from its file; a null target is quarantined
        raise SystemExit(f"{world.name}: worlds with sparse labels cannot be replayed through the real loop yet (a row with a "
                         "null target is quarantined, not served unlabelled)")  # fmt: skip
    stream = world.generate(seed)
    spec = world_spec(world)
    folder = root / "data" / spec["name"]
    folder.mkdir(parents=True)
    n = world.rows
    row_id = 0
    for w in range(world.windows):
        day_of_row = np.arange(n) % 7
        for d in range(7):
            rows = np.flatnonzero(day_of_row == d)
            day = DAY0 + dt.timedelta(days=7 * w + d)
            when = [dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + dt.timedelta(seconds=int(s)) for s in np.linspace(0, 86_000, len(rows))]
            labels = stream.y[w, rows].astype(float)
            y = [float(v) if stream.labelled[w, r] else None for v, r in zip(labels, rows, strict=True)]
            pl.DataFrame({
                "row_id": np.arange(row_id, row_id + len(rows)), "ts": when, "y": y,
                **{f"x{j}": stream.X[w, rows, j] for j in range(FEATURES)},
            }).write_csv(folder / f"{day}.csv")  # fmt: skip
            row_id += len(rows)
    path = root / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, root / "data"


def replay(world: World, seed: int, root: Path, tick: int) -> tuple[pl.DataFrame, str, float]:
    """Run ``aiflow replay`` on the world; its summary table (one row per monitored window), its output and wall time."""
    spec_path, data = write_world(world, seed, root)
    home = root / "home"
    delay_days = 7 * max(world.label_delay, 1)  # labels of a week come back with the next landing at the earliest
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFLOW_", "DAGSTER_"))}
    cmd = [sys.executable, "-m", "aiflow.cli.main", "replay", "--spec", str(spec_path), "--data", str(data), "--home", str(home),
           "--first-train", f"{7 * TRAIN_WINDOWS}d", "--label-delay", f"{delay_days}d", "--tick", str(tick)]  # fmt: skip
    t0 = time.monotonic()
    lines = []
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:  # the replay's progress lines, as they come
            lines.append(line)
            if line.startswith("["):
                print(f"  {line.rstrip()}", flush=True)
    wall = time.monotonic() - t0
    out = "".join(lines)
    if process.returncode != 0:
        raise SystemExit(f"aiflow replay failed on {world.name} (exit {process.returncode}):\n{out[-4000:]}")
    from aiflow.cli.replay_report import summary
    from aiflow.spec import load_spec
    from aiflow.storage.lake import Lake

    table = summary(Lake(str(home / "lake")), load_spec(spec_path))
    return table, out, wall


def real_figures(world: World, table: pl.DataFrame) -> dict:
    """Retrains, promotions, detection delay and live metric of the real loop, from its summary table."""
    metric = world.metric
    windows = [(d - DAY0).days // 7 for d in table["window_start"].to_list()]
    versions = table["version"].to_list()
    switches = [w for i, w in enumerate(windows) if i and versions[i] != versions[i - 1]]
    delay = None
    if world.change_at is not None:
        delay = next((w - world.change_at for w in switches if w > world.change_at), None)
    live = table[metric].drop_nulls()
    challengers = table.filter(pl.col("challenger_action").is_not_null()) if "challenger_action" in table.columns else table.head(0)
    return {
        "windows": len(windows), "first_window": min(windows) if windows else None,
        "retrains": int((table["decision"] == "retrain").sum()), "promotions": len(switches), "promoted_at": switches,
        "detection_delay_windows": delay, "live_metric": round(float(live.mean()), 5) if live.len() else None,
        "challenger_verdicts": [f"{w}: v{v} {a}" for w, v, a in zip(
            [(d - DAY0).days // 7 for d in challengers["window_start"].to_list()], challengers["challenger_version"].to_list(),
            challengers["challenger_action"].to_list(), strict=True)],
        "versions": versions,
    }  # fmt: skip


def engine_figures(world: World, seed: int) -> dict:
    """The same world and seed at engine level: the shipped policy's functions, and the references."""
    m = build_matrix(world, seed)
    cp = ChallengerPolicy()
    runs = {run.policy: run for run in (lp.default(m), lp.never(m), lp.oracle_run(m, cp.cost))}
    out = {name: measure(m, run, cp.cost) for name, run in runs.items()}
    out["default"]["promoted_at"] = [w for w, _k in runs["default"].promotions]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=["no_drift", "abrupt_concept"], help="world kinds (default: %(default)s)")
    parser.add_argument("--regression", action="store_true", help="the regression variants of the worlds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--tick", type=int, default=1, help="seconds between the replay daemon's sensor ticks")
    parser.add_argument("--keep", help="keep the worlds' homes under this folder (default: a temporary folder)")
    parser.add_argument("--out", help="write the JSON list here")
    args = parser.parse_args(argv)
    task = "regression" if args.regression else CLASSIFICATION
    rows = []
    with tempfile.TemporaryDirectory(prefix="worlds-") as scratch:
        base = Path(args.keep or scratch)
        for kind in args.worlds:
            world = make_world(kind, task, windows=args.windows, rows=args.rows)
            print(f"{world.name} (seed {args.seed}): {world.truth}; aiflow replay under a real dagster-daemon ...", flush=True)
            table, out, wall = replay(world, args.seed, base / world.name, args.tick)
            real, engine = real_figures(world, table), engine_figures(world, args.seed)
            rows.append({"world": world.name, "seed": args.seed, "metric": world.metric, "change_at": world.change_at,
                         "truth": world.truth, "wall_s": round(wall), "real": real, "engine": engine})  # fmt: skip
            print("\n".join(line for line in out.splitlines() if line.startswith("window ") or line[:2] == "20"), flush=True)
            d = engine["default"]
            print(f"  real loop: {real['retrains']} retrains, {real['promotions']} promotions at windows {real['promoted_at']}, "
                  f"delay {real['detection_delay_windows']}, live {world.metric} {real['live_metric']} ({wall:.0f} s)\n"
                  f"  engine level: {d['retrains']} retrains, {d['promotions']} promotions at windows {d['promoted_at']}, delay "
                  f"{d['detection_delay_windows']}, live {d['live_metric']:.4f} (never {engine['never']['live_metric']:.4f}, "
                  f"oracle {engine['oracle']['live_metric']:.4f})", flush=True)  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, default=str))
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
