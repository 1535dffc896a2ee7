"""Does a monitoring run cost the same for window 40 as for window 1? (issue 20: cost flat as history grows).

The engine calls of one partition run of ``<dataset>_monitoring_job`` (drift of the window, its live performance, the
policy's decision) timed in-process as the history grows: a real world (``tests/aiflow/monitoring/world.py``: the
"rides" dataset, a trained scikit-learn champion with its reference profile), then served weeks appended one at a time
to the inference log and the labels as the server writes them (``--rows-per-day`` records a day; every fourth week
shifted), and after each, the window that just completed is monitored and timed (``--repeat`` times, median). The
monitoring sensor's own read (``window_status``, every tick) is timed too. Goal: window 40 / window 1 <= 1.5.

Run: ``python -m benchmarks.monitoring_windows [--windows 41] [--rows-per-day 2000] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=41, help="Served weeks (the last one completes the one before).")
    p.add_argument("--rows-per-day", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", help="Write the per-window timings as JSON here.")
    args = p.parse_args(argv)

    from aiflow.monitoring.monitor import References
    from aiflow.monitoring.partition import decide_window, window_drift, window_performance, window_status
    from tests.aiflow.monitoring.world import SERVED, build_world, rides_spec, serve_week

    policy = {"retrain": {"signals": ["estimated", "realized"], "min_rows": 300}}
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp), rides_spec("classification", **policy))
        rows = []
        for week in range(args.windows):
            serve_week(world, week, shifted=week % 4 == 3, rows_per_day=args.rows_per_day)
            if week == 0:
                continue
            window = SERVED + dt.timedelta(days=7 * (week - 1))
            runs, sensor = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                status = window_status(world.lake, world.spec)
                sensor.append(time.perf_counter() - t0)
                refs = References(world.lake, world.spec.name, str(world.artifacts))  # a run is a new process: nothing cached
                from aiflow.monitoring import windows as windows_module

                windows_module._scored_log.cache_clear()
                t0 = time.perf_counter()
                window_drift(world.lake, world.spec, refs, window)
                window_performance(world.lake, world.spec, refs, window)
                decide_window(world.lake, world.spec, window, running=False, evaluator="benchmark")
                runs.append(time.perf_counter() - t0)
            assert window in set(status.filter("complete")["window_start"])
            log_rows = int(status["rows"].sum())
            rows.append({"window": week, "window_start": window.isoformat(), "log_rows": log_rows,
                         "run_s": statistics.median(runs), "sensor_read_s": statistics.median(sensor)})  # fmt: skip
            print(f"window {week:>2} ({window}): run {rows[-1]['run_s']:.2f} s, sensor read {rows[-1]['sensor_read_s']:.3f} s, "
                  f"log {log_rows:,} rows", flush=True)  # fmt: skip
    first, second, last = rows[0], rows[1], rows[-1]
    result = {
        "benchmark": "monitoring_windows", "date": dt.date.today().isoformat(), "rows_per_day": args.rows_per_day,
        "windows": rows, "run_ratio_last_to_first": last["run_s"] / first["run_s"],
        # window 1 also calibrates the serving version's thresholds (once per version): window 2 is the steady state
        "run_ratio_last_to_second": last["run_s"] / second["run_s"],
        "sensor_ratio_last_to_first": last["sensor_read_s"] / first["sensor_read_s"], "goal_run_ratio": 1.5,
    }  # fmt: skip
    print(
        f"window {last['window']} / window {first['window']}: run {result['run_ratio_last_to_first']:.2f}x (goal <= 1.5; window 1 "
        f"includes the calibration), / window 2: {result['run_ratio_last_to_second']:.2f}x; sensor read "
        f"{result['sensor_ratio_last_to_first']:.2f}x"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
