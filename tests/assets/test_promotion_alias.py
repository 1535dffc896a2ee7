"""Which alias a registered version takes (assets.deployment.promotion_alias): under the spec's default (shadow) the
first model becomes the champion, a retrain becomes the challenger unless its offline evidence against the *current*
champion is decisive; direct and canary do what they say; evidence against an older champion never promotes."""

import datetime as dt

import pytest

from aiflow.models.candidates import Evaluation
from aiflow.spec import demo_spec_path, load_spec
from assets.deployment import promotion_alias
from tests.aiflow.monitoring.world import rides_spec


def evaluation(champion_version: int | None, gain: float | None, low: float = 0.0, high: float = 0.0) -> Evaluation:
    metrics = {"roc_auc": 0.7} | ({"gain_vs_champion": gain, "gain_vs_champion_low": low, "gain_vs_champion_high": high} if gain is not None else {})
    return Evaluation(
        evaluation_id="e", candidate_id="c", name="rides", run_id="r", created_at=dt.datetime.now(dt.UTC), artifact_sha256="a" * 64,
        test_metrics=metrics, champion_version=champion_version, champion_metrics={}, rows=2000, latency_ms_per_1k=1.0,
        gate_results={}, gates_passed=True, slices=[], plot_uri=None, notes=[],
    )  # fmt: skip


SPEC = rides_spec(retrain={"cost": 0.005})


@pytest.mark.parametrize(
    ("policy", "champion", "ev", "alias", "said"),
    [
        ("spec", None, None, "champion", "passed"),  # the first model: nothing to compare with
        ("spec", 1, evaluation(1, 0.03, 0.01, 0.05), "champion", "decisive offline"),
        ("spec", 1, evaluation(1, 0.03, 0.004, 0.05), "challenger", "not decisive"),
        ("spec", 1, evaluation(1, -0.01, -0.02, 0.0), "challenger", "live evidence decides"),
        ("spec", 2, evaluation(1, 0.03, 0.01, 0.05), "challenger", "no offline comparison with champion v2"),  # judged vs v1
        ("spec", 1, evaluation(1, None), "challenger", "no offline comparison"),
        ("shadow", 1, None, "challenger", "no offline comparison"),
        ("direct", 1, evaluation(1, -0.01, -0.02, 0.0), "champion", "passed"),
        ("canary", 1, evaluation(1, 0.03, 0.01, 0.05), "canary", "passed"),
    ],
)
def test_the_alias_a_registered_version_takes(policy, champion, ev, alias, said):
    got, reason = promotion_alias(SPEC, policy, champion, ev, "passed the gates")
    assert got == alias and said in reason and reason.startswith("passed the gates")


def test_the_spec_can_promote_directly():
    spec = rides_spec(retrain={"promotion": "direct"})
    assert promotion_alias(spec, "spec", 1, None, "r")[0] == "champion"
    assert load_spec(demo_spec_path()).monitoring.retrain.promotion == "shadow"  # the demo's default
