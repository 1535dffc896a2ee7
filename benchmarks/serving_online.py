"""Online-serving benchmark (issue 11): ``aiflow serve`` with auth, metrics and the inference log on, against floors
measured in the same run. An open-loop, fixed-rate generator (asyncio + httpx): request *i* is due at ``t0 + i / rate``
and its latency is counted from when it was due, so a slow server cannot hide its tail by slowing the generator
(coordinated omission); the report shows how far sends lagged behind schedule, i.e. whether the generator held the rate.

    .venv/bin/python -m benchmarks.serving_online [--seconds 8] [--rates 200,400,600,800] [--out results.json]

Figures and the command: benchmarks/README.md, section "Online serving".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from tests.aiflow.serving.conftest import TOKEN, Home, Server, free_port, make_home, record, start_server, tiny_spec, wait_ready


async def open_loop(url: str, rate: float, seconds: float, body: dict | list[dict], headers: dict) -> dict:
    """Fixed-rate requests for ``seconds``; latencies from each request's due time (``body``: one, or a list sent in turn).

    The client is aiohttp, each body encoded once beforehand: httpx's pool spent the generator's CPU on its own
    bookkeeping once thousands of requests waited (at 1,000 requests/s it stopped sending while both servers idled).
    """
    import aiohttp

    bodies = [json.dumps(b).encode() for b in (body if isinstance(body, list) else [body])]
    headers = {**headers, "Content-Type": "application/json"}
    n = int(rate * seconds)
    latencies, failures, lags = [], 0, []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as client:
        t0 = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            nonlocal failures
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            lags.append(time.perf_counter() - due)
            try:
                async with client.post("/v1/predict", data=bodies[i % len(bodies)]) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append(time.perf_counter() - due)
            failures += not ok

        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"rate": rate, "requests": n, "failed": failures, "achieved_rps": round(n / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "send_lag_p99_ms": round(float(np.percentile(np.array(lags) * 1000, 99)), 2)}  # fmt: skip


async def closed_loop(url: str, concurrency: int, seconds: float, body: dict | list[dict], headers: dict) -> dict:
    """``concurrency`` clients sending back to back for ``seconds``: the capacity (requests/s) under the same load."""
    import aiohttp

    bodies = [json.dumps(b).encode() for b in (body if isinstance(body, list) else [body])]
    headers = {**headers, "Content-Type": "application/json"}
    latencies, failures = [], 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as client:
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < end:
                t = time.perf_counter()
                try:
                    async with client.post("/v1/predict", data=bodies[len(latencies) % len(bodies)]) as r:
                        await r.read()
                        failures += r.status != 200
                except (aiohttp.ClientError, TimeoutError):
                    failures += 1
                latencies.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies), "failed": failures, "rps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}  # fmt: skip


def start_floor(home: Home, dataset: str = "trips") -> Server:
    import subprocess

    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIFLOW_")}, "AIFLOW_HOME": str(home.root), "BENCH_DATASET": dataset,
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    log = home.root / "floor.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "benchmarks.serving_floor:app", "--port", str(port), "--log-level", "warning"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    return wait_ready(Server(proc, f"http://127.0.0.1:{port}", log))


def fast_run(coro):
    """Run a generator coroutine on uvloop (installed with uvicorn): the generator's own loop costs less per request."""
    import uvloop

    return uvloop.run(coro)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def model_home(name: str, tmp: Path) -> tuple[Home, str, list[dict]]:
    """(home, dataset, single-record bodies) for ``tiny`` (the tests' model) or a family's demo champion."""
    if name == "tiny":
        home = make_home(tmp / "home", [tiny_spec()])
        return home, "trips", [{"dataset": "trips", "records": [record(i % 9)]} for i in range(9)]
    from benchmarks.serving_models import demo_home, demo_records

    home = demo_home(name)
    return home, "flights", [{"dataset": "flights", "records": [r]} for r in demo_records(home, 500)]


def compare_models(models: list[str], rates: list[float], seconds: float, tmp: Path, serve_args: tuple[str, ...] = ()) -> dict:
    """Per model: the floor and ``aiflow serve`` (token, validation, metrics, inference log) on the same single-record
    bodies, open loop at each rate (floor then server, back to back) and a closed-loop capacity (16 clients)."""
    out: dict = {}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for name in models:
        home, dataset, bodies = model_home(name, tmp / name)
        floor, server = start_floor(home, dataset), start_server(home, "--log-interval", "1", "--reload-interval", "1", *serve_args)
        figures: dict = {"family": name, "home": str(home.root), "serve_args": list(serve_args)}
        try:
            for url, headers in ((floor.url, {}), (server.url, auth)):
                fast_run(closed_loop(url, 4, 1.0, bodies, headers))  # warm-up (first calls, connections)
            for rate in rates:
                for who, url, headers in (("floor", floor.url, {}), ("serve", server.url, auth)):
                    before = load()
                    run = fast_run(open_loop(url, rate, seconds, bodies, headers))
                    figures[f"{who}_{rate:g}rps"] = run | {"load_before": before, "load_after": load()}
                floor_run, serve_run = figures[f"floor_{rate:g}rps"], figures[f"serve_{rate:g}rps"]
                figures[f"p99_ratio_{rate:g}rps"] = round(serve_run["p99_ms"] / max(floor_run["p99_ms"], 1e-9), 2)
            for who, url, headers in (("floor", floor.url, {}), ("serve", server.url, auth)):
                before = load()
                figures[f"{who}_capacity"] = fast_run(closed_loop(url, 16, seconds, bodies, headers)) | {"load_before": before, "load_after": load()}
            figures["capacity_ratio"] = round(figures["serve_capacity"]["rps"] / figures["floor_capacity"]["rps"], 2)
        finally:
            floor.stop(signal.SIGTERM)
            server.stop(signal.SIGTERM)
        out[name] = figures
        print(json.dumps(summary(figures)), flush=True)
    return out


def summary(f: dict) -> dict:
    """One line per model: p50/p99 and failures per rate, capacities."""
    keep = {k: {x: v[x] for x in ("p50_ms", "p99_ms", "failed", "achieved_rps", "send_lag_p99_ms", "load_before") if x in v}
            for k, v in f.items() if isinstance(v, dict) and "rps" in k}  # fmt: skip
    keep |= {k: {x: v[x] for x in ("rps", "failed", "p99_ms", "load_before")} for k, v in f.items() if k.endswith("_capacity")}
    return {"family": f["family"], **keep, **{k: v for k, v in f.items() if "ratio" in k}}


def max_rate(url: str, rates: list[float], seconds: float, body: dict, headers: dict) -> tuple[float, list[dict]]:
    """The highest of ``rates`` held with p99 < 50 ms and no failure (0 if none)."""
    runs, best = [], 0.0
    for rate in rates:
        run = asyncio.run(open_loop(url, rate, seconds, body, headers))
        runs.append(run)
        if run["p99_ms"] < 50 and run["failed"] == 0:
            best = rate
        else:
            break
    return best, runs


def batch100(home: Home, url: str, body: dict, headers: dict, rounds: int, concurrency: int = 4) -> dict:
    """100-record requests: scored rows/s served vs the bare in-process ``predict_records`` on the same records.

    Served two ways: one request at a time (each request waits for the last: client, network and server in
    series, so the figure is bounded by the client's own ~1.4 ms per request) and by ``concurrency`` clients
    back to back (a closed loop on one connection each: the client's work overlaps the server's, as when
    several applications call one server; this is the throughput figure). Interleaved rounds (in process
    with one torch thread, as the server runs; in process with torch's default threads; served one at a
    time; served concurrently), medians, so that all see the same load on a shared machine. The ratios are to
    the faster in-process figure: with two threads torch's OpenMP workers spin against other processes on a
    busy 2-core machine (measured 6-15k rows/s vs 34-57k with one thread), which made the old ratio flatter
    the server.
    """
    import torch

    from aiflow.evaluation.validation import ModelRef, load_model
    from aiflow.models.registry import Registry

    model = load_model(ModelRef.of(Registry(home.lake).get("trips", 1), str(home.artifacts)))
    default_threads = torch.get_num_threads()
    one, default, served, concurrent = [], [], [], []

    def in_process(threads: int) -> float:
        torch.set_num_threads(threads)
        t = time.perf_counter()
        for _ in range(40):
            model.predict_records(body["records"])
        return 40 * 100 / (time.perf_counter() - t)

    with httpx.Client(base_url=url, headers=headers) as c:
        model.predict_records(body["records"])
        c.post("/v1/predict", json=body)
        for _ in range(rounds):
            one.append(in_process(1))
            default.append(in_process(default_threads))
            t = time.perf_counter()
            for _ in range(40):
                if c.post("/v1/predict", json=body).status_code != 200:
                    raise RuntimeError("a 100-record request failed")
            served.append(40 * 100 / (time.perf_counter() - t))
            run = asyncio.run(closed_loop(url, concurrency, 1.0, body, headers))
            if run["failed"]:
                raise RuntimeError(f"{run['failed']} concurrent 100-record requests failed")
            concurrent.append(run["rps"] * 100)
    torch.set_num_threads(default_threads)
    inproc = max(float(np.median(one)), float(np.median(default)))
    return {"served_rows_per_s": round(float(np.median(served))), f"served_{concurrency}_clients_rows_per_s": round(float(np.median(concurrent))),
            "in_process_rows_per_s": round(inproc),
            "in_process_1_thread": round(float(np.median(one))), f"in_process_{default_threads}_threads": round(float(np.median(default))),
            "ratio": round(float(np.median(served)) / inproc, 2), f"ratio_{concurrency}_clients": round(float(np.median(concurrent)) / inproc, 2),
            "rounds": {"served": [round(x) for x in served], f"served_{concurrency}_clients": [round(x) for x in concurrent],
                       "in_process_1_thread": [round(x) for x in one], "in_process_default_threads": [round(x) for x in default]}}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rates", default="50,100,200,300,400,600")
    parser.add_argument("--out", default=None)
    parser.add_argument("--batch100-only", action="store_true", help="Only the 100-record requests (no floor, no rates, no swap).")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds of the 100-record measurement (medians).")
    parser.add_argument("--models", default=None,
                        help="Compare floor and server per model instead (tiny,sklearn,pytorch: the demo's champions, built once by "
                             "benchmarks.serving_models), open loop at --rates and closed-loop capacity.")  # fmt: skip
    parser.add_argument("--serve-args", default="", help="More options for aiflow serve, e.g. '--inline-records 1' (with --models).")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results: dict = {}
    if args.models:
        results["load_avg_before"] = os.getloadavg()
        with tempfile.TemporaryDirectory() as tmp:
            results["models"] = compare_models(args.models.split(","), rates, args.seconds, Path(tmp), tuple(args.serve_args.split()))
        return report(results, args)
    with tempfile.TemporaryDirectory() as tmp:
        home = make_home(Path(tmp) / "home", [tiny_spec()])
        single = {"dataset": "trips", "records": [record(1)]}
        hundred = {"dataset": "trips", "records": [record(i % 9) for i in range(100)]}
        auth = {"Authorization": f"Bearer {TOKEN}"}

        if not args.batch100_only:
            floor = start_floor(home)
            try:
                results["floor_capacity"] = asyncio.run(closed_loop(floor.url, 16, args.seconds, single, {}))
                results["floor_max_rate"], results["floor_runs"] = max_rate(floor.url, rates, args.seconds, single, {})
            finally:
                floor.stop(signal.SIGTERM)

        server = start_server(home, "--log-interval", "1", "--reload-interval", "1")
        try:
            if args.batch100_only:
                results["batch100"] = batch100(home, server.url, hundred, auth, args.rounds)
                return report(results, args)
            results["serve_capacity"] = asyncio.run(closed_loop(server.url, 16, args.seconds, single, auth))
            results["capacity_ratio_to_floor"] = round(results["serve_capacity"]["rps"] / results["floor_capacity"]["rps"], 2)
            results["serve_200rps"] = asyncio.run(open_loop(server.url, 200, args.seconds, single, auth))
            results["serve_max_rate"], results["serve_runs"] = max_rate(server.url, rates, args.seconds, single, auth)
            results["max_rate_ratio_to_floor"] = round(results["serve_max_rate"] / results["floor_max_rate"], 2) if results["floor_max_rate"] else None
            results["batch100"] = batch100(home, server.url, hundred, auth, args.rounds)

            # a hot swap during 200 req/s
            async def swap_run() -> dict:
                async def promote() -> None:
                    # in another process: registering (torch, Delta commits) from this one would starve the generator's loop
                    await asyncio.sleep(args.seconds / 3)
                    code = ("import sys; from pathlib import Path; from tests.aiflow.serving.conftest import Home, register, tiny_spec; "
                            "home = Home(Path(sys.argv[1]), {}, []); register(home.lake, tiny_spec(), home.artifacts, 7)")  # fmt: skip
                    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(home.root), env={**os.environ, "OMP_NUM_THREADS": "1"})
                    if await proc.wait() != 0:
                        raise RuntimeError("registering the new version for the hot swap failed (see the output above)")

                run, _ = await asyncio.gather(open_loop(server.url, 200, args.seconds, single, auth), promote())
                return run

            results["hot_swap_200rps"] = asyncio.run(swap_run())
            with httpx.Client(base_url=server.url, headers=auth) as c:
                results["hot_swap_200rps"]["version_after"] = c.post("/v1/predict", json=single).json()["version"]
            # the inference log's cost: capacity with it on vs off, interleaved (3 rounds) so both see the same load
            quiet = start_server(home, "--no-inference-log", "--reload-interval", "1")
            try:
                on, off = [], []
                for _ in range(3):
                    on.append(asyncio.run(closed_loop(server.url, 16, args.seconds, single, auth))["rps"])
                    off.append(asyncio.run(closed_loop(quiet.url, 16, args.seconds, single, auth))["rps"])
                results["log_on_off_rps"] = {"on": on, "off": off}
                results["log_on_vs_off_capacity_ratio"] = round(float(np.median(on) / np.median(off)), 2)
            finally:
                quiet.stop(signal.SIGTERM)
        finally:
            server.stop(signal.SIGTERM)
    return report(results, args)


def report(results: dict, args: argparse.Namespace) -> int:
    results["load_avg_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
