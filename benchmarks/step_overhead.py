"""Where a small dataset's job time goes: process start per step, code-location imports, the executor.

Runs ``<dataset>_data_plane_job`` through the real CLI (``dagster job execute``) on a small demo
landing zone (fresh lake and Dagster home per run), once per executor setting, interleaved over
``--repeat`` rounds so machine noise hits every setting alike:

* ``spawn``: the multiprocess executor with Python's default start method here (each step a new
  interpreter that imports the code location: dagster, polars, deltalake, torch, scikit-learn...);
* ``forkserver``: the multiprocess executor forking every step from a server that preloaded the
  code location once (``start_method: forkserver``), which the local profile now uses by default;
* ``in_process``: every step in the run's own process (the floor: no per-step start at all).

It also times ``import definitions`` in a fresh interpreter (what every spawned step pays).
Nothing here asserts on time; results are ratios against ``in_process`` measured in the same run.

    .venv/bin/python -m benchmarks.step_overhead --days 10 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent



def import_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import definitions"], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def run_job(landing: Path, setting: str, job: str, work: Path) -> dict:
    home = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(landing, home / "landing")
    dagster_home = home / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.local.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "AIFLOW_HOME": str(home), "DAGSTER_HOME": str(dagster_home), "AIFLOW_PROFILE": "local", "AIFLOW_EXECUTOR": setting}
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "definitions", "-d", str(REPO), "-j", job],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{setting} run failed:\n{proc.stderr[-3000:]}")
    steps = proc.stderr.count("STEP_START")
    shutil.rmtree(home, ignore_errors=True)
    return {"setting": setting, "wall_s": wall, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10, help="Demo days in the landing zone.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--job", default="flights_data_plane_job")
    parser.add_argument("--settings", default="spawn,forkserver,in_process")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args(argv)

    import datetime as dt

    from aiflow.data.demo import write_landing

    settings = args.settings.split(",")
    work = Path(tempfile.mkdtemp(prefix="aiflow-steps-"))
    try:
        landing = work / "landing"
        write_landing(landing, days=args.days, start=dt.date(2013, 1, 1))
        results: list[dict] = []
        imports = []
        for round_ in range(args.repeat):
            imports.append(import_seconds())
            for setting in settings:
                r = run_job(landing, setting, args.job, work)
                r["round"] = round_
                results.append(r)
                print(f"round {round_} {setting:>10}: {r['wall_s']:6.1f} s, {r['steps']} steps", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    median = {s: statistics.median(r["wall_s"] for r in results if r["setting"] == s) for s in settings}
    steps = max(r["steps"] for r in results)
    print(f"\n`import definitions` in a fresh interpreter: median {statistics.median(imports):.1f} s over {len(imports)}")
    print(f"{args.job} on {args.days} demo days, {steps} steps, median of {args.repeat}:")
    base = median.get("in_process")
    for s in settings:
        ratio = f"  {median[s] / base:4.2f}x in_process" if base else ""
        print(f"  {s:>10}: {median[s]:6.1f} s{ratio}")
    if args.out:
        args.out.write_text(json.dumps({"imports_s": imports, "runs": results, "median_s": median}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
