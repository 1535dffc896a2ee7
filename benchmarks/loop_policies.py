"""The retrain policies replayed on one world's score matrix (issue 21): the shipped loop and its references.

Time: after window ``v`` the loop knows the labels of windows ``<= v - delay`` and decides; a model trained then is
model ``v + 1`` (its data ends at window ``v - delay``) and, once promoted, serves from window ``v + 1`` on. A retrain
whose training windows hold a broken column (:func:`benchmarks.loop_matrix.broken_columns`) is blocked.

* ``default``: the shipped loop. The real :func:`decide` (realized signal; drift and CBPE off: no cheap estimate here)
  judges each window the champion served, as the loop's partitions do: when the window completes (its labels not
  back yet under a delay: the age signal and the guardrails count) and again when its labels arrive (re-judged: a
  retrain it already asked for is not asked twice, and one a later window already asked for supersedes it), on
  thresholds calibrated by the real :func:`calibrate` on the champion's training (train) and held-out (valid) rows. A retrain trains a challenger;
  an earlier champion that :func:`reinstatement` picks on the retrain's held-out rows serves again at once; else
  :func:`decisive_offline` on its held-out rows against the champion promotes it at once, otherwise it is scored in
  shadow and :func:`judge` decides each window on the cumulative :func:`paired_evidence` (both models on the same
  labelled rows since it started). While a challenger is in shadow, retrain verdicts are recorded as skips.
* ``never``, ``every_window``, ``schedule_s`` (retrain and promote every ``s`` windows).
* ``cara``: CARA-style cost threshold: retrain (and promote) when the summed drop of the champion's observed metric
  below its first window's, over the windows since, exceeds the retrain cost.
* ``oracle``: :func:`benchmarks.loop_matrix.oracle` with hindsight.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from aiflow.evaluation.paired import paired_evidence
from aiflow.monitoring.calibration import calibrate
from aiflow.monitoring.challenger import ChallengerPolicy, decisive_offline, earlier_champions, judge, reinstatement
from aiflow.monitoring.policy import Decision, Policy, Thresholds, WindowSignals, decide, metric_drop, rejudged, superseding_drops
from benchmarks.loop_matrix import Matrix, oracle
from benchmarks.worlds import DAY0


def default_policy() -> Policy:
    """The policy the spec ships for weekly windows (``monitoring.retrain`` defaults, read through the loop's own
    ``policy_of``: hysteresis 2, the 28-day cooldown as 4 windows, age after 5 windows, follow-up after 1), with drift
    and CBPE off: these worlds have no cheap estimate."""
    from aiflow.monitoring.monitor import policy_of
    from aiflow.spec import parse_spec
    from benchmarks.worlds import make_world, world_spec

    shipped = policy_of(parse_spec(world_spec(make_world("no_drift")), "world"))
    return dataclasses.replace(shipped, use_drift=False, use_estimated=False)


@dataclass
class Run:
    """One policy on one stream: who served each window, and what it did."""

    policy: str
    serving: list[int] = field(default_factory=list)  # the model serving each window first .. T - 1
    retrains: list[tuple[int, int]] = field(default_factory=list)  # (decision window v, model k) of each model trained
    asked: list[tuple[int, int]] = field(default_factory=list)  # (decision window v, the window judged) of each retrain
    promotions: list[tuple[int, int]] = field(default_factory=list)  # (first window served, model)
    blocked: list[int] = field(default_factory=list)  # decision windows whose retrain the column check blocked
    retired: list[tuple[int, int]] = field(default_factory=list)  # (decision window, challenger)
    reinstated: list[tuple[int, int]] = field(default_factory=list)  # (first window served again, earlier champion)
    log: list[str] = field(default_factory=list)


def _instant(m: Matrix, name: str, wants) -> Run:
    """A policy without a challenger: whatever ``wants(v, champion, since)`` says after window v is trained and promoted."""
    run = Run(name)
    champion, since = m.first, m.first
    for v in range(m.first, m.windows):
        run.serving.append(champion)
        if v + 1 >= m.windows or not wants(v, champion, since):
            continue
        k = v + 1
        if not m.trainable(k):
            run.blocked.append(v)
            continue
        run.retrains.append((v, k))
        run.promotions.append((k, k))
        champion, since = k, k
    return run


def never(m: Matrix) -> Run:
    return _instant(m, "never", lambda v, c, s: False)


def schedule(m: Matrix, every: int) -> Run:
    name = "every_window" if every == 1 else f"schedule_{every}"
    return _instant(m, name, lambda v, c, s: (v - m.first + 1) % every == 0)


def cara(m: Matrix, cost: float) -> Run:
    """Retrain when the champion's summed observed drop below its first window's metric exceeds ``cost``."""
    metric = m.world.metric

    def wants(v: int, champion: int, since: int) -> bool:
        ref, _ = m.observed(champion, since, v)
        if ref is None:
            return False
        stale = 0.0
        for u in range(since + 1, v + 1):
            value, _ = m.observed(champion, u, v)
            if value is not None:
                stale += metric_drop(metric, ref, value)
        return stale > cost

    return _instant(m, "cara", wants)


def thresholds_of(m: Matrix, k: int, policy: Policy) -> Thresholds:
    """The real calibration on model ``k``'s reference: its training rows (train) and held-out rows (valid); once per
    model and policy."""
    if ("thresholds", k, policy) in m.memo:
        return m.memo["thresholds", k, policy]
    s, X = m.stream, m.stream.X
    hold_w, hold = m.holdout[k]
    parts = []
    for w in m.train_windows[k]:
        keep = s.labelled[w].copy()
        if w == hold_w:
            keep[hold] = False
        parts.append((w, np.flatnonzero(keep), "train"))
    parts.append((hold_w, hold, "valid"))
    frames = []
    for w, rows, split in parts:
        frames.append(pl.DataFrame({
            "event_date": [DAY0 + dt.timedelta(days=7 * w)] * len(rows), "split": [split] * len(rows),
            "label": s.y[w, rows], "prediction": m.scores[k][w, rows],
            **{f"x{j}": X[w, rows, j] for j in range(X.shape[-1])},
        }))  # fmt: skip
    reference = pl.concat(frames)
    found = calibrate(reference, problem_type=m.world.task, kinds={}, drift_fn=lambda _a, _b: 0.0, policy=policy)
    m.memo["thresholds", k, policy] = found
    return found


def _signals(m: Matrix, model: int, u: int, v: int) -> WindowSignals:
    value, labelled = m.observed(model, u, v)
    start = DAY0 + dt.timedelta(days=7 * u)
    return WindowSignals(start, start + dt.timedelta(days=7), model, m.world.rows, labelled, realized_metric=value)


def _evidence(m: Matrix, champion: int, challenger: int, windows: range, v: int, cp: ChallengerPolicy):
    ys, a, b = [], [], []
    for u in windows:
        rows = m.seen(u, v)
        ys.append(m.stream.y[u, rows])
        a.append(m.scores[champion][u, rows])
        b.append(m.scores[challenger][u, rows])
    return paired_evidence(np.concatenate(ys), np.concatenate(a), np.concatenate(b), m.world.metric,
                           confidence=cp.live_confidence, resamples=cp.resamples)  # fmt: skip


def default(m: Matrix, policy: Policy | None = None, cp: ChallengerPolicy | None = None) -> Run:
    """The shipped loop (see the module docstring) with the real decide, calibrate, paired_evidence, judge."""
    policy, cp = policy or default_policy(), cp or ChallengerPolicy()
    delay = m.world.label_delay
    run = Run("default")
    champion = m.first
    thresholds = {champion: thresholds_of(m, champion, policy)}
    challenger: int | None = None
    history: list[WindowSignals] = []
    past: list[Decision] = []
    retired_at: list[dt.date] = []  # the decided windows' ends at which a challenger was retired
    for v in range(m.first, m.windows):
        run.serving.append(champion)
        promoted_now = False
        if challenger is not None:  # the shadow verdict on every labelled row both scored since it started
            evidence = _evidence(m, champion, challenger, range(challenger, v + 1), v, cp)
            verdict = judge(cp, evidence, windows=v - challenger + 1, challenger=challenger, champion=champion)
            run.log.append(f"after window {v}: {verdict.reason}")
            if verdict.action == "promote" and v + 1 < m.windows:
                run.promotions.append((v + 1, challenger))
                champion, challenger, promoted_now = challenger, None, True
                thresholds.setdefault(champion, thresholds_of(m, champion, policy))
            elif verdict.action == "retire":
                run.retired.append((v, challenger))
                retired_at.append(DAY0 + dt.timedelta(days=7 * (v - delay + 1)))  # the end of the window decided now
                challenger = None
        # as the loop's partitions: window v is judged when it completes (its labels not back yet under a delay: age and
        # the guardrails still count) and judged again when its labels arrive (window v - delay), the older first
        asked_now = False
        for u in dict.fromkeys((v - delay, v)):
            if promoted_now or u < m.first or run.serving[u - m.first] != champion:
                continue
            now = _signals(m, champion, u, v)
            history = sorted([s for s in history if s.window_start != now.window_start] + [now], key=lambda s: s.window_start)
            own = [s for s in history if s.model_version == champion and s.window_start <= now.window_start]
            before = [d for d in past if d.window_start == now.window_start]
            earlier_past = [d for d in past if d.window_start < now.window_start]
            if challenger is not None and (drops := superseding_drops(policy, thresholds[champion], now, earlier_past)):
                # a decisive drop on a window after the one the challenger's retrain was decided on: it was not trained on it
                run.retired.append((v, challenger))
                retired_at.append(now.window_end)
                run.log.append(f"after window {v}: retire challenger v{challenger}: superseded by a decisive {', '.join(drops)} drop")
                challenger = None
            later = min((d.window_start for d in past if d.action == "retrain" and d.window_start > now.window_start), default=None)
            decision = rejudged(decide(policy, thresholds[champion], own, earlier_past, running=asked_now, retired=retired_at),
                                before[-1] if before else None, later, labelled=now.labelled)  # fmt: skip
            asked = bool(before) and before[-1].action == "retrain"
            if decision.action == "retrain" and not asked:
                asked_now = True
                # promoted offline or reinstated: the windows the old champion served are no longer judged on it
                decision, challenger, champion = _retrain(m, run, policy, cp, thresholds, decision, v, u, champion, challenger)
            past = [d for d in past if d.window_start != now.window_start] + [decision]
    return run


def _retrain(m: Matrix, run: Run, policy: Policy, cp: ChallengerPolicy, thresholds: dict, decision: Decision, v: int, u: int,
             champion: int, challenger: int | None) -> tuple[Decision, int | None, int]:  # fmt: skip
    """A retrain verdict after window ``v`` (on window ``u``): train model ``v + 1`` and let it be reinstated against, promoted offline or
    put in shadow. Returns the decision (a skip when it cannot train), the challenger and the champion after it."""
    metric = m.world.metric
    k = v + 1
    why = None
    if challenger is not None:
        why = f"challenger v{challenger} in shadow"
    elif k >= m.windows:
        why = "the stream ends"
    elif not m.trainable(k):
        run.blocked.append(v)
        why = f"training blocked: broken column(s) in window(s) {m.blocked[k]}"
    if why:
        return dataclasses.replace(decision, action="skip", reason=f"skip ({why}): {decision.reason}"), challenger, champion
    run.retrains.append((v, k))
    run.asked.append((v, u))
    hold_w, hold = m.holdout[k]
    y_hold, champ_hold = m.stream.y[hold_w, hold], m.scores[champion][hold_w, hold]
    offline = paired_evidence(y_hold, champ_hold, m.scores[k][hold_w, hold], metric, confidence=cp.confidence, resamples=cp.resamples)
    served = [m.first, *(model for _w, model in run.promotions)]
    earlier = {c: paired_evidence(y_hold, champ_hold, m.scores[c][hold_w, hold], metric, confidence=cp.confidence, resamples=cp.resamples)
               for c in earlier_champions(served, current=champion, pool=cp.pool)}  # fmt: skip
    back = reinstatement(cp, offline, earlier)
    if back is not None:
        run.promotions.append((k, back))
        run.reinstated.append((k, back))
        thresholds.setdefault(back, thresholds_of(m, back, policy))
        run.log.append(f"after window {v}: {decision.reason} -> v{back} reinstated ({earlier[back].describe()}; "
                       f"the retrain v{k}: {offline.describe()})")  # fmt: skip
        return decision, None, back
    if decisive_offline(cp, offline):
        run.promotions.append((k, k))
        thresholds.setdefault(k, thresholds_of(m, k, policy))
        run.log.append(f"after window {v}: {decision.reason} -> v{k} promoted offline ({offline.describe()})")
        return decision, None, k
    run.log.append(f"after window {v}: {decision.reason} -> v{k} in shadow ({offline.describe()})")
    return decision, k, champion
    return run


def oracle_run(m: Matrix, cost: float) -> Run:
    available = [m.trainable(k) for k in range(m.windows)]
    _, serving = oracle(m.loss, available, m.first, cost)
    run = Run("oracle", serving=serving)
    for i in range(1, len(serving)):
        if serving[i] != serving[i - 1]:
            w = m.first + i
            run.retrains.append((serving[i] - 1, serving[i]))
            run.promotions.append((w, serving[i]))
    return run
