"""Online serving API on a real ``aiflow serve`` process: bearer auth (env + rotating tokens file, refusal without a token),
request validation (malformed JSON, missing feature, wrong type, oversized body, unknown model), predictions equal to the
bundle's own on both APIs (/v1 and the Open Inference Protocol through tritonclient) for a classification and a regression
dataset, feedback (idempotent, unknown ids flagged) and Prometheus metrics."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.http as tc
from tritonclient.utils import InferenceServerException

from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.registry import Registry
from aiflow.serving.feedback import read_labels
from tests.aiflow.serving.conftest import TOKEN, Home, record, start_server

ROTATED = "rotated-token-2"


@pytest.fixture(scope="module")
def api(home_template: Home, tmp_path_factory):
    """One server for the module: trips (classification) and fares (regression), a tokens file, a small body limit."""
    root = tmp_path_factory.mktemp("api") / "home"
    shutil.copytree(home_template.root, root)
    home = Home(root, home_template.specs, [root / p.name for p in home_template.spec_files])
    tokens = root / "tokens.txt"
    tokens.write_text("# rotated tokens\nfile-token-1\n")
    server = start_server(home, "--tokens-file", str(tokens), "--max-body-bytes", "20000")
    yield server, home, tokens
    server.stop(signal.SIGKILL)


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["request_id"] for p in response.json()["predictions"]]


def own_model(home: Home, dataset: str):
    mv = Registry(home.lake).get(dataset, 1)
    return load_model(ModelRef.of(mv, str(home.artifacts)))


# ------------------------------------------------------------------------------------------- auth
def test_missing_or_wrong_token_is_401_and_health_stays_open(api):
    server, _, _ = api
    body = {"dataset": "trips", "records": [record()]}
    assert httpx.post(f"{server.url}/v1/predict", json=body).status_code == 401
    wrong = httpx.post(f"{server.url}/v1/predict", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
    for path in ("/v1/models", "/metrics", "/v2", "/v2/models/trips"):
        assert httpx.get(f"{server.url}{path}", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401, path
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert httpx.post(f"{server.url}/v1/predict", json=body, headers=server.headers).status_code == 200


def test_tokens_file_rotation_without_restart(api):
    server, _, tokens = api
    body = {"dataset": "trips", "records": [record()]}

    def status(token: str) -> int:
        return httpx.post(f"{server.url}/v1/predict", json=body, headers={"Authorization": f"Bearer {token}"}).status_code

    assert status("file-token-1") == 200 and status(ROTATED) == 401
    tokens.write_text(f"file-token-1\n{ROTATED}\n")  # both valid during the rotation
    assert status("file-token-1") == 200 and status(ROTATED) == 200
    tokens.write_text(f"{ROTATED}\n")  # the old one retired
    assert status("file-token-1") == 401 and status(ROTATED) == 200
    assert status(TOKEN) == 200  # the environment's token is independent of the file


def test_refuses_to_start_without_a_token_and_warns_in_insecure_mode(home_template, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "AIFLOW_HOME": str(tmp_path)}
    refused = subprocess.run([sys.executable, "-m", "aiflow.cli.main", "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "refusing to start without a token" in refused.stderr
    assert "AIFLOW_SERVE_TOKEN" in refused.stderr and "--insecure-dev" in refused.stderr
    # the insecure flag is accepted and shouts; the missing spec then stops it before it binds anything
    insecure = subprocess.run(
        [sys.executable, "-m", "aiflow.cli.main", "--spec", str(tmp_path / "none.yaml"), "serve", "--insecure-dev"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "NO AUTHENTICATION" in insecure.stderr and "refusing" not in insecure.stderr


# ------------------------------------------------------------------------------------ bad requests
def test_bad_requests_name_the_record_and_the_field(api):
    server, _, _ = api
    with server.client() as c:
        malformed = c.post("/v1/predict", content=b'{"dataset": "trips", "records": [', headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]

        missing = c.post("/v1/predict", json={"dataset": "trips", "records": [record(0), {k: v for k, v in record(1).items() if k != "carrier"}]})
        assert missing.status_code == 422
        assert missing.json()["problems"] == [{"record": 1, "field": "carrier", "problem": "missing (required by the model's input schema)"}]

        wrong = c.post("/v1/predict", json={"dataset": "trips", "records": [record(0, distance="far"), record(1, ts="yesterday")]})
        assert wrong.status_code == 422
        assert [(p["record"], p["field"]) for p in wrong.json()["problems"]] == [(0, "distance"), (1, "ts")]
        assert "expected a number" in wrong.json()["problems"][0]["problem"]

        big = c.post("/v1/predict", json={"dataset": "trips", "records": [record(i % 50) for i in range(400)]})
        assert big.status_code == 413 and "20000 bytes" in big.json()["error"]

        unknown = c.post("/v1/predict", json={"dataset": "planes", "records": [record()]})
        assert unknown.status_code == 404 and "trips" in unknown.json()["error"]

        oip_unknown = c.post("/v2/models/planes/infer", json={"inputs": []})
        assert oip_unknown.status_code == 400 and "planes" in oip_unknown.json()["error"]
        oip_bad = c.post("/v2/models/trips/infer", json={"inputs": [{"name": "carrier", "shape": [1], "datatype": "FP64", "data": [1.0]}]})
        assert oip_bad.status_code == 400 and "carrier" in oip_bad.json()["error"] and "BYTES" in oip_bad.json()["error"]


def chunked(body: bytes, size: int = 4096):
    """The body as an iterator: httpx then sends it with ``Transfer-Encoding: chunked`` and no Content-Length."""
    return (body[i : i + size] for i in range(0, len(body), size))


def padded(payload: dict, length: int) -> bytes:
    """``payload`` as JSON padded with trailing spaces (still valid JSON) to exactly ``length`` bytes."""
    body = json.dumps(payload).encode()
    assert len(body) <= length
    return body + b" " * (length - len(body))


def test_a_chunked_body_is_held_to_the_limit_while_it_streams(api):
    """No Content-Length to check up front: the streamed size alone decides, at the byte (the server's limit is 20,000)."""
    server, _, _ = api
    payload = {"dataset": "trips", "records": [record(i % 12) for i in range(20)]}
    oip_payload = {"inputs": [{"name": "carrier", "shape": [1], "datatype": "BYTES", "data": ["AA"]}]}
    with server.client() as c:
        at_limit = c.post("/v1/predict", content=chunked(padded(payload, 20_000)), headers={"Content-Type": "application/json"})
        assert at_limit.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in at_limit.request.headers
        assert at_limit.status_code == 200 and len(at_limit.json()["predictions"]) == 20, at_limit.text
        over = c.post("/v1/predict", content=chunked(padded(payload, 20_001)), headers={"Content-Type": "application/json"})
        assert over.request.headers.get("transfer-encoding") == "chunked"
        assert over.status_code == 413 and "over the limit of 20000 bytes" in over.json()["error"], over.text
        oip_over = c.post("/v2/models/trips/infer", content=chunked(padded(oip_payload, 20_001)), headers={"Content-Type": "application/json"})
        assert oip_over.status_code == 413 and "over the limit of 20000 bytes" in oip_over.json()["error"], oip_over.text
        assert c.get("/v2/health/ready").status_code == 200


# ------------------------------------------------------------------------------------ predictions
def test_v1_predictions_equal_the_bundles_own_and_unseen_categories_take_the_unknown_bucket(api):
    server, home, _ = api
    records = [record(i) for i in range(7)] + [record(0, carrier="ZZ-never-seen"), record(0, carrier="QQ-also-new", seats=None)]
    with server.client() as c:
        trips = c.post("/v1/predict", json={"dataset": "trips", "records": records}).json()
        fares = c.post("/v1/predict", json={"dataset": "fares", "records": [r | {"fares_weather_temp": 2.0} for r in records]}).json()
    expected = own_model(home, "trips").predict_records(records)
    got = np.array([p["probability"] for p in trips["predictions"]])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert [p["label"] for p in trips["predictions"]] == [int(p >= 0.5) for p in expected]
    assert (trips["model"], trips["version"], trips["variant"]) == ("trips", 1, "champion")
    assert len({p["request_id"] for p in trips["predictions"]}) == len(records)
    unknown = own_model(home, "trips").predict_records([record(0, carrier="XX"), record(0, carrier="QQ-also-new", seats=None)])
    np.testing.assert_allclose(got[-2:], unknown, rtol=1e-6)  # (float32, another batch) any unseen carrier scores as the unknown bucket
    assert got[-2] != pytest.approx(got[0])  # ... which is not the seen carrier's score

    regression = own_model(home, "fares").predict_records([r | {"fares_weather_temp": 2.0} for r in records])
    np.testing.assert_allclose([p["prediction"] for p in fares["predictions"]], regression, rtol=1e-12)
    assert "probability" not in fares["predictions"][0]


def test_oip_through_tritonclient_equals_the_bundles_own(api):
    server, home, _ = api
    headers = server.headers
    client = tc.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("trips", headers=headers)
        meta = client.get_model_metadata("trips", headers=headers)
        assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
            "carrier": "BYTES", "origin": "BYTES", "distance": "FP64", "seats": "INT64", "weather_temp": "FP64", "ts": "BYTES"
        }  # fmt: skip
        assert all(i["shape"] == [-1] for i in meta["inputs"]) and [o["name"] for o in meta["outputs"]] == ["probability", "label"]
        assert [o["name"] for o in client.get_model_metadata("fares", headers=headers)["outputs"]] == ["prediction"]

        records = [record(i) for i in range(5)]
        tensors = {
            "carrier": ("BYTES", np.array([r["carrier"].encode() for r in records], dtype=object)),
            "origin": ("BYTES", np.array([r["origin"] for r in records], dtype=object)),
            "distance": ("FP64", np.array([r["distance"] for r in records], dtype=np.float64)),
            "seats": ("INT64", np.array([r["seats"] for r in records], dtype=np.int64)),
            "weather_temp": ("FP64", np.array([r["weather_temp"] for r in records], dtype=np.float64)),
            "ts": ("BYTES", np.array([r["ts"] for r in records], dtype=object)),
        }
        inputs = []
        for name, (datatype, values) in tensors.items():
            tensor = tc.InferInput(name, [len(records)], datatype)
            tensor.set_data_from_numpy(values, binary_data=False)
            inputs.append(tensor)
        outputs = [tc.InferRequestedOutput("probability", binary_data=False), tc.InferRequestedOutput("label", binary_data=False)]
        result = client.infer("trips", inputs, outputs=outputs, request_id="req-42", headers=headers)
        expected = own_model(home, "trips").predict_records(records)
        np.testing.assert_allclose(result.as_numpy("probability"), expected, rtol=1e-12)
        assert result.as_numpy("label").tolist() == [int(p >= 0.5) for p in expected]
        assert result.get_response()["id"] == "req-42"
        versioned = client.infer("trips", inputs, model_version="1", outputs=outputs, headers=headers)
        np.testing.assert_allclose(versioned.as_numpy("probability"), expected, rtol=1e-12)

        with pytest.raises(InferenceServerException, match="version 7 is not served"):
            client.infer("trips", inputs, model_version="7", headers=headers)
        with pytest.raises(InferenceServerException, match="unknown model 'planes'"):
            client.infer("planes", inputs, headers=headers)
        with pytest.raises(InferenceServerException):
            client.infer("trips", inputs, headers={"Authorization": "Bearer wrong"})
    finally:
        client.close()


# ---------------------------------------------------------------------------------- feedback, metrics
def test_feedback_is_idempotent_latest_wins_and_unknown_ids_are_flagged(api):
    server, home, _ = api
    with server.client() as c:
        ids = [p["request_id"] for p in c.post("/v1/predict", json={"dataset": "trips", "records": [record(1), record(2)]}).json()["predictions"]]
        first = c.post("/v1/feedback", json={"dataset": "trips", "labels": [{"request_id": ids[0], "label": 1}, {"request_id": "never-served", "label": 0}]})
        assert first.status_code == 200 and first.json()["unknown"] == ["never-served"] and first.json()["known"] == 1
        again = c.post("/v1/feedback", json={"dataset": "trips", "labels": [{"request_id": ids[0], "label": 0}, {"request_id": ids[1], "label": True}]})
        assert again.status_code == 200 and again.json()["unknown"] == []
        bad = c.post("/v1/feedback", json={"dataset": "trips", "labels": [{"request_id": ids[0], "label": "late"}]})
        assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "label"
        fare = ids_of(c.post("/v1/predict", json={"dataset": "fares", "records": [record(4)]}))[0]
        for value in (12.5, 14.25):  # a regression label: the value; sent twice, the latest wins
            assert c.post("/v1/feedback", json={"dataset": "fares", "labels": [{"request_id": fare, "label": value}]}).status_code == 200
        assert c.post("/v1/feedback", json={"dataset": "planes", "labels": [{"request_id": fare, "label": 1}]}).status_code == 404
        # labels out of the problem type's range: refused by position and field, nothing recorded
        for dataset, label in (("trips", 1e308), ("trips", 2), ("trips", 0.5), ("fares", 1e308), ("fares", -1e13)):
            out = c.post("/v1/feedback", json={"dataset": dataset, "labels": [{"request_id": ids[0], "label": label}]})
            assert out.status_code == 422 and out.json()["problems"][0]["field"] == "label", (dataset, label, out.text)
        edge = c.post("/v1/feedback", json={"dataset": "fares", "labels": [{"request_id": "edge", "label": 1e12}]})
        assert edge.status_code == 200  # exactly on the bound: a value
    assert sorted(read_labels(home.lake, "fares").select("request_id", "label", "known").rows()) == sorted([(fare, 14.25, True), ("edge", 1e12, False)])
    labels = read_labels(home.lake, "trips").sort("request_id")
    rows = {r["request_id"]: (r["label"], r["known"]) for r in labels.iter_rows(named=True)}
    assert labels.height == 3 == len(rows)  # one row per id (the refused labels changed nothing)
    assert rows == {ids[0]: (0.0, True), ids[1]: (1.0, True), "never-served": (0.0, False)}


def test_metrics_count_requests_by_dataset_version_variant_and_status(api):
    server, _, _ = api
    with server.client() as c:
        c.post("/v1/predict", json={"dataset": "fares", "records": [record(3)]})
        c.post("/v1/predict", json={"dataset": "fares", "records": [record(3, distance="x")]})
        models = c.get("/v1/models").json()["models"]
        text = c.get("/metrics").text
    assert {(m["name"], m["version"], m["variant"]) for m in models} == {("trips", 1, "champion"), ("fares", 1, "champion")}
    assert all(len(m["artifact_sha256"]) == 64 and m["loaded_at"] and m["last_reload_error"] is None for m in models)
    assert 'aiflow_requests_total{api="v1",dataset="fares",status="ok",variant="champion",version="1"}' in text
    assert 'aiflow_requests_total{api="v1",dataset="fares",status="422",variant="champion",version="1"} 1.0' in text
    assert 'aiflow_model_loads_total{dataset="trips",variant="champion"} 1.0' in text
    assert "aiflow_request_latency_seconds_bucket" in text and "aiflow_inference_log_queue_rows" in text
    assert "aiflow_inference_log_flushed_rows_total" in text
