"""BOUNDARY test (no cluster here): the REAL ``python -m aiflow.train`` on the STAND-IN Kubernetes API, preempted and resumed.

The first pod is preempted after its epoch-1 checkpoint; the retried step's pod resumes from it.

The stand-in replaces only ``DagsterKubernetesClient.production_client``; the training process, its
Pipes session, the checkpoint and the Delta features table (four demo days) are real.
"""

# No `from __future__ import annotations`: Dagster reads the asset's annotations at definition time.
import datetime as dt
import sys
from pathlib import Path

import pytest
import yaml
from dagster import AssetExecutionContext, DagsterEventType, DagsterInstance, asset, materialize

from aiflow.data.demo import write_landing
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.spec import demo_spec_path, parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from aiflow.train.contract import TrainParams, TrainRequest
from resources.k8s_training import K8sTrainingLauncher
from resources.training import TrainingLauncher
from tests.k8s.standin import Disruption

pytestmark = [pytest.mark.k8s_boundary, pytest.mark.slow]  # two real training processes (torch import dominates): ~15-30 s

#: The first pod pauses after its epoch-1 checkpoint (the entrypoint's test hook) and is preempted there.
PREEMPT_AFTER_EPOCH_1 = Disruption(
    trigger="epoch 1/2 train_loss",
    pod_reason="Terminated",
    pod_message="Pod was terminated in response to imminent node shutdown.",
    condition_reason="TerminationByKubelet",
)


@pytest.fixture(scope="module")
def features_lake(tmp_path_factory):
    """Four demo days through the data plane: (lake, spec as JSON); validation and test days inside them."""
    root = tmp_path_factory.mktemp("k8s_real")
    data = yaml.safe_load(demo_spec_path().read_text())
    data["split"] = {"kind": "time", "valid_from": "2013-01-03", "test_from": "2013-01-04"}
    spec = parse_spec(data, "flights (k8s test split)")
    write_landing(root / "landing", days=4, start=dt.date(2013, 1, 1))
    lake = Lake(root / "lake")
    for table in spec.tables:
        ingest(lake, LocalLandingZone(root / "landing" / table.name), table)
    for table in spec.tables:
        refresh_silver(lake, table)
    refresh_features(lake, spec)
    return lake, spec


def _train_asset(lake: Lake, spec, artifacts: Path):
    features = Tables.features(spec.name)
    version = lake.version(features)
    state_version = int([v for commit, v in lake.commit_metadata(features, "state_version") if commit <= version][-1])

    @asset(name="model")
    def model(context: AssetExecutionContext, trainer: TrainingLauncher):
        """Trains the flights model through the bound launcher (Kubernetes, on the stand-in)."""
        request = TrainRequest(
            model_name=spec.name,
            features_uri=lake.uri(features),
            data_version=version,
            state_uri=lake.uri(Tables.feature_state(spec.name)),
            state_version=state_version,
            spec=spec.model_dump(mode="json"),
            params=TrainParams(epochs=2, batch_size=256, hidden=[32, 16], embedding_dim=4, patience=2, baseline_max_rows=2000),
            artifact_root=str(artifacts),
            checkpoint_key=f"{spec.name}-{context.run_id}",
            reason="test",
        )
        env = {"AIFLOW_TRAIN_EPOCH_SLEEP": "60"} if context.retry_number == 0 else {}
        return trainer.launch(context, request, env=env).get_materialize_result()

    return model


def test_real_entrypoint_is_preempted_retried_and_resumes_from_its_checkpoint(tmp_path, kubeconfig, stand_in, features_lake):
    lake, spec = features_lake
    api = stand_in(disruptions={0: PREEMPT_AFTER_EPOCH_1})
    launcher = K8sTrainingLauncher(
        image="registry.example.com/aiflow:0.1.0-cuda",
        command=[sys.executable, "-m", "aiflow.train"],  # `python -m aiflow.train`, this interpreter as "the image"
        node_selector={},
        kubeconfig_file=kubeconfig,
        poll_interval=0.1,
        preemption_retry_wait_s=0,
    )
    result = materialize(
        [_train_asset(lake, spec, tmp_path / "artifacts")],
        resources={"trainer": launcher},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )

    assert result.success
    assert len(api.created) == 2 and len(api.deleted) == 2
    assert len([e for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]) == 1
    metadata = result.asset_materializations_for_node("model")[0].metadata
    assert metadata["resumed_from_epoch"].value == 1  # the second pod continued the first one's run
    assert metadata["epochs_run"].value == 2
    assert 0.0 <= metadata["valid_roc_auc"].value <= 1.0
    checkpoint = tmp_path / "artifacts" / spec.name / "checkpoints" / f"{spec.name}-{result.run_id}" / "last.pt"
    assert checkpoint.exists()
