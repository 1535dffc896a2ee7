"""Fixtures for the online-serving tests: a real aiflow home (lake + artifacts + registry) with tiny models, and a real
``aiflow serve`` process on a free loopback port."""

from __future__ import annotations

import copy
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from aiflow.data.encoding import FeatureState, model_inputs
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.models.bundle import save_bundle
from aiflow.models.network import ModelConfig, TabularModel
from aiflow.models.registry import Registry
from aiflow.spec import DatasetSpec, parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from tests.aiflow.tiny import TINY

TOKEN = "s3cret-token-for-tests"
DAYS = [dt.date(2013, 1, 1) + dt.timedelta(days=d) for d in range(3)]


def tiny_spec(name: str = "trips", problem_type: str = "classification", timezone: str = "America/New_York") -> DatasetSpec:
    data = copy.deepcopy(TINY)
    data["name"], data["timezone"] = name, timezone
    data["landing"]["uri"] = f"landing/{name}"
    if name != "trips":  # lake tables are keyed by table name: another dataset brings its own side table (other column names)
        side = f"{name}_weather"
        data["side_tables"][0] |= {"name": side, "landing": {"uri": f"landing/{side}"}}
        data["joins"][0]["table"] = side
    data["split"] = {"valid_from": DAYS[1].isoformat(), "test_from": DAYS[2].isoformat()}
    if problem_type == "regression":
        data["problem_type"] = "regression"
        data["target"] = {"name": "delay_minutes", "source": "delay", "kind": "identity", "when_null": "quarantine"}
    return parse_spec(data, f"{name} {problem_type}")


def build_lake(lake: Lake, landing: Path, spec: DatasetSpec) -> None:
    """Land three days of trips and the weather, and run the data plane (features + feature state)."""
    header = "trip_id,carrier,origin,distance,seats,refundable,booked,delay,ts"
    carriers, origins = ["AA", "UA", "DL"], ["JFK", "EWR", "LGA"]
    for d, day in enumerate(DAYS):
        lines = [
            f"{100 * d + i},{carriers[i % 3]},{origins[i % 3]},{300 + 37 * i},{100 + i},yes,2012-12-01,{(i * 7) % 40},{day}T{6 + i:02d}:00:00Z"
            for i in range(12)
        ]
        (landing / spec.name).mkdir(parents=True, exist_ok=True)
        (landing / spec.name / f"{day}.csv").write_text("\n".join([header, *lines]) + "\n")
    weather = landing / spec.side_tables[0].name / "weather.csv"
    if not weather.exists():
        weather.parent.mkdir(parents=True, exist_ok=True)
        start = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
        rows = [f"{o},{5 + h % 9}.5,{(start + dt.timedelta(hours=h)).isoformat()}" for h in range(24 * len(DAYS)) for o in origins]
        weather.write_text("\n".join(["origin,temp,ts", *rows]) + "\n")
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    for table in spec.tables:
        refresh_silver(lake, table)
    refresh_features(lake, spec)


def register(lake: Lake, spec: DatasetSpec, artifacts: Path, seed: int, *, promote: bool = True) -> int:
    """Save a real bundle (seeded weights, not trained), register it and (by default) make it the champion."""
    state = FeatureState.from_frame(lake.scan(Tables.feature_state(spec.name)).collect())
    inputs = model_inputs(spec, state)
    config = ModelConfig(spec.problem_type, inputs.categorical, inputs.cardinalities, inputs.numeric, hidden=[8], embedding_dim=3,
                         dropout=0.0, target=spec.target.name, target_mean=10.0, target_std=5.0)  # fmt: skip
    torch.manual_seed(seed)
    store = ArtifactStore(artifacts)
    uri, sha = save_bundle(store, f"{spec.name}/candidates/seed{seed}", model=TabularModel(config), config=config, params={"seed": seed},
                           state=state, spec=spec, spec_dict=spec.model_dump(mode="json"), lineage={})  # fmt: skip
    registry = Registry(lake)
    mv = registry.register(
        spec.name, artifact_uri=uri, artifact_sha256=sha, training_table=lake.uri(Tables.features(spec.name)),
        training_version=lake.version(Tables.features(spec.name)), metrics={}, baseline_metrics={}, params={"seed": seed},
        gate_results={}, gates_passed=True, reason="test", artifact_root=str(artifacts),
    )  # fmt: skip
    if promote:
        registry.promote(spec.name, mv.version, reason="test", actor="test")
    return mv.version


#: A model registered with this seed raises on every real record (:func:`faulty_models_env`).
FAULTY_SEED = 13
_FAULT = f"""
import numpy as np
from aiflow.models import bundle

_predict = bundle.LoadedModel.predict_arrays


def predict_arrays(self, cat, num):
    # the holder's warm-up predicts on zeros and passes; real records have nonzero inputs
    if "/candidates/seed{FAULTY_SEED}/" in self.uri + "/" and np.any(num):
        raise RuntimeError("injected fault: this model raises on every real record")
    return _predict(self, cat, num)


bundle.LoadedModel.predict_arrays = predict_arrays
"""


def faulty_models_env(folder: Path) -> dict:
    """Environment for ``serve(..., env=...)``: in that server, the model registered with ``seed=FAULTY_SEED`` raises a
    RuntimeError on every real record (a ``sitecustomize`` wraps ``LoadedModel.predict_arrays``: the fault is the only thing
    simulated; bundle, registry, loading, routing and the app are the real ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_FAULT)
    # the sitecustomize imports aiflow before ``-m`` puts the working directory on sys.path: name this checkout's root
    return {"PYTHONPATH": os.pathsep.join([str(folder), str(Path(__file__).resolve().parents[3])])}


@dataclass
class Home:
    """An aiflow home (local profile) with spec files and registered champions."""

    root: Path
    specs: dict[str, DatasetSpec]
    spec_files: list[Path]

    @property
    def lake(self) -> Lake:
        return Lake(self.root / "lake")

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


def make_home(root: Path, specs: list[DatasetSpec]) -> Home:
    lake = Lake(root / "lake")
    files = []
    for spec in specs:
        build_lake(lake, root / "landing", spec)
        register(lake, spec, root / "artifacts", seed=0)
        path = root / f"{spec.name}.yaml"
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
        files.append(path)
    return Home(root, {s.name: s for s in specs}, files)


@pytest.fixture(scope="session")
def home_template(tmp_path_factory) -> Home:
    """A classification dataset (trips, New York) and a regression one (fares, Tokyo), champion v1 each (read-only: copy it)."""
    return make_home(tmp_path_factory.mktemp("serve_home"), [tiny_spec(), tiny_spec("fares", "regression", "Asia/Tokyo")])


@pytest.fixture
def home(home_template: Home, tmp_path: Path) -> Home:
    """A private copy of the template home."""
    import shutil

    shutil.copytree(home_template.root, tmp_path / "home")
    root = tmp_path / "home"
    return Home(root, home_template.specs, [root / p.name for p in home_template.spec_files])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log_path: Path
    headers: dict = field(default_factory=lambda: {"Authorization": f"Bearer {TOKEN}"})

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30, **kwargs)

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout)


def start_server(home: Home, *args: str, env: dict | None = None, wait: bool = True) -> Server:
    """``aiflow serve`` as a subprocess on a free 127.0.0.1 port; waits until ready."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIFLOW_")}
    full_env.update({"AIFLOW_HOME": str(home.root), "AIFLOW_DATASETS": os.pathsep.join(map(str, home.spec_files)),
                     "AIFLOW_SERVE_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", **(env or {})})  # fmt: skip
    log_path = home.root / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "aiflow.cli.main", "serve", "--port", str(port), "--reload-interval", "0.3", "--log-interval", "0.5", *args]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    return wait_ready(server) if wait else server


def wait_ready(server: Server, timeout: float = 60, verify=True) -> Server:
    """Wait until ``/v2/health/ready`` answers 200 (the process killed and its output shown if it does not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"aiflow serve exited with {server.proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1, verify=verify).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"aiflow serve not ready in {timeout} s:\n{server.output()}")


@pytest.fixture
def serve():
    """Start servers with ``serve(home, *args)``; every one still running is stopped (SIGKILL) at teardown."""
    started: list[Server] = []

    def _start(home: Home, *args: str, **kwargs) -> Server:
        server = start_server(home, *args, **kwargs)
        started.append(server)
        return server

    yield _start
    for server in started:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def record(i: int = 0, **overrides) -> dict:
    """A raw record of the tiny spec (carrier, origin, distance, seats, weather_temp, ts; extra fields allowed)."""
    base = {"trip_id": 9000 + i, "carrier": ["AA", "UA", "DL"][i % 3], "origin": ["JFK", "EWR", "LGA"][i % 3],
            "distance": 250.0 + 91 * i, "seats": 90 + i, "weather_temp": 3.5 + i, "ts": f"2013-01-0{1 + i % 3}T{5 + i % 12:02d}:30:00Z"}  # fmt: skip
    return base | overrides
