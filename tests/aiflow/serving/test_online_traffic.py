"""Canary and shadow traffic on a real ``aiflow serve`` process: the canary's share of requests within a binomial tolerance
and sticky per request key (both APIs), the challenger's shadow answers logged with variant ``shadow`` (equal to its own
predictions, same request ids) and never returned; the key hash itself is stable and uniform enough."""

from __future__ import annotations

import math
import signal
from collections import Counter

import numpy as np

from aiflow.evaluation.validation import ModelRef, load_model
from aiflow.models.registry import Registry
from aiflow.serving.inference_log import log_table
from aiflow.serving.traffic import canary_share, choose_variant
from tests.aiflow.serving.conftest import Home, record, register

FRACTION = 0.3


def test_canary_share_and_stickiness_and_shadow_logged_not_returned(home: Home, serve):
    spec = home.specs["trips"]
    canary = register(home.lake, spec, home.artifacts, seed=1, promote=False)
    challenger = register(home.lake, spec, home.artifacts, seed=2, promote=False)
    registry = Registry(home.lake)
    registry.promote("trips", canary, reason="test canary", actor="test", alias="canary")
    registry.promote("trips", challenger, reason="test shadow", actor="test", alias="challenger")
    server = serve(home, "--canary-fraction", str(FRACTION), "--log-interval", "60")

    n = 300
    answered: list[tuple[str, int, str]] = []  # (variant, version, request id)
    by_key: dict[str, set[str]] = {}
    with server.client() as c:
        models = {(m["name"], m["variant"]): m["version"] for m in c.get("/v1/models").json()["models"]}
        for i in range(n):  # no key: random split
            body = c.post("/v1/predict", json={"dataset": "trips", "records": [record(i % 9)]}).json()
            answered.append((body["variant"], body["version"], body["predictions"][0]["request_id"]))
        for k in range(40):  # keyed: every request of a key on one variant, through both APIs
            key = f"customer-{k}"
            for _ in range(3):
                body = c.post("/v1/predict", json={"dataset": "trips", "records": [record(k % 9)]}, headers={"X-Request-Key": key}).json()
                by_key.setdefault(key, set()).add(body["variant"])
            oip = c.post(
                "/v2/models/trips/infer", headers={"X-Request-Key": key},
                json={"inputs": [{"name": f, "shape": [1], "datatype": t, "data": [v]} for f, t, v in (
                    ("carrier", "BYTES", "AA"), ("origin", "BYTES", "JFK"), ("distance", "FP64", 300.0), ("ts", "BYTES", "2013-01-01T06:00:00Z"))]},
            ).json()  # fmt: skip
            by_key[key].add({str(canary): "canary", "1": "champion"}[oip["model_version"]])
    assert models == {("trips", "champion"): 1, ("trips", "canary"): canary, ("trips", "challenger"): challenger, ("fares", "champion"): 1}

    counts = Counter(v for v, _, _ in answered)
    assert set(counts) == {"champion", "canary"}  # the challenger never answers
    tolerance = 4 * math.sqrt(n * FRACTION * (1 - FRACTION))  # 4 sigma: a false alarm about once in 16,000 runs
    assert abs(counts["canary"] - n * FRACTION) <= tolerance, counts
    assert all(version == (canary if v == "canary" else 1) for v, version, _ in answered)
    assert all(len(variants) == 1 for variants in by_key.values()), by_key  # sticky per key
    keyed = Counter(next(iter(v)) for v in by_key.values())
    assert keyed["canary"] > 0 and keyed["champion"] > 0
    assert all(next(iter(by_key[k])) == choose_variant(k, FRACTION, True) for k in by_key)  # routed by the key's hash

    server.stop(signal.SIGTERM)
    log = home.lake.scan(log_table("trips")).collect()
    shadow = log.filter(log["variant"] == "shadow")
    answered_ids = [rid for _, _, rid in answered]
    assert set(answered_ids) <= set(shadow["request_id"].to_list())  # every answered request was shadowed...
    assert set(shadow["model_version"].to_list()) == {challenger}  # ... by the challenger
    first = shadow.filter(shadow["request_id"].is_in(answered_ids[:20])).sort("request_id")
    own = load_model(ModelRef.of(registry.get("trips", challenger), str(home.artifacts)))
    records = [record(answered_ids.index(rid) % 9) for rid in first["request_id"]]
    np.testing.assert_allclose(first["probability"].to_numpy(), np.concatenate([own.predict_records([r]) for r in records]), rtol=1e-6)
    served_rows = log.filter(log["variant"] != "shadow")
    assert set(served_rows["variant"].unique().to_list()) == {"champion", "canary"}


def test_key_hash_is_stable_and_close_to_uniform():
    shares = [canary_share(f"k{i}") for i in range(4000)]
    assert canary_share("k1") == canary_share("k1") and all(0 <= s < 1 for s in shares)
    assert abs(sum(s < 0.25 for s in shares) / 4000 - 0.25) < 0.04
    assert choose_variant("k1", 0.5, has_canary=False) == "champion" and choose_variant(None, 0.0, has_canary=True) == "champion"
    assert choose_variant(None, 1.0, has_canary=True) == "canary"
