"""Schemathesis cases from the OpenAPI document a real ``aiflow serve`` publishes, sent to it: shared by the suite's
test (a few hundred cases) and ``python -m benchmarks.generated_requests`` (thousands)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from aiflow.serving.inference_log import log_table
from tests.aiflow.serving.conftest import Home, Server, record


@dataclass
class Outcome:
    """What the generated requests got back."""

    statuses: Counter = field(default_factory=Counter)  # status code -> count
    operations: Counter = field(default_factory=Counter)  # "METHOD path" -> count
    server_errors: list[str] = field(default_factory=list)  # one line per 5xx: the request and the answer
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def send_generated(server: Server, cases: int, *, seed: int = 0) -> Outcome:
    """Load ``/openapi.json`` (with the token), then send ``cases`` Schemathesis cases — valid (positive) and invalid
    (negative) bodies, path and query parameters for every operation — with the token; count what comes back."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=server.headers, timeout=30)
    strategy = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    outcome = Outcome()
    session = requests.Session()

    @settings(max_examples=cases, deadline=None, derandomize=seed == 0, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def send(case) -> None:
        response = case.call(base_url=server.url, session=session, headers=server.headers, timeout=30)
        outcome.statuses[response.status_code] += 1
        outcome.operations[f"{case.method} {case.path}"] += 1
        if response.status_code >= 500:
            outcome.server_errors.append(f"{case.method} {case.formatted_path} {case.body!r:.300} -> {response.status_code} {response.text:.300}")

    started = time.monotonic()
    send()
    outcome.seconds = time.monotonic() - started
    session.close()
    return outcome


def still_serving(server: Server, home: Home, dataset: str = "trips", timeout: float = 15) -> str:
    """Afterwards the server is ready, counted no 5xx, and its inference log still flushes (a new request's row is
    written); returns the metrics text. Raises AssertionError otherwise."""
    with server.client() as c:
        assert c.get("/v2/health/ready").status_code == 200, "the server is no longer ready"
        metrics = c.get("/metrics").text
        answer = c.post("/v1/predict", json={"dataset": dataset, "records": [record(2)]})
        assert answer.status_code == 200, answer.text
        good = answer.json()["predictions"][0]["request_id"]
    fives = [line for line in metrics.splitlines() if line.startswith("aiflow_http_responses_total") and 'status="5' in line]
    assert not fives, fives
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = log_table(dataset)
        if home.lake.exists(table) and good in home.lake.scan(table).collect()["request_id"].to_list():
            return metrics
        time.sleep(0.2)
    raise AssertionError(f"the inference log stopped flushing: request {good} not written in {timeout} s")

