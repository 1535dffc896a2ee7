"""Adaptive micro-batching: concurrent single-record requests to a real ``aiflow serve`` are scored in fewer encoder calls
than requests, each answer still its own record's (equal to the bundle's prediction); a batch with one bad request fails only
that request (the batcher itself, driven by a real event loop)."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np

from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.registry import Registry
from aiflow.serving.batcher import MicroBatcher
from tests.aiflow.serving.conftest import Home, record


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(home: Home, serve):
    server = serve(home)
    records = [record(i % 9, distance=200.0 + 13 * i, weather_temp=float(i)) for i in range(60)]

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as client:
            responses = await asyncio.gather(*(client.post("/v1/predict", json={"dataset": "trips", "records": [r]}) for r in records))
        assert all(r.status_code == 200 for r in responses)
        return [r.json()["predictions"][0] for r in responses]

    answers = asyncio.run(fire())
    own = load_model(ModelRef.of(Registry(home.lake).get("trips", 1), str(home.artifacts))).predict_records(records)
    np.testing.assert_allclose([a["probability"] for a in answers], own, rtol=1e-6)  # float32: batch composition moves ~1e-8
    assert len({a["request_id"] for a in answers}) == len(records)
    text = httpx.get(f"{server.url}/metrics", headers=server.headers).text
    batches = float(re.search(r'aiflow_scoring_batches_total\{dataset="trips"\} (\S+)', text).group(1))
    batched = float(re.search(r'aiflow_scoring_batched_requests_total\{dataset="trips"\} (\S+)', text).group(1))
    assert batched == len(records) and batches < len(records) / 2  # several requests per encoder call


def test_a_bad_request_in_a_batch_fails_alone():
    def predict(records: list[dict]) -> list[float]:
        if any(r.get("bad") for r in records):
            raise ValueError("cannot encode raw records: record 0: bad value")
        return [float(r["x"]) * 2 for r in records]

    async def run() -> tuple[list, MicroBatcher]:
        batcher = MicroBatcher(predict, max_records=100)
        requests = [[{"x": i}, {"x": i + 0.5}] for i in range(5)] + [[{"x": 9, "bad": True}]]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        batcher.close()
        return results, batcher

    results, batcher = asyncio.run(run())
    assert [list(r) for r in results[:5]] == [[2.0 * i, 2.0 * i + 1] for i in range(5)]
    assert isinstance(results[5], ValueError) and "bad value" in str(results[5])
    assert batcher.batches >= 2  # the failed batch was retried request by request


def test_max_records_caps_a_batch():
    sizes: list[int] = []

    async def run() -> None:
        batcher = MicroBatcher(lambda recs: [0.0] * len(recs), max_records=4, on_batch=lambda _, n: sizes.append(n))
        await asyncio.gather(*(batcher.submit([{"x": i}]) for i in range(10)))
        batcher.close()

    asyncio.run(run())
    assert sum(sizes) == 10 and max(sizes) <= 4

