"""Restoring a lake and registry from a copy (the README's operations guide): a copy of the home taken at one point and
restored under another path serves the champion of that point, verified against the digest its registry recorded; a copy
whose artifacts were left behind is refused with the missing file named, and never serves a model it cannot verify."""

from __future__ import annotations

import shutil
import time

import httpx

from aiflow.models.registry import Registry
from tests.aiflow.serving.conftest import Home, record, register


def _copy(home: Home, target) -> Home:
    """What a backup/restore does: copy the lake (registry included) and the artifacts, byte for byte, elsewhere."""
    shutil.copytree(home.root, target, ignore=shutil.ignore_patterns("serve-*.log"))
    return Home(target, home.specs, [target / p.name for p in home.spec_files])


def test_a_copy_restored_elsewhere_serves_the_champion_of_its_point_in_time(home: Home, serve, tmp_path):
    backup = _copy(home, tmp_path / "backup")  # taken while v1 is the champion
    v2 = register(home.lake, home.specs["trips"], home.artifacts, seed=1)  # later: v2 promoted on the live home
    assert Registry(home.lake).alias("trips", "champion") == v2

    restored = _copy(backup, tmp_path / "elsewhere" / "restored")  # a new machine, another absolute path
    expected = Registry(restored.lake).get("trips", 1).artifact_sha256
    server = serve(restored)
    with server.client() as c:
        answer = c.post("/v1/predict", json={"dataset": "trips", "records": [record(0)]})
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"] if m["variant"] == "champion"}
    assert answer.status_code == 200 and answer.json()["version"] == 1  # the backup's champion, not the live v2
    assert models["trips"]["artifact_sha256"] == expected and models["trips"]["last_reload_error"] is None
    assert models["fares"]["version"] == 1  # every dataset of the copy


def test_a_restore_without_the_artifacts_is_refused_naming_the_file(home: Home, serve, tmp_path):
    restored = _copy(home, tmp_path / "restored")
    champion = Registry(restored.lake).get("trips", 1)
    bundle = champion.location(str(restored.artifacts))
    shutil.rmtree(bundle)  # the lake was restored, the artifact bucket was not
    server = serve(restored, wait=False)
    deadline = time.monotonic() + 60
    trips = None
    while time.monotonic() < deadline and server.proc.poll() is None:
        try:
            with server.client() as c:
                trips = next(m for m in c.get("/v1/models").json()["models"] if m["name"] == "trips" and m["variant"] == "champion")
                if trips["last_reload_error"]:
                    answer = c.post("/v1/predict", json={"dataset": "trips", "records": [record(0)]})
                    break
        except httpx.TransportError:  # the server is still starting
            pass
        time.sleep(0.2)
    assert trips is not None and trips["last_reload_error"], server.output()
    error = trips["last_reload_error"]
    assert trips["version"] is None and error.startswith("v1: ") and str(bundle).rstrip("/") in error and "missing" in error
    assert answer.status_code == 503 and "trips" in answer.text  # refused, never a guess
