"""Online serving over a server's life, on real ``aiflow serve`` processes: hot reload from the registry's alias log while a
client sends requests continuously (zero failures, the new version answers after the swap), a tampered version refused
while the old one keeps serving, every request in the Delta inference log after a graceful SIGTERM (token never logged),
two processes appending to the same log at once, and at most one flush interval lost on kill -9."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import polars as pl

from aiflow.models.registry import Registry
from aiflow.serving.inference_log import log_table
from tests.aiflow.serving.conftest import TOKEN, Home, Server, record, register, wait_ready


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["request_id"] for p in response.json()["predictions"]]


def logged(home: Home, dataset: str = "trips") -> pl.DataFrame:
    return home.lake.scan(log_table(dataset)).collect()


def wait_for(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Caller(threading.Thread):
    """Sends single-record requests back to back until stopped; records (status, version, request id) of each."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.results, self.errors, self.halt = server, [], [], threading.Event()

    def run(self) -> None:
        with self.server.client() as c:
            while not self.halt.is_set():
                try:
                    r = c.post("/v1/predict", json={"dataset": "trips", "records": [record(len(self.results) % 9)]})
                    body = r.json()
                    self.results.append((r.status_code, body.get("version"), (body.get("predictions") or [{}])[0].get("request_id")))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def versions(self) -> list[int]:
        return [v for _, v, _ in self.results]


def test_hot_reload_under_traffic_refuses_a_tampered_version_and_logs_every_request_on_sigterm(home: Home, serve):
    server = serve(home, "--log-interval", "60")  # no timed flush in this test: the log is written at shutdown
    registry = Registry(home.lake)
    with server.client() as c:  # the regression dataset (Tokyo, other side-column names) is logged too
        fares = c.post("/v1/predict", json={"dataset": "fares", "records": [record(i) | {"fares_weather_temp": 1.5} for i in range(3)]})
    caller = Caller(server)
    caller.start()
    try:
        wait_for(lambda: len(caller.results) >= 20, what="first requests")
        v2 = register(home.lake, home.specs["trips"], home.artifacts, seed=1)  # promoted: the alias log moves
        wait_for(lambda: 2 in caller.versions()[-5:], what="v2 answering")
        seen = len(caller.results)
        wait_for(lambda: len(caller.results) >= seen + 20, what="requests after the swap")

        # a tampered bundle: registered, then one byte of its weights changed, then promoted
        v3 = register(home.lake, home.specs["trips"], home.artifacts, seed=2, promote=False)
        weights = Path(registry.get("trips", v3).location(str(home.artifacts))) / "weights.pt"
        weights.write_bytes(weights.read_bytes() + b"\0")
        registry.promote("trips", v3, reason="test: tampered", actor="test")
        with server.client() as c:
            wait_for(lambda: c.get("/v1/models").json()["models"][1]["last_reload_error"] is not None, what="the refusal")
            trips = next(m for m in c.get("/v1/models").json()["models"] if m["name"] == "trips")
            metrics = c.get("/metrics").text
        seen = len(caller.results)
        wait_for(lambda: len(caller.results) >= seen + 20, what="requests after the refusal")
    finally:
        caller.halt.set()
        caller.join()

    assert caller.errors == [] and {s for s, _, _ in caller.results} == {200}  # zero failed requests
    versions = caller.versions()
    swap = versions.index(v2)
    assert set(versions[:swap]) == {1} and set(versions[swap:]) == {v2}  # one clean swap, never back, never v3
    assert trips["version"] == v2 and f"v{v3}" in trips["last_reload_error"] and "weights.pt" in trips["last_reload_error"]
    assert 'aiflow_model_load_failures_total{dataset="trips",variant="champion"} 1.0' in metrics
    assert 'aiflow_model_loads_total{dataset="trips",variant="champion"} 2.0' in metrics
    assert "failed to load" in server.output() and f"v{v2} keeps serving" in server.output()

    server.stop(signal.SIGTERM)  # graceful: the lifespan shutdown flushes the inference log
    log = logged(home)
    sent = {rid for _, _, rid in caller.results}
    assert sent <= set(log["request_id"].to_list()) and log.height == len(sent)
    by_id = {r["request_id"]: r for r in log.iter_rows(named=True)}
    assert [by_id[rid]["model_version"] for _, _, rid in caller.results] == versions  # each row names the version that scored it
    row = by_id[caller.results[0][2]]
    assert row["variant"] == "champion" and row["status"] == "ok" and row["dataset"] == "trips" and row["latency_ms"] > 0
    assert row["time"].tzinfo is not None and row["date"] == row["time"].date()
    assert '"carrier"' in row["input"] and 0.0 <= row["probability"] <= 1.0 and row["prediction"] in (0.0, 1.0)
    assert not log["input"].str.contains(TOKEN).any() and TOKEN not in server.output()
    fares_log = logged(home, "fares").sort("request_id")
    answers = sorted((p["request_id"], p["prediction"]) for p in fares.json()["predictions"])
    assert list(zip(fares_log["request_id"], fares_log["prediction"], strict=True)) == answers
    assert fares_log["probability"].null_count() == 3 and fares_log["input"].str.contains("fares_weather_temp").all()


def test_two_processes_append_to_one_log_and_kill_9_loses_at_most_one_flush_interval(home: Home, serve):
    interval = 0.5
    a, b = serve(home, wait=False), serve(home, wait=False)
    wait_ready(a), wait_ready(b)
    sent: dict[str, list[str]] = {"a": [], "b": [], "a_late": []}
    with a.client() as ca, b.client() as cb:
        for i in range(15):  # both processes score and append at once
            sent["a"] += ids_of(ca.post("/v1/predict", json={"dataset": "trips", "records": [record(i), record(i + 1)]}))
            sent["b"] += ids_of(cb.post("/v1/predict", json={"dataset": "trips", "records": [record(i)]}))
        time.sleep(3 * interval)  # longer than one flush interval: these rows must be durable now
        for i in range(5):
            sent["a_late"] += ids_of(ca.post("/v1/predict", json={"dataset": "trips", "records": [record(i)]}))
            sent["b"] += ids_of(cb.post("/v1/predict", json={"dataset": "trips", "records": [record(i)]}))
    a.stop(signal.SIGKILL)  # hard kill: at most the last interval's rows may be lost
    b.stop(signal.SIGTERM)
    found = set(logged(home)["request_id"].to_list())
    assert set(sent["a"]) <= found  # older than one flush interval: kept despite kill -9
    assert set(sent["b"]) <= found  # the other process, shut down gracefully: everything
    assert found - set(sent["a"]) - set(sent["b"]) <= set(sent["a_late"])  # nothing else, and no duplicates:
    assert logged(home).height == len(found)
    history = home.lake.history(log_table("trips"))
    assert sum(1 for c in history if c.get("operation") in ("WRITE", "CREATE TABLE")) >= 2  # several appends, two writers
