"""Scope: `aiflow models alias NAME ALIAS [--remove --reason ...]` through the CLI entry point (this checkout's code, as a
subprocess) on a registry in tmp_path: shows an alias, removes a canary with a required reason recorded in the history,
and refuses a removal without a reason, of an alias that is not set, or of the champion without --force."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiflow.models.registry import Registry
from aiflow.storage.lake import Lake

ROOT = Path(__file__).resolve().parents[3]  # `-m` from here imports this checkout's aiflow (the `aiflow` script may not)


def aiflow(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "USER": "tester", "LOGNAME": "tester"}
    return subprocess.run([sys.executable, "-m", "aiflow.cli.main", "--home", str(home), "models", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=ROOT)  # fmt: skip


def test_alias_remove_needs_a_reason_and_is_recorded(tmp_path: Path):
    registry = Registry(Lake(tmp_path / "lake"))
    for seed in "ab":
        registry.register("flights", artifact_uri=f"/artifacts/{seed}", artifact_sha256=hashlib.sha256(seed.encode()).hexdigest(),
                          training_table=str(tmp_path / "lake/features/flights"), training_version=1, metrics={}, baseline_metrics={},
                          params={}, gate_results={}, gates_passed=True, reason="test")  # fmt: skip
    registry.promote("flights", 1, reason="first", actor="test")
    registry.set_alias("flights", "canary", 2, reason="try v2", actor="test")

    with ThreadPoolExecutor(3) as pool:
        shown, no_reason, champion = pool.map(lambda args: aiflow(tmp_path, *args), [
            ["alias", "flights", "canary"], ["alias", "flights", "canary", "--remove"],
            ["alias", "flights", "champion", "--remove", "--reason", "maintenance"],
        ])  # fmt: skip
    assert shown.returncode == 0 and "flights: canary -> v2" in shown.stdout, shown.stderr
    assert no_reason.returncode == 1 and "--remove needs --reason" in no_reason.stderr
    assert champion.returncode == 1 and "pass --force" in champion.stderr
    assert registry.alias("flights", "canary") == 2 and registry.alias("flights", "champion") == 1  # nothing changed

    removed = aiflow(tmp_path, "alias", "flights", "canary", "--remove", "--reason", "canary answers 500s")
    assert removed.returncode == 0 and "flights: canary removed (was v2)" in removed.stdout, removed.stderr
    assert registry.alias("flights", "canary") is None
    event = registry.history("flights", "canary").row(0, named=True)
    assert (event["action"], event["reason"], event["set_by"], event["version"], event["previous_version"]) == (
        "remove", "canary answers 500s", "tester", None, 2)  # fmt: skip

    again = aiflow(tmp_path, "alias", "flights", "canary", "--remove", "--reason", "twice")
    assert again.returncode == 1 and "alias 'canary' is not set; nothing to remove" in again.stderr
