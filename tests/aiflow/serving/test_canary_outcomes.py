"""Canary and shadow outcomes visible (issue 22, item 8): a real ``aiflow serve`` whose canary and challenger are a
registered model that raises on every real record (:func:`faulty_models_env`). The canary's 500s (and its 422s) are
counted under its variant and logged as its error rows, so the canary analysis rolls it back on its error rate; the
removal is logged by the server and its version gauge cleared; the shadow's failures are counted and logged once."""

from __future__ import annotations

import time

from aiflow.models.registry import Registry
from aiflow.serving.canary import CanaryPolicy, analyse, apply_decision
from aiflow.serving.inference_log import log_table
from aiflow.serving.traffic import canary_share
from tests.aiflow.serving.conftest import FAULTY_SEED, Home, faulty_models_env, record, register


def wait_for(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value is not None and value is not False:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout} s: {check}")


def metric(text: str, prefix: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_a_failing_canary_is_counted_logged_and_rolled_back_and_a_failing_shadow_counted(home: Home, serve, tmp_path):
    registry = Registry(home.lake)
    faulty = register(home.lake, home.specs["trips"], home.artifacts, seed=FAULTY_SEED, promote=False)
    registry.set_alias("trips", "canary", faulty, reason="test", actor="test")
    registry.set_alias("trips", "challenger", faulty, reason="test", actor="test")
    server = serve(home, "--canary-fraction", "0.5", env=faulty_models_env(tmp_path / "fault"))
    keys = [f"customer-{i}" for i in range(30)]
    to_canary = [k for k in keys if canary_share(k) < 0.5]
    assert 5 <= len(to_canary) <= 25
    with server.client() as c:
        answers = {k: c.post("/v1/predict", json={"dataset": "trips", "records": [record(i)]}, headers={"X-Request-Key": k})
                   for i, k in enumerate(keys)}  # fmt: skip
        refused = c.post("/v1/predict", json={"dataset": "trips", "records": [record(1, distance="x")]},
                         headers={"X-Request-Key": to_canary[0]})  # fmt: skip
        champion_answers = [a for k, a in answers.items() if k not in to_canary]
        assert refused.status_code == 422
        assert [answers[k].status_code for k in to_canary] == [500] * len(to_canary)
        assert all(a.status_code == 200 and a.json()["variant"] == "champion" for a in champion_answers)
        shadow_errors = f'aiflow_requests_total{{api="v1",dataset="trips",status="error",variant="shadow",version="{faulty}"}}'

        def shadowed():  # shadow scoring runs after each response: wait until every champion answer's shadow is counted
            text = c.get("/metrics").text
            return text if metric(text, shadow_errors) == len(champion_answers) else None

        text = wait_for(shadowed)
    canary = f'api="v1",dataset="trips",status="{{}}",variant="canary",version="{faulty}"'
    assert metric(text, "aiflow_requests_total{" + canary.format(500) + "}") == len(to_canary)
    assert metric(text, "aiflow_requests_total{" + canary.format(422) + "}") == 1
    assert metric(text, 'aiflow_model_version{dataset="trips",variant="canary"}') == faulty

    # the canary's failures are in the log as its error rows: the analysis sees them and rolls it back

    def logged():
        rows = home.lake.scan(log_table("trips")).collect() if home.lake.exists(log_table("trips")) else None
        return rows if rows is not None and rows.height == len(keys) else None

    rows = wait_for(logged)
    assert rows.filter(variant="canary")["status"].unique().to_list() == ["error: HTTP 500"]
    decision = analyse(home.lake, "trips", "classification", CanaryPolicy(min_requests=5, min_labels=0, require_quality=False))
    assert decision.action == "rollback" and "error rate 1.0000" in decision.reason, decision.reason
    stats = {r["variant"]: r for r in decision.stats.iter_rows(named=True)}
    assert (stats["canary"]["requests"], stats["canary"]["errors"]) == (len(to_canary), len(to_canary))
    assert (stats["champion"]["requests"], stats["champion"]["errors"]) == (len(champion_answers), 0)
    apply_decision(registry, "trips", decision, actor="test")

    with server.client() as c:
        wait_for(lambda: not any(m["variant"] == "canary" for m in c.get("/v1/models").json()["models"]))
        text = c.get("/metrics").text
        assert c.post("/v1/predict", json={"dataset": "trips", "records": [record(1)]}, headers={"X-Request-Key": to_canary[0]}).json()[
            "variant"] == "champion"  # fmt: skip
    assert 'aiflow_model_version{dataset="trips",variant="canary"}' not in text
    output = server.output()
    assert f"trips canary v{faulty} no longer served: the 'canary' alias was removed" in output
    assert output.count(f"shadow: trips challenger v{faulty} could not score") == 1  # logged once, counted every time
    assert "Exception in ASGI application" not in output
