"""Scope: `aiflow models` run as real subprocesses against a registry in tmp_path: tables printed, promote/rollback move the alias, verify checks a real bundle of either family against the registry, bad input exits non-zero with a clear message."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aiflow.models.registry import Registry
from aiflow.storage.lake import Lake

AIFLOW = str(Path(sys.executable).with_name("aiflow"))
#: The checkout under test first on the path: the installed `aiflow` script may be an editable install of another checkout.
CHECKOUT = str(Path(__file__).resolve().parents[3])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """flights v1, v2 (gates passed) and v3 (gates failed) under <home>/lake; no aliases yet."""
    registry = Registry(Lake(tmp_path / "lake"))
    for seed, passed in (("a", True), ("b", True), ("c", False)):
        registry.register(
            "flights",
            artifact_uri=f"/artifacts/{seed}",
            artifact_sha256=hashlib.sha256(seed.encode()).hexdigest(),
            training_table=str(tmp_path / "lake/features/flights"),
            training_version=7,
            metrics={"auc": 0.74},
            baseline_metrics={"auc": 0.70},
            params={"epochs": 3},
            gate_results={"auc_vs_baseline": {"passed": passed, "value": 0.74 if passed else 0.6, "threshold": 0.7}},
            gates_passed=passed,
            reason="schedule",
        )
    return tmp_path


def aiflow(home: Path, *args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (CHECKOUT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "USER": "tester", "LOGNAME": "tester", "PYTHONPATH": path}
    return subprocess.run([AIFLOW, "--home", str(home), "models", *args], capture_output=True, text=True, env=env, timeout=60)


def aiflow_concurrently(home: Path, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Independent commands run at the same time (each pays the interpreter start-up): keeps the suite fast."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: aiflow(home, *args), commands))


def registry(home: Path) -> Registry:
    return Registry(Lake(home / "lake"))


def rows(stdout: str, text: str) -> list[list[str]]:
    """Cells of the printed table rows containing ``text``."""
    return [[c.strip() for c in line.strip().strip("│").split("┆")] for line in stdout.splitlines() if text in line]


def test_list_and_show_print_tables(home: Path):
    listed, shown, card = aiflow_concurrently(home, ["list"], ["show", "flights", "3"], ["show", "flights", "2", "--card"])
    assert listed.returncode == 0, listed.stderr
    header = listed.stdout.splitlines()[1]
    for column in ("name", "version", "family", "aliases", "gates_passed", "reason", "data", "metrics", "sha256"):
        assert column in header
    listed_rows = rows(listed.stdout, "flights")
    assert [r[:3] for r in listed_rows] == [
        ["flights", "1", "pytorch"],
        ["flights", "2", "pytorch"],
        ["flights", "3", "pytorch"],
    ]  # rows without a family were networks
    assert "features/flights@7" in listed_rows[0] and "auc=0.74" in listed_rows[0]

    assert shown.returncode == 0, shown.stderr
    assert "artifact_sha256" in shown.stdout and hashlib.sha256(b"c").hexdigest() in shown.stdout
    assert "FAILED (value 0.6, threshold 0.7)" in shown.stdout

    assert card.returncode == 0 and card.stdout.startswith("# Model card: flights v2")


def test_list_of_an_empty_registry(tmp_path: Path):
    listed = aiflow(tmp_path, "list")
    assert listed.returncode == 0 and "no models registered" in listed.stdout


def test_promote_and_rollback_move_the_alias(home: Path):
    registry(home).promote("flights", 1, reason="launch", actor="ci")
    promoted = aiflow(home, "promote", "flights", "2", "--reason", "retrained")
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.strip() == "flights: champion -> v2 (was v1)"
    assert registry(home).alias("flights", "champion") == 2

    rolled = aiflow(home, "rollback", "flights", "--reason", "latency regression")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.strip() == "flights: champion rolled back to v1 (was v2)"
    assert registry(home).alias("flights", "champion") == 1

    aliases, history = aiflow_concurrently(home, ["aliases", "flights"], ["history", "flights", "--alias", "champion"])
    assert aliases.returncode == 0 and rows(aliases.stdout, "champion") == [["champion", "1"]]
    assert history.returncode == 0, history.stderr
    events = rows(history.stdout, "champion")
    assert [e[1:6] for e in events] == [
        ["champion", "rollback", "1", "2", "tester"],
        ["champion", "promote", "2", "1", "tester"],
        ["champion", "promote", "1", "null", "ci"],
    ]
    assert events[0][6] == "latency regression"


def test_rollback_of_a_removed_alias_is_refused(home: Path):
    registry(home).set_alias("flights", "canary", 2, reason="try v2", actor="ci")
    registry(home).remove_alias("flights", "canary", reason="canary error rate 0.47", actor="analysis")
    refused = aiflow(home, "rollback", "flights", "--alias", "canary", "--reason", "restore")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "aiflow models rollback: error: flights: alias 'canary' is not set (removed from v2 by analysis" in refused.stderr
    assert "to set it, run `aiflow models promote flights VERSION --alias canary --reason WHY`" in refused.stderr
    assert registry(home).alias("flights", "canary") is None and registry(home).history("flights").height == 2


def test_promoting_a_version_that_failed_its_gates_needs_force(home: Path):
    refused = aiflow(home, "promote", "flights", "3", "--reason", "try")
    assert refused.returncode == 1 and "failed its gates (auc_vs_baseline)" in refused.stderr
    assert registry(home).alias("flights", "champion") is None
    forced = aiflow(home, "promote", "flights", "3", "--reason", "accepted", "--alias", "canary", "--force")
    assert forced.returncode == 0, forced.stderr
    assert registry(home).aliases("flights") == {"canary": 3}


BAD_INPUT = [
    (["promote", "flights", "9", "--reason", "r"], "model 'flights' has no version 9 (registered: 1, 2, 3)"),
    (["show", "taxis", "1"], "no model named 'taxis' is registered"),
    (["promote", "flights", "1", "--reason", "r", "--alias", "Prod!"], "alias must be a lowercase word"),
    (["rollback", "flights", "--reason", "r"], "alias 'champion' was never set"),
]


def test_bad_input_exits_non_zero_with_a_clear_message(home: Path):
    results = aiflow_concurrently(home, *(args for args, _ in BAD_INPUT))
    for (args, message), result in zip(BAD_INPUT, results, strict=True):
        assert result.returncode == 1, (args, result.stdout)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert registry(home).history("flights").height == 0


def test_champion_prints_headline_metrics_next_to_the_baseline(tmp_path: Path):
    reg = Registry(Lake(tmp_path / "lake"))
    assert aiflow(tmp_path, "champion", "flights").returncode == 1  # the first model ever: no champion yet
    reg.register(
        "flights",
        artifact_uri="/artifacts/x",
        artifact_sha256=hashlib.sha256(b"x").hexdigest(),
        training_table=str(tmp_path / "lake/features/flights"),
        training_version=3,
        metrics={"valid_roc_auc": 0.6812, "test_roc_auc": 0.6634, "valid_log_loss": 0.44},
        baseline_metrics={"roc_auc": 0.6775, "log_loss": 0.45},
        params={},
        gate_results={"latency": {"passed": True}},
        gates_passed=True,
        reason="manual",
    )
    reg.promote("flights", 1, reason="test", actor="tester")
    out = aiflow(tmp_path, "champion", "flights")
    assert out.returncode == 0, out.stderr
    assert "champion: v1" in out.stdout and "naive reference (validation)" in out.stdout
    assert rows(out.stdout, "roc_auc") == [["roc_auc", "0.6812", "0.6775", "0.6634"]]
    assert rows(out.stdout, "log_loss")[0][:3] == ["log_loss", "0.44", "0.45"]


def _register_trained(home: Path, spec, families: list[str], key: str) -> int:
    """Train ``families`` on a small planted-signal features table of ``spec`` under <home>; register the candidate."""
    from aiflow.train.contract import TrainParams
    from aiflow.train.loop import train
    from aiflow.train.request import pinned_request
    from tests.aiflow.train.test_baseline import write_features

    write_features(home, spec, "categorical")
    lake = Lake(home / "lake")
    params = TrainParams(epochs=1, batch_size=512, hidden=[4], embedding_dim=2, baseline_max_rows=2000, families=families)
    request = pinned_request(lake, spec, params, str(home / "artifacts"), key, "test")
    result = train(request, log=lambda _: None)
    mv = Registry(lake).register(
        spec.name, artifact_uri=result.artifact_uri, artifact_sha256=result.artifact_sha256, training_table=request.features_uri,
        training_version=request.data_version, metrics={}, baseline_metrics=result.naive_metrics, params=result.params,
        gate_results={}, gates_passed=True, reason="test", family=result.family, family_metrics=result.family_metrics,
        bundle_files=result.bundle_files, artifact_root=str(home / "artifacts"),
    )  # fmt: skip
    assert mv.family == families[0] and not mv.artifact_uri.startswith("/")
    return mv.version


def test_verify_checks_the_champion_or_a_version_and_names_the_edited_file(tmp_path: Path, tiny_spec):
    from tests.aiflow.train.test_baseline import regression_spec

    home = tmp_path / "home"
    assert _register_trained(home, tiny_spec, ["sklearn"], "trees") == 1  # classification, scikit-learn
    assert _register_trained(home, regression_spec(), ["pytorch"], "net") == 2  # regression, the network
    no_champion = aiflow(home, "verify", "trips")
    assert no_champion.returncode == 1 and "'trips' has no champion; name a version" in no_champion.stderr
    registry(home).promote("trips", 1, reason="test", actor="tester")

    champion, second = aiflow_concurrently(home, ["verify", "trips"], ["verify", "trips", "2"])
    assert champion.returncode == 0, champion.stderr
    assert champion.stdout.startswith("trips v1 (sklearn) verified: 7 files match digest ")  # model, model.json, preprocessing, spec, reference x2, manifest
    assert registry(home).get("trips", 1).artifact_sha256 in champion.stdout
    assert second.returncode == 0 and second.stdout.startswith("trips v2 (pytorch) verified"), second.stderr

    # a copied home verifies in its new place (locations are relative to the artifact root)
    shutil.copytree(home, tmp_path / "copy")
    shutil.copytree(home, tmp_path / "gone")
    shutil.rmtree(tmp_path / "gone" / "artifacts" / registry(home).get("trips", 2).artifact_uri)
    # one byte of one file of each bundle changed in the original home
    v1 = home / "artifacts" / registry(home).get("trips", 1).artifact_uri
    v2 = home / "artifacts" / registry(home).get("trips", 2).artifact_uri
    meta = (v1 / "model.json").read_text()
    (v1 / "model.json").write_text(meta.replace('"classification"', '"regression"'))
    weights = bytearray((v2 / "weights.pt").read_bytes())
    weights[-100] ^= 1
    (v2 / "weights.pt").write_bytes(bytes(weights))

    with ThreadPoolExecutor(4) as pool:
        checks = [
            (home, "verify", "trips"),
            (home, "verify", "trips", "2"),
            (tmp_path / "copy", "verify", "trips"),
            (tmp_path / "gone", "verify", "trips", "2"),
        ]
        edited, edited_weights, copied, gone = pool.map(lambda args: aiflow(*args), checks)
    assert edited.returncode == 1 and edited.stdout == ""
    assert "trips v1 FAILED" in edited.stderr and f"{v1}: model.json differs from the registered bundle" in edited.stderr
    assert edited_weights.returncode == 1 and "weights.pt differs from the registered bundle" in edited_weights.stderr
    assert "model.json" not in edited_weights.stderr and "Traceback" not in edited.stderr + edited_weights.stderr
    assert copied.returncode == 0 and copied.stdout.startswith("trips v1 (sklearn) verified"), copied.stderr
    assert str(tmp_path / "copy" / "artifacts") in copied.stdout
    assert gone.returncode == 1 and "is incomplete: manifest.json is missing" in gone.stderr and "Traceback" not in gone.stderr
