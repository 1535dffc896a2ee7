"""5xx counted (issue 22, item 4): a real ``aiflow serve`` whose ``trips`` champion is a registered model that raises on
every real record (the fault injected by :func:`faulty_models_env`). Each such request is answered 500 with an error id, counted in ``aiflow_requests_total`` (with its
dataset, version and variant) and ``aiflow_http_responses_total`` (with its endpoint), logged once with that id, and never
written to the inference log as an answer (its records are error rows there); refusals (401, 404) are counted too."""

from __future__ import annotations

import time

import httpx

from aiflow.serving.inference_log import log_table
from tests.aiflow.serving.conftest import FAULTY_SEED, Home, faulty_models_env, record, register


def oip_body(c, rec: dict) -> dict:
    """A one-record OIP request from the model's own metadata (names and datatypes of its inputs)."""
    return {"inputs": [{"name": i["name"], "shape": [1], "datatype": i["datatype"], "data": [rec[i["name"]]]}
                       for i in c.get("/v2/models/trips").json()["inputs"]]}  # fmt: skip


def test_an_internal_error_is_a_counted_500_with_an_id_and_never_a_logged_success(home: Home, serve, tmp_path):
    broken = register(home.lake, home.specs["trips"], home.artifacts, seed=FAULTY_SEED)
    server = serve(home, env=faulty_models_env(tmp_path / "fault"))
    with server.client() as c:
        answers = [c.post("/v1/predict", json={"dataset": "trips", "records": [record(i)]}) for i in range(3)]
        answers.append(c.post("/v2/models/trips/infer", json=oip_body(c, record(4))))
        assert c.post("/v1/predict", json={"dataset": "fares", "records": [record(1)]}).status_code == 200  # the other dataset serves
        assert c.post("/v1/predict", json={"dataset": "nope", "records": [record(1)]}).status_code == 404
        assert httpx.post(f"{server.url}/v1/predict", json={"dataset": "trips", "records": [record(1)]}).status_code == 401
        text = c.get("/metrics").text
    assert [a.status_code for a in answers] == [500] * 4
    ids = [a.json()["request_id"] for a in answers]
    assert len(set(ids)) == 4 and all(i in a.json()["error"] for i, a in zip(ids, answers, strict=True))

    assert f'aiflow_requests_total{{api="v1",dataset="trips",status="500",variant="champion",version="{broken}"}} 3.0' in text
    assert f'aiflow_requests_total{{api="v2",dataset="trips",status="500",variant="champion",version="{broken}"}} 1.0' in text
    assert 'aiflow_http_responses_total{endpoint="/v1/predict",status="500"} 3.0' in text
    assert 'aiflow_http_responses_total{endpoint="/v2/models/{name}/infer",status="500"} 1.0' in text
    assert 'aiflow_requests_total{api="v1",dataset="",status="404",variant="",version=""} 1.0' in text
    assert 'aiflow_requests_total{api="v1",dataset="",status="401",variant="",version=""} 1.0' in text
    assert 'status="ok",variant="champion",version="' + str(broken) not in text

    # the failed records are in the log as error rows of the version that failed them, never as answers
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (home.lake.exists(log_table("trips")) and home.lake.exists(log_table("fares"))):
        time.sleep(0.2)
    rows = home.lake.scan(log_table("trips")).collect()
    assert rows.height == 4 and set(rows["status"]) == {"error: HTTP 500"} and set(rows["model_version"]) == {broken}
    assert rows["prediction"].null_count() == 4 and set(rows["variant"]) == {"champion"}
    output = server.output()
    assert all(output.count(i) == 1 for i in ids)  # logged once each, by id
    assert output.count("RuntimeError: injected fault: this model raises on every real record") == 4
    assert "Exception in ASGI application" not in output  # no second, anonymous traceback
