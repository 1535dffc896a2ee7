"""Scope: the lean request path for large requests (issue 11's 100-record goal) — the micro-batcher scores a large request
inline when no batch is in flight (declines and busy batchers still go through the worker thread), bearer auth checked
directly by every secured endpoint (401 everywhere, health open), recent request ids bounded (oldest forgotten first), orjson parsing with the json fallback (NaN and huge
integers keep their 422 answers), and 100-record answers equal to the bundle's own on the fast and the Polars encoder
paths, counted in the same metrics — on the tiny spec (trips, New York, classification) and a regression spec (fares,
Tokyo, other side-table column names)."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import threading

import httpx
import numpy as np
import pytest

from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.registry import Registry
from aiflow.serving.batcher import MicroBatcher
from aiflow.serving.online import RecentIds, RequestIds
from tests.aiflow.serving.conftest import Home, record, start_server


# ------------------------------------------------------------------------------------ the batcher
class Calls:
    """A fake model: doubles ``x``; records which path scored which request sizes."""

    def __init__(self, decline: bool = False):
        self.threaded: list[int] = []
        self.inlined: list[int] = []
        self.decline = decline
        self.release = threading.Event()
        self.release.set()

    def predict(self, records: list[dict]) -> list[float]:
        self.threaded.append(len(records))
        self.release.wait(10)
        if any(r.get("bad") for r in records):
            raise ValueError("cannot encode raw records: bad value")
        return [2.0 * r["x"] for r in records]

    def inline(self, records: list[dict]) -> list[float] | None:
        if self.decline:
            return None
        self.inlined.append(len(records))
        if any(r.get("bad") for r in records):
            raise ValueError("cannot encode raw records: bad value")
        return [2.0 * r["x"] for r in records]


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"x": start + i} for i in range(n)]


def test_a_large_request_on_an_idle_batcher_is_scored_inline_and_counted_as_one_batch():
    calls, seen = Calls(), []

    async def run() -> tuple[list, list, MicroBatcher]:
        batcher = MicroBatcher(calls.predict, max_records=64, on_batch=lambda r, n: seen.append((r, n)), inline=calls.inline, inline_from=10)
        large = await batcher.submit(rows(40))
        small = await batcher.submit(rows(3, 100))
        batcher.close()
        return list(large), list(small), batcher

    large, small, batcher = asyncio.run(run())
    assert large == [2.0 * i for i in range(40)] and small == [200.0, 202.0, 204.0]
    assert calls.inlined == [40] and calls.threaded == [3]  # small requests still go through the worker
    assert seen == [(1, 40), (1, 3)] and batcher.batches == 2 and batcher.inlined == 1


def test_requests_over_max_records_or_declined_by_inline_go_to_the_worker():
    calls = Calls(decline=True)
    big = Calls()

    async def run() -> tuple[list, list]:
        declined = MicroBatcher(calls.predict, max_records=64, inline=calls.inline, inline_from=10)
        over = MicroBatcher(big.predict, max_records=32, inline=big.inline, inline_from=10)
        a, b = await declined.submit(rows(20)), await over.submit(rows(50))
        declined.close()
        over.close()
        return list(a), list(b)

    a, b = asyncio.run(run())
    assert a == [2.0 * i for i in range(20)] and calls.threaded == [20]  # the Polars path (None) keeps its thread
    assert b == [2.0 * i for i in range(50)] and big.inlined == [] and big.threaded == [50]


def test_no_inline_while_a_batch_is_in_flight_and_every_request_gets_its_own_answer():
    calls = Calls()
    calls.release.clear()

    async def run() -> tuple[list, list]:
        batcher = MicroBatcher(calls.predict, max_records=256, inline=calls.inline, inline_from=10)
        first = asyncio.ensure_future(batcher.submit(rows(2)))
        while not calls.threaded:  # the worker thread is now scoring the first request
            await asyncio.sleep(0.005)
        second = asyncio.ensure_future(batcher.submit(rows(30, 1000)))
        await asyncio.sleep(0.05)
        assert not second.done()  # queued behind the batch in flight, not scored inline past it
        calls.release.set()
        out = [list(await first), list(await second)]
        batcher.close()
        return out, list(calls.threaded)

    (first, second), threaded = asyncio.run(run())
    assert first == [0.0, 2.0] and second == [2.0 * (1000 + i) for i in range(30)]
    assert calls.inlined == [] and threaded == [2, 30]


def test_an_inline_scoring_error_reaches_its_request_and_the_batcher_goes_on():
    calls = Calls()

    async def run():
        batcher = MicroBatcher(calls.predict, max_records=64, inline=calls.inline, inline_from=10)
        with pytest.raises(ValueError, match="bad value"):
            await batcher.submit([*rows(12), {"x": 0, "bad": True}])
        after = list(await batcher.submit(rows(12)))
        batcher.close()
        return after

    assert asyncio.run(run()) == [2.0 * i for i in range(12)]


def test_recent_ids_stay_bounded_and_forget_the_oldest_requests_first():
    recent, take = RecentIds(250), RequestIds().take
    requests = [take(100) for _ in range(5)]
    for ids in requests[:2]:
        recent.add(ids)
    assert all(i in recent for ids in requests[:2] for i in ids) and len(recent) == 200
    for ids in requests[2:]:
        recent.add(ids)
    assert len(recent) <= 250
    assert not any(i in recent for ids in requests[:3] for i in ids)  # the oldest go first, whole requests at a time
    assert all(i in recent for ids in requests[3:] for i in ids) and "never-served" not in recent


# ------------------------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def lean(home_template: Home, tmp_path_factory):
    """One server for the module (trips classification/New York, fares regression/Tokyo)."""
    root = tmp_path_factory.mktemp("lean") / "home"
    shutil.copytree(home_template.root, root)
    home = Home(root, home_template.specs, [root / p.name for p in home_template.spec_files])
    server = start_server(home)
    yield server, home
    server.stop(signal.SIGKILL)


SECURED = [
    ("POST", "/v1/predict", {"dataset": "trips", "records": [record()]}),
    ("POST", "/v1/feedback", {"dataset": "trips", "labels": [{"request_id": "x", "label": 1}]}),
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
    ("GET", "/v2", None),
    ("GET", "/v2/models/trips", None),
    ("GET", "/v2/models/trips/versions/1", None),
    ("GET", "/v2/models/trips/ready", None),
    ("GET", "/v2/models/trips/versions/1/ready", None),
    ("POST", "/v2/models/trips/infer", {"inputs": []}),
    ("POST", "/v2/models/trips/versions/1/infer", {"inputs": []}),
]


@pytest.mark.parametrize(("method", "path", "body"), SECURED, ids=[f"{m} {p}" for m, p, _ in SECURED])
def test_every_secured_endpoint_answers_401_without_a_valid_token(lean, method, path, body):
    server, _ = lean
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.request(method, f"{server.url}{path}", json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and "bearer token" in r.json()["error"]
    assert httpx.request(method, f"{server.url}{path}", json=body, headers=server.headers).status_code != 401


def test_health_probes_stay_open(lean):
    server, _ = lean
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize("dataset", ["trips", "fares"])
def test_json_the_fast_parser_refuses_keeps_its_422_answers(lean, dataset):
    server, _ = lean
    good = ", ".join('"%s": %s' % (k, f'"{v}"' if isinstance(v, str) else v) for k, v in record(1).items() if k != "distance")  # noqa: UP031
    with server.client() as c:
        nan = c.post("/v1/predict", content=f'{{"dataset": "{dataset}", "records": [{{{good}, "distance": NaN}}]}}'.encode(),
                     headers={"Content-Type": "application/json"})  # fmt: skip
        assert nan.status_code == 422, nan.text
        assert nan.json()["problems"] == [{"record": 0, "field": "distance", "problem": "expected a finite number, got nan"}]
        huge = c.post("/v1/predict", content=f'{{"dataset": "{dataset}", "records": [{{{good}, "distance": 1, "seats": {10**30}}}]}}'.encode(),
                      headers={"Content-Type": "application/json"})  # fmt: skip
        assert huge.status_code == 422 and "do not fit" in huge.json()["error"], huge.text
        broken = c.post("/v1/predict", content=b'{"dataset": "trips", "records": [{"distance": NaN', headers={"Content-Type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]


def batches(server) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=server.headers).text
    found = re.search(r'aiflow_scoring_batches_total\{dataset="trips"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("dataset", ["trips", "fares"])
def test_100_record_requests_equal_the_bundles_own_on_both_encoder_paths(lean, dataset):
    server, home = lean
    side = {"fares_weather_temp": 1.5} if dataset == "fares" else {}
    inputs = [record(i % 9, distance=120.0 + 17 * i) | side for i in range(100)]
    sent = [r | {"note": f"extra {i}", "tags": ["kept", "in", "the", "log"]} for i, r in enumerate(inputs)]  # extras: not model inputs
    polars_path = [r | {"seats": float(r["seats"])} for r in sent]  # integral floats for an integer field: the Polars path
    model = load_model(ModelRef.of(Registry(home.lake).get(dataset, 1), str(home.artifacts)))
    expected = model.predict_records(inputs)
    key = "probability" if dataset == "trips" else "prediction"
    before = batches(server)
    with server.client() as c:
        for body in (sent, polars_path):
            r = c.post("/v1/predict", json={"dataset": dataset, "records": body})
            assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
            out = r.json()
            assert (out["model"], out["version"], out["variant"]) == (dataset, 1, "champion")
            np.testing.assert_allclose([p[key] for p in out["predictions"]], expected, rtol=1e-6)
            assert len({p["request_id"] for p in out["predictions"]}) == 100
            if dataset == "trips":
                assert [p["label"] for p in out["predictions"]] == [int(p >= 0.5) for p in expected]
            else:
                assert set(out["predictions"][0]) == {"request_id", "prediction"}
    if dataset == "trips":
        assert batches(server) == before + 2  # one scoring call per request, inline or not, as the metrics always counted
