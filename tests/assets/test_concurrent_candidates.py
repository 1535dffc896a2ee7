"""Scope: two model-plane runs at the same time on one Dagster instance and one lake each evaluate and register
their own candidate (typed hand-offs keyed by run, not the latest materialization)."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from dagster import AssetKey, AssetSelection, DagsterInstance, materialize

from aiflow.data.demo import write_landing
from aiflow.models.candidates import Handoffs
from aiflow.models.registry import Registry
from aiflow.spec import demo_spec_path, parse_spec
from aiflow.storage.lake import Lake
from definitions import build_definitions
from resources.profiles import local_resources
from resources.training import SubprocessTrainingLauncher
from tests.aiflow.train.conftest import run_data_plane

pytestmark = pytest.mark.slow

SMALL = {"batch_size": 256, "embedding_dim": 4, "patience": 2, "baseline_max_rows": 2000, "epochs": 2, "max_train_rows": 3000}
VARIANTS = [{"learning_rate": 1e-3, "hidden": [16]}, {"learning_rate": 3e-3, "hidden": [32, 16], "seed": 5}]
#: Gates that any small model passes: the test is about which artifact is judged and registered, not its quality.
GATES = {"absolute": {}, "must_beat_baseline": False, "latency_budget_ms_per_1k": 5000.0}
SELECTION = AssetSelection.assets(
    AssetKey(["flights", "candidate"]), AssetKey(["flights", "evaluation"]), AssetKey(["flights", "registered_model"])
)

#: Both trainings must have finished before either candidate step returns: the two candidates are then
#: materialized before either evaluation starts, the interleaving that mixed them up when steps read
#: "the latest materialization" of their upstream asset.
BOTH_TRAINED = threading.Barrier(2)


class BarrierLauncher(SubprocessTrainingLauncher):
    """The real subprocess launcher, holding each candidate step until the other run's training is done too."""

    def launch(self, context, request, env=None):
        invocation = super().launch(context, request, env)
        BOTH_TRAINED.wait(timeout=900)
        return invocation


def test_two_runs_at_once_each_register_the_artifact_they_trained(tmp_path):
    home = tmp_path / "home"
    write_landing(home / "landing", days=20, start=dt.date(2013, 1, 1))
    data = yaml.safe_load(demo_spec_path().read_text())
    data["split"] = {"kind": "time", "valid_from": "2013-01-13", "test_from": "2013-01-17"}
    spec_path = tmp_path / "flights.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    lake = Lake(home / "lake")
    run_data_plane(lake, home / "landing", parse_spec(data, "flights"))
    resources = {**local_resources(str(home)), "trainer": BarrierLauncher()}
    defs = build_definitions(spec_path, resources=resources)
    (tmp_path / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))  # one DAGSTER_HOME (sqlite storage) for both runs

    def run(variant: dict):
        config = {"ops": {"flights__candidate": {"config": {**SMALL, **variant}}, "flights__evaluation": {"config": GATES}}}
        return materialize(
            [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance, selection=SELECTION,
            run_config=config, raise_on_error=False,
        )  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, VARIANTS))
    for result in results:
        assert result.success, [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]

    handoffs, registry = Handoffs(lake), Registry(lake)
    trained, evaluated, registered = [], [], []
    for result, variant in zip(results, VARIANTS, strict=True):
        run_id = result.run_id
        candidate = handoffs.resolve_candidate("flights", run_ids=[run_id]).record
        assert candidate.params["hidden"] == variant["hidden"]  # the run's own hyperparameters
        # what the run's own steps said they worked on, in their materializations
        meta = {
            node: {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}
            for node in ("flights__candidate", "flights__evaluation", "flights__registered_model")
        }
        assert meta["flights__candidate"]["artifact_sha256"] == candidate.artifact_sha256
        assert meta["flights__evaluation"]["artifact_sha256"] == candidate.artifact_sha256
        assert meta["flights__registered_model"]["artifact_sha256"] == candidate.artifact_sha256
        evaluation = handoffs.resolve_evaluation("flights", run_ids=[run_id]).record
        version = registry.get("flights", meta["flights__registered_model"]["model_version"])
        assert evaluation.candidate_id == candidate.candidate_id and version.run_id == run_id
        trained.append(candidate.artifact_sha256)
        evaluated.append(evaluation.artifact_sha256)
        registered.append(version.artifact_sha256)
    assert trained == evaluated == registered
    assert len(set(trained)) == 2  # two different artifacts, each paired with its own run
    assert sorted(registry.versions("flights")["artifact_sha256"].to_list()) == sorted(trained)
