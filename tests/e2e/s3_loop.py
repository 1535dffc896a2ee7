"""The whole closed loop once on the s3 profile against SeaweedFS, shared (session fixture ``s3_loop_run`` in
tests/fixtures/s3.py) by tests/e2e/test_s3_loop.py and tests/e2e/test_no_secret_leaks.py.

The small "rides" dataset (tests/aiflow/monitoring/world.py: other column names, Asia/Tokyo): four reference weeks
landed on S3 -> ``rides_lifecycle_job`` (data plane, training through Pipes, gates, registry, champion) -> a real
``aiflow serve`` subprocess reading its champion from S3 (bearer token; HTTP scoring of a shifted week and one more
day, then ``/v1/feedback``) -> ``rides_monitoring_job`` (one window: drift with Evidently's HTML report, live performance,
the policy's decision recorded on S3) -> the retrain sensor's tick -> the retrain run it requests (a second version registered on S3;
when it passes the gates, the running server hot-reloads it from S3). Server-side encryption is on (``AIFLOW_S3_SSE=AES256``), the
webhook is a real receiver on 127.0.0.1 whose URL carries a secret, AIFLOW_HOME is an empty folder that must stay
empty, and the Dagster instance lives on disk so its event log and compute logs can be scanned.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.aiflow.monitoring.world import SERVED, START, rides, rides_spec, weather

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DAYS = 28
ROWS_PER_DAY = 60
POLICY = {"retrain": {"signals": ["drift"], "hysteresis": 1, "min_rows": 100, "cooldown_days": 0}}
GATES = {"absolute": {}, "must_beat_baseline": False, "latency_budget_ms_per_1k": 5000.0, "champion_tolerance": 1.0}
FAST = {"families": ["sklearn"], "sklearn_max_iter": 30, "baseline_max_rows": 2000}


@dataclass
class LoopRun:
    """What the scenario left behind, for the assertions of both modules."""

    s3: object  # tests.fixtures.s3.S3Server
    prefix: str  # s3://bucket/<uuid>
    home: Path  # AIFLOW_HOME: must stay without lake files
    dagster_home: Path
    token: str
    webhook_url: str
    env: dict[str, str]
    tmp: Path
    webhook_events: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase, for the report
    run_ids: list[str] = field(default_factory=list)
    results: dict = field(default_factory=dict)
    server_log: str = ""
    served: int = 0
    labelled: int = 0
    champion_seen: int | None = None
    champion_after: int | None = None  # the champion after the retrain run
    champion_seen_after: int | None = None  # what the running server then served
    ticks: list = field(default_factory=list)

    @property
    def key_prefix(self) -> str:
        return self.prefix.removeprefix(f"s3://{self.s3.bucket}/")

    def keys(self, under: str = "") -> list[str]:
        client, out = self.s3.client(), []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.s3.bucket, Prefix=f"{self.key_prefix}/{under}"):
            out += [o["Key"].removeprefix(self.key_prefix + "/") for o in page.get("Contents", [])]
        return out


def _records(first: dt.date, days: int, seed: int, *, shifted: bool) -> tuple[list[dict], list[float]]:
    """Raw records as an application sends them (the side table's temperature joined) and their true labels."""
    raw = pl.concat([rides(first + dt.timedelta(days=d), ROWS_PER_DAY, seed=seed + d, shifted=shifted) for d in range(days)])
    temps = weather(first - dt.timedelta(days=1), days + 1, shifted=shifted).rename({"ts": "wts", "temp": "rides_weather_temp"})
    joined = raw.sort("ts").join_asof(temps.sort("wts"), left_on="ts", right_on="wts", by="origin", check_sortedness=False).drop("wts")
    sent = joined.drop("delay", "trip_id").with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), pl.col("booked").cast(pl.String))
    return sent.to_dicts(), [float(d > 15) for d in joined["delay"].to_list()]


class Client:
    def __init__(self, base: str, token: str):
        self.base, self.headers = base, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: object | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, headers=self.headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait_ready(self, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"aiflow serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.base + "/v2/health/ready", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise AssertionError(f"aiflow serve was not ready in {timeout:.0f}s:\n{log.read_text()[-3000:]}")

    def wait_champion(self, dataset: str, version: int, process: subprocess.Popen, log: Path, timeout: float = 30) -> int:
        """Wait until the server serves ``version`` as the dataset's champion (it polls the registry)."""
        deadline, seen = time.monotonic() + timeout, None
        while time.monotonic() < deadline and process.poll() is None:
            models = self.call("GET", "/v1/models")["models"]
            seen = next((m.get("version") for m in models if m.get("name") == dataset and m.get("variant") == "champion"), None)
            if seen == version:
                return seen
            time.sleep(0.2)
        raise AssertionError(f"aiflow serve shows champion {seen}, not {version}, after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps the event names it gets."""

    def __init__(self) -> None:
        self.events: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["event"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_rows(lake, table: str, rows: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lake.exists(table) and lake.scan(table).select(pl.len()).collect().item() >= rows:
            return
        time.sleep(0.2)
    raise AssertionError(f"{lake.uri(table)} did not reach {rows} rows in {timeout:.0f}s")


def run_loop(s3, tmp: Path) -> LoopRun:
    """The whole loop once, on the s3 profile with SSE-S3; returns what the tests look at."""
    from dagster import DagsterInstance, build_sensor_context

    from aiflow.models.registry import Registry
    from aiflow.serving.inference_log import log_table
    from aiflow.storage.settings import Settings
    from definitions import build_definitions
    from resources.profiles import resources_for

    prefix = s3.uri(uuid.uuid4().hex)
    home, dagster_home = tmp / "aiflow_home", tmp / "dagster_home"
    home.mkdir()
    dagster_home.mkdir()
    token = "tok-" + secrets.token_urlsafe(24)
    receiver = Receiver()
    webhook = f"http://127.0.0.1:{receiver.server.server_port}/hooks/" + secrets.token_urlsafe(18)
    env = {
        "AIFLOW_PROFILE": "s3",
        "AIFLOW_HOME": str(home),
        "AIFLOW_LAKE_URI": f"{prefix}/lake",
        "AIFLOW_LANDING_URI": prefix,
        "AIFLOW_ARTIFACT_URI": f"{prefix}/artifacts",
        "AIFLOW_S3_SSE": "AES256",
        "AIFLOW_WEBHOOK_URL": webhook,
        **s3.storage_options,
    }
    run = LoopRun(s3, prefix, home, dagster_home, token, webhook, env, tmp)
    spec = rides_spec(**POLICY).model_dump(mode="json", exclude_none=True)
    spec["gates"] = GATES  # a tiny noisy machine: the loop is under test here, not the gates
    spec_path = tmp / "rides.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    with pytest.MonkeyPatch.context() as mp, _closing(receiver):
        for var in [v for v in os.environ if v.startswith(("AIFLOW_", "AWS_"))]:
            mp.delenv(var)
        for var, value in env.items():
            mp.setenv(var, value)
        mp.setenv("DAGSTER_HOME", str(dagster_home))
        settings = Settings.from_env()
        lake = settings.lake()

        # the landing files, uploaded to S3 (four reference weeks of rides and their weather)
        client = s3.client()
        for d in range(REFERENCE_DAYS):
            day = START + dt.timedelta(days=d)
            body = rides(day, ROWS_PER_DAY, seed=d).write_csv().encode()
            client.put_object(Bucket=s3.bucket, Key=f"{run.key_prefix}/landing/rides/{day}.csv", Body=body)
        body = weather(START - dt.timedelta(days=1), REFERENCE_DAYS + 1).write_csv().encode()
        client.put_object(Bucket=s3.bucket, Key=f"{run.key_prefix}/landing/rides_weather/reference.csv", Body=body)

        defs = build_definitions(spec_path, resources=resources_for("s3"))
        instance = DagsterInstance.local_temp(str(dagster_home))

        def job(name: str, run_config: dict | None = None, tags: dict | None = None, partition: str | None = None) -> None:
            t0 = time.monotonic()
            result = defs.resolve_job_def(name).execute_in_process(
                instance=instance, run_config=run_config, tags=tags, raise_on_error=False, partition_key=partition
            )
            run.run_ids.append(result.run_id)
            run.results.setdefault(name, []).append(result)
            run.seconds[name] = time.monotonic() - t0
            assert result.success, f"{name} failed: {[e.message for e in result.all_events if e.is_failure]}"

        # the real server, started before anything is trained: its storage comes from the same environment (nothing on
        # the command line), and it picks the champion up from the S3 registry when one is promoted
        port = _free_port()
        log = tmp / "serve.log"
        server_env = {**os.environ, "AIFLOW_SERVE_TOKEN": token, "AIFLOW_DATASETS": str(spec_path)}
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "aiflow.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--reload-interval", "0.5", "--log-interval", "0.2"],
                env=server_env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            # 1. lifecycle: ingest, silver, features, train (Pipes subprocess), gates, registry, champion, batch predictions
            job("rides_lifecycle_job", {"ops": {"rides__candidate": {"config": FAST}}})
            champion = Registry(lake).alias("rides", "champion")
            assert champion is not None, "the lifecycle run promoted no champion"

            # 2. an application scores a shifted week and the first day of the next (so the week is a complete window)
            # over HTTP with the bearer token, then sends the true labels to /v1/feedback
            t0 = time.monotonic()
            api = Client(f"http://127.0.0.1:{port}", token)
            api.wait_ready(server, log)
            run.champion_seen = api.wait_champion("rides", champion, server, log)
            records, labels = _records(SERVED, 8, seed=1000, shifted=True)
            scored = api.call("POST", "/v1/predict", {"dataset": "rides", "records": records})
            ids = [p["request_id"] for p in scored["predictions"]]
            run.served = len(ids)
            answer = api.call(
                "POST",
                "/v1/feedback",
                {"dataset": "rides", "labels": [{"request_id": r, "label": y} for r, y in zip(ids, labels, strict=True)]},
            )
            run.labelled = len(ids)
            assert answer, "empty feedback answer"
            _wait_rows(lake, log_table("rides"), len(ids))  # flushed to S3 (the server keeps running)
            run.seconds["score, feedback"] = time.monotonic() - t0

            # 3. monitoring of the completed window (a partition): drift (Evidently, HTML report), live performance, decision
            job("rides_monitoring_job", {"ops": {"rides__drift": {"config": {"report": True}}}}, partition=SERVED.isoformat())

            # 4. the retrain sensor acts on the decision (recorded on S3)
            sensor = defs.get_sensor_def("rides_retrain_sensor")
            with build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name, resources=defs.resources) as context:
                run.ticks.append(sensor.evaluate_tick(context))

            # 5. the retrain run it requests (train on S3, gate against the champion, register, promote when it passes);
            # a promoted version reaches the running server from the S3 registry
            for request in run.ticks[0].run_requests or []:
                job(request.job_name or "rides_retrain_job", request.run_config, request.tags)
            run.champion_after = Registry(lake).alias("rides", "champion")
            if run.champion_after != champion:
                run.champion_seen_after = api.wait_champion("rides", run.champion_after, server, log)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
            run.server_log = log.read_text(errors="replace")
        run.webhook_events = list(receiver.events)
    return run


@contextlib.contextmanager
def _closing(receiver: Receiver):
    try:
        yield receiver
    finally:
        receiver.close()
