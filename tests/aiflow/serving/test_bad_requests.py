"""Requests that used to answer 500 (or were scored and logged although refused) against a real server: timestamps at
the edge of time, arrays nested thousands deep, an OIP input name given as a list, OIP outputs given as a number or a
boolean, rows of more than one element; each is a 4xx naming the problem, counted as such, nothing logged, and the
server stays ready."""

from __future__ import annotations

import time

import pytest

from aiflow.serving.inference_log import log_table
from tests.aiflow.serving.conftest import record


@pytest.fixture(scope="module")
def server(home_template, tmp_path_factory):
    import shutil

    from tests.aiflow.serving.conftest import Home, start_server

    root = tmp_path_factory.mktemp("bad") / "home"
    shutil.copytree(home_template.root, root)
    home = Home(root, home_template.specs, [root / p.name for p in home_template.spec_files])
    s = start_server(home)
    yield s, home
    s.stop()


def oip(c, ts: str, **extra) -> dict:
    """A one-record OIP request built from the model's own metadata (names and datatypes of its inputs)."""
    r = record(1, ts=ts)
    inputs = [{"name": i["name"], "shape": [1], "datatype": i["datatype"], "data": [r[i["name"]]]} for i in c.get("/v2/models/trips").json()["inputs"]]
    return {"inputs": inputs, **extra}


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00", "1500-01-01T00:00:00Z"])
def test_timestamps_at_the_edge_of_time_are_a_422_naming_the_field(server, ts):
    s, _ = server
    with s.client() as c:
        answer = c.post("/v1/predict", json={"dataset": "trips", "records": [record(1, ts=ts)]})
    assert answer.status_code == 422, answer.text
    assert answer.json()["problems"][0]["field"] == "ts"


@pytest.mark.parametrize("depth", [3000, 100_000])
def test_deeply_nested_arrays_are_refused_not_a_500(server, depth):
    s, _ = server
    body = '{"dataset": "trips", "records": [' + "[" * depth + "]" * depth + "]}"
    with s.client() as c:
        answer = c.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, answer.status_code
        assert c.get("/v2/health/ready").status_code == 200


def test_oip_inputs_and_outputs_of_the_wrong_shape_are_400_and_neither_scored_nor_logged(server):
    s, home = server
    lake = home.lake
    before = lake.scan(log_table("trips")).collect().height if lake.exists(log_table("trips")) else 0
    with s.client() as c:
        ok = oip(c, "2013-01-01T10:00:00Z")
        bad = [
            {"inputs": [{"name": ["carrier"], "shape": [1], "datatype": "BYTES", "data": ["AA"]}]},
            {**ok, "outputs": 5},
            {**ok, "outputs": True},
            {**ok, "outputs": [{"name": 3}]},
            {"inputs": [{**ok["inputs"][0], "shape": [1, 1], "data": [[ok["inputs"][0]["data"][0], "extra"]]}, *ok["inputs"][1:]]},
            {"inputs": [{**ok["inputs"][0], "data": [[[1]]]}, *ok["inputs"][1:]]},
        ]
        for body in bad:
            answer = c.post("/v2/models/trips/infer", json=body)
            assert answer.status_code == 400, (body, answer.status_code, answer.text)
        good = c.post("/v2/models/trips/infer", json={**ok, "outputs": [{"name": "probability"}]})
        assert good.status_code == 200 and [o["name"] for o in good.json()["outputs"]] == ["probability"]
        metrics = c.get("/metrics").text
    refused = [line for line in metrics.splitlines() if line.startswith("aiflow_requests_total") and 'api="v2"' in line and 'status="400"' in line]
    assert refused and float(refused[0].rsplit(" ", 1)[1]) >= len(bad) - 1  # counted as refused (the list name has no dataset check)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = lake.scan(log_table("trips")).collect().height if lake.exists(log_table("trips")) else 0
        if after > before:
            break
        time.sleep(0.2)
    assert after == before + 1  # only the good request reached the log
