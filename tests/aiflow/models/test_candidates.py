"""Scope: the typed hand-off records (candidates, evaluations, registrations) on real Delta tables: resolution by run,
by explicit id, the logged fallback, refusal when nothing matches, and concurrent writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from aiflow.models.candidates import CANDIDATES, HandoffNotFoundError, Handoffs
from aiflow.storage.lake import Lake


def sha(i: int) -> str:
    return f"{i:064x}"


def record(handoffs: Handoffs, i: int, run_id: str, name: str = "trips"):
    return handoffs.record_candidate(
        name, run_id=run_id, artifact_uri=f"/artifacts/{name}/c{i}", artifact_sha256=sha(i), features_uri="/lake/features/trips",
        data_version=i, valid_metrics={"rmse": 10.0 + i}, baseline_metrics={"rmse": 11.0}, params={"hidden": [8]}, source="test",
    )  # fmt: skip


def evaluate(handoffs: Handoffs, cand, run_id: str, passed: bool = True):
    return handoffs.record_evaluation(
        cand, run_id=run_id, test_metrics={"rmse": 12.0}, champion_version=None, champion_metrics=None, rows=100,
        latency_ms_per_1k=3.0, gate_results={"latency": {"passed": passed, "value": 3.0, "threshold": 250.0, "margin": 247.0}},
        slices=[{"slice": "origin", "value": "JFK", "rows": 60, "rmse": 11.5}], plot_uri=None, notes=["no champion yet"],
    )  # fmt: skip


@pytest.fixture
def handoffs(tmp_path) -> Handoffs:
    return Handoffs(Lake(tmp_path / "lake"))


def test_each_run_reads_its_own_records_and_round_trips_every_field(handoffs: Handoffs):
    a, b = record(handoffs, 1, "run-a"), record(handoffs, 2, "run-b")
    record(handoffs, 3, "run-c", name="flights")  # another model, same run ids space
    found = handoffs.resolve_candidate("trips", run_ids=["run-a"])
    assert found.record == a and "run run-a" in found.how
    assert handoffs.resolve_candidate("trips", run_ids=["run-b"]).record == b
    ev = evaluate(handoffs, b, "run-b", passed=False)
    got = handoffs.resolve_evaluation("trips", run_ids=["run-b"]).record
    assert got == ev and got.gates_passed is False and got.artifact_sha256 == sha(2)
    assert got.slices == [{"slice": "origin", "value": "JFK", "rows": 60, "rmse": 11.5}] and got.champion_metrics == {}
    reg = handoffs.record_registration(ev, run_id="run-b", version=7)
    assert handoffs.resolve_registration("trips", run_ids=["run-b"]).record == reg
    with pytest.raises(HandoffNotFoundError, match="run-a"):
        handoffs.resolve_evaluation("trips", run_ids=["run-a"])


def test_a_re_execution_finds_its_parent_runs_record(handoffs: Handoffs):
    original = record(handoffs, 1, "root-run")
    assert handoffs.resolve_candidate("trips", run_ids=["retry-run", "root-run"]).record == original


def test_explicit_id_wins_and_latest_is_only_an_explicit_fallback(handoffs: Handoffs):
    first, second = record(handoffs, 1, "run-a"), record(handoffs, 2, "run-b")
    evaluate(handoffs, first, "run-x")
    by_id = handoffs.resolve_candidate("trips", run_ids=["run-b"], candidate_id=first.candidate_id)
    assert by_id.record == first and "given in the config" in by_id.how
    assert handoffs.resolve_evaluation("trips", run_ids=["other"], candidate_id=first.candidate_id).record.candidate_id == first.candidate_id
    with pytest.raises(HandoffNotFoundError, match="use_latest"):
        handoffs.resolve_candidate("trips", run_ids=["run-z"])
    fallback = handoffs.resolve_candidate("trips", run_ids=["run-z"], latest=True)
    assert fallback.record == second and fallback.how.startswith("FALLBACK")
    with pytest.raises(HandoffNotFoundError, match="no candidate recorded for candidate_id 'nope'"):
        handoffs.resolve_candidate("trips", run_ids=[], candidate_id="nope")


def test_an_empty_registry_refuses_clearly(handoffs: Handoffs):
    with pytest.raises(HandoffNotFoundError, match="recorded no registration"):
        handoffs.resolve_registration("trips", run_ids=["run-a"], latest=True)


def test_concurrent_writers_all_commit_and_keep_their_pairing(handoffs: Handoffs):
    def work(i: int):
        cand = record(handoffs, i, f"run-{i}")
        evaluate(handoffs, handoffs.resolve_candidate("trips", run_ids=[f"run-{i}"]).record, f"run-{i}")
        return cand

    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(work, range(8)))
    assert len(handoffs.candidates("trips")) == 8 and len(handoffs.evaluations("trips")) == 8
    for i, cand in enumerate(made):
        ev = handoffs.resolve_evaluation("trips", run_ids=[f"run-{i}"]).record
        assert ev.candidate_id == cand.candidate_id and ev.artifact_sha256 == sha(i)
    assert handoffs.lake.exists(CANDIDATES)
