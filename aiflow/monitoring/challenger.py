"""Champion and challenger: a retrain trains a *challenger*; it is promoted only on evidence that it is better.

A trigger (a signal of the policy, the fallback schedule) starts a retrain; the retrained model passes the offline
gates, then, with a champion serving, it becomes the ``challenger`` alias: the server scores every request with it
in shadow (never answered). Each monitoring window then compares the two on the same labelled live rows — the
records both scored — with a paired bootstrap (the same resampled rows for both models), and decides:

* **promote** when the challenger is better with the stated confidence, split over the windows it may be judged in
  (:attr:`ChallengerPolicy.live_confidence`: the one-sided lower bound of the gain is above 0) and its expected gain is at least the cost of a promotion (``monitoring.retrain.cost``);
* **retire** when it is not better by the cost with that confidence (the upper bound of the gain is below the
  cost), or when ``max_windows`` windows in shadow were not enough to decide; the champion keeps serving;
* **wait** otherwise (too few labelled rows, or undecided).

The offline evidence of the validation step (candidate and champion on the same held-out rows) promotes at once
when it is already decisive: its *lower* bound is at least the cost.

**Earlier champions** are candidates too: a concept that comes back (a season, a regime) was already learnt by the
champion that served it. The validation step also scores the ``pool`` most recent earlier champions on the same held-out
rows; when one of them is decisive against the current champion and surer than the retrain (a higher lower bound), it
is *reinstated* (:func:`reinstatement`): it serves again at once, and the retrain is registered without an alias.

The gain is ``challenger - champion`` for a higher-is-better metric (ROC AUC, accuracy) and the relative error
reduction ``(champion - challenger) / champion`` for an error (RMSE, MAE), so one cost reads the same way for both.

Pure functions: arrays in, an :class:`Evidence` and a :class:`Verdict` out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiflow.evaluation.paired import Evidence


@dataclass(frozen=True)
class ChallengerPolicy:
    """When a challenger replaces the champion (see the module docstring).

    Attributes:
        cost: the gain a promotion must at least bring, in the metric's units (absolute for ROC AUC / accuracy,
            relative error reduction for RMSE / MAE): what one retrain and swap is worth over a window.
        confidence: one-sided confidence of the bounds (0.9: the gain is above its lower bound 90 % of the time).
        min_labels: labelled rows both models scored before live evidence counts.
        min_offline_rows: held-out test rows the offline evidence needs before it may promote at once. Fewer than
            ``min_labels``: the bootstrap's lower bound already widens with fewer rows, and a world with sparse, late
            labels may hold a decisive gain on 70 rows that live evidence takes windows to confirm.
        max_windows: windows in shadow after which an undecided challenger is retired.
        resamples: bootstrap resamples.
        pool: earlier champions (most recent first) the offline comparison scores beside a retrain; 0: none.
    """

    cost: float = 0.002
    confidence: float = 0.9
    min_labels: int = 200
    max_windows: int = 4
    resamples: int = 400
    min_offline_rows: int = 50
    pool: int = 3

    @property
    def live_confidence(self) -> float:
        """The confidence of each live look: a challenger is judged after each of up to ``max_windows`` windows on
        cumulating evidence, and a bound at ``confidence`` at every look would promote a challenger that is no better
        more often than ``1 - confidence`` over its time in shadow (repeated testing); split over the looks
        (Bonferroni), the whole shadow period keeps that error within ``1 - confidence`` (0.9 and 4 windows: 0.975 a
        look). The offline evidence is one look: it keeps ``confidence``."""
        return 1 - (1 - self.confidence) / self.max_windows

    def __post_init__(self) -> None:
        if self.cost < 0:
            raise ValueError(f"challenger policy: cost must be >= 0, got {self.cost}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"challenger policy: confidence must be in [0.5, 1), got {self.confidence}")
        if self.min_labels < 1 or self.max_windows < 1 or self.resamples < 50 or self.min_offline_rows < 20 or self.pool < 0:
            raise ValueError("challenger policy: min_labels and max_windows must be >= 1, resamples >= 50, min_offline_rows >= 20 "
                             "and pool >= 0")  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What happens to the challenger after a window: ``promote``, ``retire`` or ``wait``, and why."""

    action: str
    reason: str
    evidence: Evidence


def judge(policy: ChallengerPolicy, evidence: Evidence, *, windows: int, challenger: int, champion: int) -> Verdict:
    """The verdict on challenger v``challenger`` after ``windows`` windows in shadow beside champion v``champion``.

    ``evidence`` is on every labelled row both scored since the challenger was set (cumulative: a verdict gets surer
    as windows pass, never forgets a window)."""
    said = evidence.describe()
    who = f"challenger v{challenger} vs champion v{champion}"
    if evidence.gain is None or evidence.rows < policy.min_labels:
        if windows >= policy.max_windows:
            return Verdict("retire", f"retire {who}: still too little evidence after {windows} window(s) in shadow ({said}; "
                           f"needs {policy.min_labels} labelled rows)", evidence)  # fmt: skip
        return Verdict("wait", f"wait: {who} has too little evidence yet ({said}; needs {policy.min_labels})", evidence)
    assert evidence.low is not None and evidence.high is not None
    if evidence.low > 0 and evidence.gain >= policy.cost:
        return Verdict("promote", f"promote {who}: better with {evidence.confidence:.1%} confidence and by at least the cost "
                       f"{policy.cost} ({said})", evidence)  # fmt: skip
    if evidence.high < policy.cost:
        return Verdict("retire", f"retire {who}: not better by the cost {policy.cost} with {evidence.confidence:.1%} "
                       f"confidence ({said})", evidence)  # fmt: skip
    if windows >= policy.max_windows:
        return Verdict("retire", f"retire {who}: undecided after {windows} window(s) in shadow ({said})", evidence)
    return Verdict("wait", f"wait: {who} undecided ({said})", evidence)


def decisive_offline(policy: ChallengerPolicy, evidence: Evidence) -> bool:
    """Whether offline evidence (the validation step's held-out rows) already promotes: its lower bound clears the cost,
    on at least ``min_offline_rows`` rows."""
    return (evidence.low is not None and evidence.rows >= policy.min_offline_rows and evidence.low >= policy.cost
            and math.isfinite(evidence.low))  # fmt: skip


def earlier_champions(events: Sequence[int | None], *, current: int | None, pool: int) -> list[int]:
    """The ``pool`` most recent versions the champion alias pointed at before, newest first, without ``current``.

    ``events`` are the champion alias's versions oldest first (None: removed)."""
    seen = dict.fromkeys(v for v in reversed(events) if v is not None and v != current)
    return list(seen)[:pool]


def reinstatement(policy: ChallengerPolicy, retrain: Evidence | None, earlier: Mapping[int, Evidence]) -> int | None:
    """The earlier champion to reinstate instead of deciding on the retrain, or None.

    ``earlier`` maps each earlier champion's version to its offline evidence against the current champion on the
    retrain's held-out rows (``retrain``: the retrain's on the same rows). The one with the highest lower bound is
    reinstated when that evidence is decisive (:func:`decisive_offline`) and its lower bound is above the retrain's: a
    retrain as good or better is preferred (it is the newer model, and it is already trained)."""
    usable = {v: e for v, e in earlier.items() if e.low is not None and math.isfinite(e.low)}
    if not usable:
        return None
    best = max(usable, key=lambda v: (usable[v].low, v))
    if not decisive_offline(policy, usable[best]):
        return None
    if retrain is not None and retrain.low is not None and math.isfinite(retrain.low) and retrain.low >= usable[best].low:
        return None
    return best


def challenger_policy_of(spec) -> ChallengerPolicy:
    """The spec's ``monitoring.retrain`` promotion settings as a :class:`ChallengerPolicy`."""
    r = spec.monitoring.retrain
    return ChallengerPolicy(cost=r.cost, confidence=r.confidence, min_labels=r.min_labels, max_windows=r.challenger_windows,
                            min_offline_rows=r.min_offline_rows, pool=r.pool)  # fmt: skip
