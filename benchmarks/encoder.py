"""Encoder benchmark (issue 11's latency goals): per-call time of raw records → model input arrays, the compiled
fast path (:class:`aiflow.data.encoding.Encoder`, cached on the loaded model) against the Polars path (what
``raw_to_arrays`` was before, and still is for frames and large batches), measured interleaved in the same run.

    .venv/bin/python -m benchmarks.encoder [--rounds 5] [--sizes 1,10,100,256,10000] [--out results.json]

Records are demo-spec flights (19 columns as text, 8 weather side values), with realistic vocabularies (16
carriers, 4,000 tail numbers) and a few unseen and null values; per size the median of ``--rounds`` rounds of
interleaved timings. Figures and the command: benchmarks/README.md, section "Encoder fast path".
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import yaml

from aiflow.data import encoding
from aiflow.data.encoding import Encoder, FeatureState, model_inputs, polars_raw_to_arrays, raw_to_arrays
from aiflow.spec import DatasetSpec, demo_spec_path, parse_spec


def demo() -> tuple[DatasetSpec, FeatureState]:
    spec = parse_spec(yaml.safe_load(demo_spec_path().read_text()), "demo")
    vocab = {"carrier": [f"C{i}" for i in range(16)], "origin": ["EWR", "JFK", "LGA"], "dest": [f"D{i:03d}" for i in range(100)],
             "tailnum": [f"N{i:05d}" for i in range(4000)]}  # fmt: skip
    numeric = [c.removeprefix("num_") for c in model_inputs(spec, FeatureState()).numeric]
    return spec, FeatureState(vocab=vocab, stats={c: (10.0 + i, 3.0 + i) for i, c in enumerate(numeric)}, rows=300_000)


def records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hour = int(rng.integers(5, 23))
        row = {
            "year": "2013", "month": "3", "day": "10", "dep_time": None, "sched_dep_time": f"{hour:02d}{int(rng.integers(60)):02d}",
            "dep_delay": None, "arr_time": None, "sched_arr_time": f"{(hour + 2) % 24:02d}30", "arr_delay": None,
            "carrier": f"C{int(rng.integers(18))}", "flight": str(int(rng.integers(1, 9000))), "tailnum": f"N{int(rng.integers(4200)):05d}",
            "origin": ["EWR", "JFK", "LGA"][i % 3], "dest": f"D{int(rng.integers(110)):03d}", "air_time": None,
            "distance": str(float(rng.uniform(80, 5500)).__round__(1)), "hour": str(hour), "minute": "0",
            "time_hour": f"2013-03-10T{hour:02d}:00:00Z",
        }  # fmt: skip
        row |= {f"weather_{c}": (None if rng.random() < 0.1 else float(rng.normal(20, 10)))
                for c in ["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]}  # fmt: skip
        out.append(row)
    return out


def per_call_ms(fn, batch: list[dict], budget_s: float = 0.4) -> float:
    fn(batch)
    calls, start = 0, time.perf_counter()
    while True:
        fn(batch)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed > budget_s and calls >= 3:
            return elapsed / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="1,10,100,256,10000")
    parser.add_argument("--out")
    args = parser.parse_args()
    spec, state = demo()
    inputs = model_inputs(spec, state)
    encoder = Encoder.compile(spec, state, inputs)
    sizes = [int(s) for s in args.sizes.split(",")]
    ways = {
        "polars path (before)": lambda b: polars_raw_to_arrays(b, state, spec, inputs),
        "Encoder.arrays (cached, after)": encoder.arrays,
        "raw_to_arrays (compiles per call)": lambda b: raw_to_arrays(b, state, spec, inputs),
    }
    results: dict = {}
    for n in sizes:
        batch = records(n)
        fast = encoder.fast_arrays(batch)
        if fast is not None:  # the figures mean something only if both paths give the same arrays
            slow = polars_raw_to_arrays(batch, state, spec, inputs)
            if not (np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])):
                raise SystemExit(f"fast path and Polars path differ at n={n}")
        rounds: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(args.rounds):
            for way, fn in ways.items():
                rounds[way].append(per_call_ms(fn, batch))
        medians = {w: float(np.median(v)) for w, v in rounds.items()}
        results[n] = {"fast_path_taken": fast is not None, "median_ms_per_call": medians,
                      "speedup": medians["polars path (before)"] / medians["Encoder.arrays (cached, after)"]}  # fmt: skip
        print(f"n={n:>6}  fast={fast is not None!s:5}  " + "  ".join(f"{w}: {m:8.3f} ms" for w, m in medians.items())
              + f"  before/after = {results[n]['speedup']:.1f}x", flush=True)  # fmt: skip
    # the fast path forced beyond its threshold: where its per-record cost crosses the Polars path's
    limit = encoding.FAST_PATH_MAX_RECORDS
    encoding.FAST_PATH_MAX_RECORDS = 10**9
    try:
        for n in [1000]:
            batch = records(n)
            forced, polars = per_call_ms(encoder.arrays, batch), per_call_ms(ways["polars path (before)"], batch)
            results[f"forced_fast_{n}"] = {"fast_ms": forced, "polars_ms": polars}
            print(f"n={n:>6}  fast path forced: {forced:.2f} ms, Polars path: {polars:.2f} ms  (threshold stays {limit})", flush=True)
    finally:
        encoding.FAST_PATH_MAX_RECORDS = limit
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
