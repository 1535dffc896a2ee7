"""The challenger verdict (aiflow.monitoring.challenger.judge): promote only when better with confidence and by the
cost, retire when not better by the cost or undecided too long, wait otherwise; offline evidence promotes at once
only when its lower bound clears the cost."""

import pytest

from aiflow.evaluation.paired import Evidence
from aiflow.monitoring.challenger import ChallengerPolicy, decisive_offline, judge

P = ChallengerPolicy(cost=0.005, min_labels=100, max_windows=3)


def ev(gain, low, high, rows=1000, metric="roc_auc"):
    return Evidence(metric, rows, 0.7, 0.7 + gain, gain, low, high, 0.9)


@pytest.mark.parametrize(
    ("evidence", "windows", "action"),
    [
        (ev(0.02, 0.01, 0.03), 1, "promote"),
        (ev(0.004, 0.001, 0.007), 1, "wait"),  # surely better, but by less than the cost: more rows may tell
        (ev(0.004, 0.001, 0.007), 3, "retire"),  # ... not after max_windows
        (ev(0.01, -0.002, 0.02), 1, "wait"),  # maybe better
        (ev(-0.01, -0.02, 0.001), 1, "retire"),  # surely not better by the cost
        (ev(0.05, 0.04, 0.06, rows=50), 1, "wait"),  # too few labels, whatever they say
        (ev(0.05, 0.04, 0.06, rows=50), 3, "retire"),
        (Evidence("roc_auc", 0), 1, "wait"),
    ],
)
def test_verdicts(evidence, windows, action):
    verdict = judge(P, evidence, windows=windows, challenger=3, champion=2)
    assert verdict.action == action, verdict.reason
    assert "challenger v3" in verdict.reason and "champion v2" in verdict.reason


def test_offline_evidence_promotes_only_when_decisive():
    assert decisive_offline(P, ev(0.03, 0.006, 0.05))
    assert not decisive_offline(P, ev(0.03, 0.004, 0.05))
    assert not decisive_offline(P, ev(0.03, 0.01, 0.05, rows=50))
    assert not decisive_offline(P, Evidence("roc_auc", 1000))


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError, match="confidence"):
        ChallengerPolicy(confidence=1.0)
    with pytest.raises(ValueError, match="cost"):
        ChallengerPolicy(cost=-1)
