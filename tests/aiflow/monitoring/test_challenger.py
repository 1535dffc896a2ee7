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
    assert decisive_offline(P, ev(0.03, 0.01, 0.05, rows=50))  # offline needs min_offline_rows (50), not min_labels
    assert not decisive_offline(P, ev(0.03, 0.01, 0.05, rows=49))
    assert not decisive_offline(P, Evidence("roc_auc", 1000))


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError, match="confidence"):
        ChallengerPolicy(confidence=1.0)
    with pytest.raises(ValueError, match="cost"):
        ChallengerPolicy(cost=-1)


def test_a_decisive_gain_on_few_held_out_rows_promotes_at_once_and_the_spec_sets_the_floor():
    """Sparse, late labels (the sparse_late_labels world): a retrain after a changed concept held out 71 labelled rows
    and beat the champion by +0.111 (90 % lower bound +0.080). Requiring min_labels (200) there sent it to shadow for 3
    windows of late labels while the stale champion served at 0.33; its own bound is the guard (on the worlds
    benchmark: cost 2.90 -> 0.90, live ROC AUC 0.606 -> 0.711, no other world changed)."""
    from aiflow.monitoring.challenger import challenger_policy_of
    from aiflow.spec import parse_spec
    from tests.aiflow.tiny import TINY

    after_change = ev(0.111, 0.080, 0.142, rows=71)
    assert decisive_offline(ChallengerPolicy(), after_change)
    assert not decisive_offline(ChallengerPolicy(min_offline_rows=200), after_change)
    assert not decisive_offline(ChallengerPolicy(), ev(0.111, 0.001, 0.2, rows=71))  # a wide bound does not promote
    spec = parse_spec({**TINY, "monitoring": {"retrain": {"min_offline_rows": 100}}}, "tiny")
    assert challenger_policy_of(spec).min_offline_rows == 100
    with pytest.raises(ValueError, match="min_offline_rows"):
        ChallengerPolicy(min_offline_rows=5)


def test_a_challenger_no_better_than_the_champion_judged_window_after_window_is_promoted_at_most_1_minus_confidence_of_the_time():
    """Repeated looks: a challenger exactly as good as the champion (two noisy scorers of the same signal), judged after
    each of 4 windows on cumulating rows, as the loop judges it. At 90 % a look, some look promotes it in more than 10 % of
    the draws (13 of 60 here); at the live confidence (split over the 4 looks: 97.5 % each), which bounds it by 10 %, in
    at most 10 % (6 of 60)."""
    import numpy as np

    from aiflow.evaluation.paired import paired_evidence

    policy = ChallengerPolicy(cost=0.0, confidence=0.9, min_labels=100, max_windows=4, resamples=200)
    assert policy.live_confidence == pytest.approx(0.975)

    def promoted_at_some_look(confidence: float, seed: int) -> bool:
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, 4 * 150)
        champion, challenger = y + rng.normal(0, 1.5, y.size), y + rng.normal(0, 1.5, y.size)
        for look in range(1, 5):
            n = 150 * look
            evidence = paired_evidence(y[:n], champion[:n], challenger[:n], "roc_auc", confidence=confidence, resamples=200, seed=seed)
            verdict = judge(policy, evidence, windows=look, challenger=2, champion=1)
            if verdict.action != "wait":
                return verdict.action == "promote"
        return False

    draws = range(60)
    each_look = sum(promoted_at_some_look(policy.confidence, s) for s in draws) / len(draws)
    live = sum(promoted_at_some_look(policy.live_confidence, s) for s in draws) / len(draws)
    assert live <= 0.1 < each_look, (each_look, live)


def test_earlier_champions_are_the_most_recent_distinct_versions_before_the_current_one():
    from aiflow.monitoring.challenger import earlier_champions

    events = [1, 2, None, 3, 2, 4]  # oldest first; None: the alias was removed
    assert earlier_champions(events, current=4, pool=3) == [2, 3, 1]
    assert earlier_champions(events, current=4, pool=1) == [2]
    assert earlier_champions(events, current=2, pool=5) == [4, 3, 1]
    assert earlier_champions(events, current=4, pool=0) == []
    assert earlier_champions([], current=None, pool=3) == []


@pytest.mark.parametrize(
    ("retrain", "earlier", "back"),
    [
        (ev(0.01, 0.001, 0.02), {1: ev(0.3, 0.25, 0.35), 2: ev(0.2, 0.15, 0.25)}, 1),  # the surest earlier champion
        (ev(0.31, 0.26, 0.36), {1: ev(0.3, 0.25, 0.35)}, None),  # the retrain is surer: it is the newer model
        (ev(0.3, 0.25, 0.35), {1: ev(0.3, 0.25, 0.35)}, None),  # a tie goes to the retrain
        (ev(0.01, 0.001, 0.02), {1: ev(0.03, 0.004, 0.05)}, None),  # not decisive: its lower bound is below the cost
        (ev(0.01, 0.001, 0.02), {1: ev(0.03, 0.005, 0.05)}, 1),  # exactly on the cost: decisive
        (None, {3: ev(0.1, 0.05, 0.15)}, 3),  # no offline evidence for the retrain
        (ev(0.01, 0.001, 0.02), {1: ev(0.3, 0.25, 0.35, rows=49)}, None),  # too few held-out rows
        (ev(0.01, 0.001, 0.02), {1: Evidence("roc_auc", 1000)}, None),  # no comparison at all
        (ev(0.01, 0.001, 0.02), {}, None),
    ],
)
def test_an_earlier_champion_is_reinstated_only_when_decisive_and_surer_than_the_retrain(retrain, earlier, back):
    from aiflow.monitoring.challenger import reinstatement

    assert reinstatement(P, retrain, earlier) == back


def test_a_reinstated_champion_always_clears_the_cost_and_beats_the_retrain():
    """Generated: whatever the bounds, a reinstated version is one of the earlier ones, decisive, and surer than both
    the retrain and every other earlier champion."""
    from hypothesis import given
    from hypothesis import strategies as st

    from aiflow.monitoring.challenger import reinstatement

    bound = st.floats(-0.5, 0.5, allow_nan=False)
    evidence = st.builds(lambda low, width, rows: ev(low + width / 2, low, low + width, rows=rows), bound, st.floats(0, 0.2), st.integers(1, 500))

    @given(st.one_of(st.none(), evidence), st.dictionaries(st.integers(1, 20), evidence, max_size=4))
    def check(retrain, earlier):
        back = reinstatement(P, retrain, earlier)
        if back is None:
            return
        chosen = earlier[back]
        assert decisive_offline(P, chosen)
        assert all(chosen.low >= e.low for e in earlier.values())
        assert retrain is None or chosen.low > retrain.low

    check()


# ---------------------------------------------------------------- exact bounds and reasons (mutation testing, issue 22)
def test_each_verdict_keeps_its_evidence_and_says_it_in_the_reason():
    """The verdict carries the very evidence it was judged on (the decisions table and the shadow report read it from
    there) and its reason quotes that evidence's own description, whichever branch decided."""
    cases = [
        (
            ev(0.02, 0.01, 0.03),
            1,
            "promote",
            "promote challenger v3 vs champion v2: better with 90.0% confidence and by at least the cost 0.005",
        ),
        (ev(-0.01, -0.02, 0.001), 1, "retire", "retire challenger v3 vs champion v2: not better by the cost 0.005 with 90.0% confidence"),
        (ev(0.01, -0.002, 0.02), 3, "retire", "retire challenger v3 vs champion v2: undecided after 3 window(s) in shadow"),
        (ev(0.01, -0.002, 0.02), 2, "wait", "wait: challenger v3 vs champion v2 undecided"),
        (ev(0.05, 0.04, 0.06, rows=99), 3, "retire", "retire challenger v3 vs champion v2: still too little evidence after 3 window(s)"),
        (ev(0.05, 0.04, 0.06, rows=99), 2, "wait", "wait: challenger v3 vs champion v2 has too little evidence yet"),
    ]
    for evidence, windows, action, opening in cases:
        verdict = judge(P, evidence, windows=windows, challenger=3, champion=2)
        assert (verdict.action, verdict.evidence) == (action, evidence) and verdict.evidence is evidence
        assert verdict.reason.startswith(opening), verdict.reason
        assert f"({evidence.describe()}" in verdict.reason, verdict.reason
    assert "needs 100 labelled rows" in judge(P, ev(0.05, 0.04, 0.06, rows=99), windows=3, challenger=3, champion=2).reason
    assert "needs 100)" in judge(P, ev(0.05, 0.04, 0.06, rows=99), windows=2, challenger=3, champion=2).reason


def test_the_verdict_s_bounds_are_exact():
    """min_labels rows count (one fewer do not); a lower bound of exactly 0 is not "better"; a gain of exactly the cost
    is enough; an upper bound of exactly the cost is not "not better by the cost"."""

    def action(evidence, windows=1):
        return judge(P, evidence, windows=windows, challenger=3, champion=2).action

    assert action(ev(0.05, 0.04, 0.06, rows=100)) == "promote"
    assert action(ev(0.05, 0.04, 0.06, rows=99)) == "wait"
    assert action(ev(0.01, 0.0, 0.02)) == "wait"  # low == 0: maybe no better
    assert action(ev(0.01, 1e-9, 0.02)) == "promote"
    assert action(ev(0.005, 0.001, 0.02)) == "promote"  # gain == cost
    assert action(ev(0.0049, 0.001, 0.02)) == "wait"
    assert action(ev(0.001, -0.01, 0.005)) == "wait"  # high == cost: it may still be better by the cost
    assert action(ev(0.001, -0.01, 0.0049)) == "retire"


def test_offline_evidence_with_its_lower_bound_exactly_at_the_cost_promotes_and_an_infinite_one_does_not():
    assert decisive_offline(P, ev(0.03, 0.005, 0.05))  # "at least the cost"
    assert not decisive_offline(P, ev(0.03, 0.0049, 0.05))
    assert not decisive_offline(P, ev(0.03, float("inf"), float("inf")))
    assert not decisive_offline(P, ev(0.03, float("nan"), 0.05))


def test_the_policy_s_bounds_are_exact_each_field_alone():
    """The smallest allowed value of each field is accepted and the one below it refused, each alone (the others at
    their defaults), with the message naming the rule; confidence 0.5 is allowed, 1 is not."""
    accepted = ChallengerPolicy(cost=0.0, confidence=0.5, min_labels=1, max_windows=1, resamples=50, min_offline_rows=20, pool=0)
    assert (accepted.confidence, accepted.live_confidence, accepted.pool) == (0.5, 0.5, 0)
    for field, below in [("min_labels", 0), ("max_windows", 0), ("resamples", 49), ("min_offline_rows", 19), ("pool", -1)]:
        with pytest.raises(
            ValueError,
            match=r"^challenger policy: min_labels and max_windows must be >= 1, resamples >= 50, min_offline_rows >= 20 and pool >= 0$",
        ):
            ChallengerPolicy(**{field: below})
    with pytest.raises(ValueError, match=r"^challenger policy: confidence must be in \[0.5, 1\), got 0.49$"):
        ChallengerPolicy(confidence=0.49)
    with pytest.raises(ValueError, match=r"^challenger policy: cost must be >= 0, got -0.001$"):
        ChallengerPolicy(cost=-0.001)


def test_the_spec_sets_every_promotion_setting_and_its_defaults_are_the_policy_s():
    from aiflow.monitoring.challenger import challenger_policy_of
    from aiflow.spec import parse_spec
    from tests.aiflow.tiny import TINY

    retrain = {"cost": 0.01, "confidence": 0.8, "min_labels": 150, "challenger_windows": 6, "min_offline_rows": 70}
    policy = challenger_policy_of(parse_spec({**TINY, "monitoring": {"retrain": retrain}}, "tiny"))
    assert policy == ChallengerPolicy(cost=0.01, confidence=0.8, min_labels=150, max_windows=6, min_offline_rows=70)
    assert challenger_policy_of(parse_spec(TINY, "tiny")) == ChallengerPolicy()
