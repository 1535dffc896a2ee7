"""Scope: Schemathesis against a real ``aiflow serve`` on loopback, from the OpenAPI document it publishes: the document
is behind the token and names every endpoint, and a few hundred generated requests (valid and invalid bodies, path and
query parameters, every operation, with the token) get no 5xx; afterwards the server is ready and its inference log
still flushes. The 5,000-case run is ``python -m benchmarks.generated_requests``."""

from __future__ import annotations

import httpx

from tests.aiflow.serving.conftest import Home
from tests.aiflow.serving.openapi_cases import send_generated, still_serving

OPERATIONS = {
    "GET /v2/health/live", "GET /v2/health/ready", "GET /reports/{dataset}/{name}", "POST /v1/predict", "POST /v1/feedback",
    "GET /v1/models", "GET /metrics", "GET /openapi.json", "GET /v2", "GET /v2/models/{name}", "GET /v2/models/{name}/versions/{version}",
    "GET /v2/models/{name}/ready", "GET /v2/models/{name}/versions/{version}/ready", "POST /v2/models/{name}/infer",
    "POST /v2/models/{name}/versions/{version}/infer",
}  # fmt: skip


def test_the_document_is_behind_the_token_and_describes_each_dataset_s_records(home: Home, serve):
    server = serve(home)
    assert httpx.get(f"{server.url}/openapi.json").status_code == 401
    with server.client() as c:
        doc = c.get("/openapi.json").json()
    assert {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops} == OPERATIONS
    bodies = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    trips = next(b for b in bodies if b["properties"]["dataset"]["enum"] == ["trips"])["properties"]["records"]["items"]
    assert trips["properties"]["ts"] == {"type": "string", "format": "date-time"} and "distance" in trips["required"]


def test_generated_requests_from_the_published_document_get_no_5xx(home: Home, serve):
    server = serve(home)
    outcome = send_generated(server, cases=300)
    print(f"schemathesis: {outcome.total} requests in {outcome.seconds:.1f} s, statuses {dict(sorted(outcome.statuses.items()))}")
    assert not outcome.server_errors, "\n".join(outcome.server_errors[:10])
    # every operation that takes a body or a parameter was reached (one without inputs has a single case, which
    # Hypothesis may draw once or not at all)
    assert outcome.total >= 300 and {o for o in OPERATIONS if "{" in o or o.startswith("POST")} <= set(outcome.operations), outcome.operations
    assert outcome.statuses[200] >= 30  # valid cases reach the models, not only the validators
    still_serving(server, home)
