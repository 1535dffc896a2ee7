"""The retrain policy: given the signals of the newest monitoring window, retrain or skip, and say why.

Pure functions, no I/O, deterministic. Everything is keyed on data time (the windows' dates), never on the wall
clock: replaying the same history and past decisions gives the same decision.

Signals (each may be switched off): the weighted drift share of the window, the drop of the CBPE-estimated metric
and the drop of the realized metric below the model's reference metric. The drop is ``reference - metric`` for a
higher-is-better metric (ROC AUC) and the relative increase ``(metric - reference) / reference`` for an error
(RMSE, MAE). Guardrails, in the order they are checked: enough rows in the window, a signal over its threshold,
held for ``hysteresis`` windows in a row (of the same model version), outside the cooldown after the last
retrain, within the budget, and no retrain already running.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction

SIGNALS = ("drift", "estimated", "realized", "age")
#: Whether a higher value of each monitored metric is better.
HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "rmse": False, "mae": False}


@dataclass(frozen=True)
class Policy:
    """When a monitoring window may start a retrain.

    Attributes:
        min_rows: scored rows a window needs before any of its signals counts.
        min_labels: labelled rows a window needs before its realized metric counts.
        use_drift: whether the weighted drift share may fire.
        use_estimated: whether the drop of the CBPE-estimated metric may fire.
        use_realized: whether the drop of the realized metric may fire.
        hysteresis: windows in a row (same model version) in which a signal must be over its threshold.
        decisive_drop: a metric drop (estimated or realized) at least this many times its threshold fires at once,
            without waiting for ``hysteresis``: hysteresis guards against a window's sampling noise, and a drop that far
            past a threshold already above that noise is not noise (None: every drop waits). A concept that flips
            back and forth every few windows is otherwise served wrong for a whole window more each time.
        cooldown_days: days of data time after a retrain's window end during which nothing fires (when
            ``cooldown_windows`` is None). A cooldown ends early once the retrain's product serves the window.
        cooldown_windows: monitored windows after a retrain's window during which nothing fires (the loop sets it
            from the spec: days alone let a 28-day cooldown block nothing under monthly windows).
        budget: at most this many retrains in any ``budget_days`` of data time.
        budget_days: the budget's span in days of data time.
        budget_burst: paces the budget (None: off): at most this many retrains in a burst, the budget coming back at
            its average rate (``budget`` per ``budget_days``) after each, as a token bucket. Without it a world that
            keeps changing spends the whole budget in one month and nothing retrains for the rest of ``budget_days``.
        fallback_drift_share: drift-share threshold when the reference cannot be calibrated.
        fallback_drop: metric-drop threshold when it cannot be calibrated (absolute for ROC AUC / accuracy).
        fallback_relative_increase: relative-increase threshold for RMSE / MAE when it cannot be calibrated.
        min_drift_share: floor of a calibrated drift-share threshold (a perfectly stable reference gives 0).
        min_drop: floor of a calibrated drop threshold (absolute, or relative for RMSE / MAE).
        max_age_windows: the ``age`` signal: fires once the serving version has served this many monitored windows
            since it started or since the last retrain, whichever is later (None: off). It asks "would a model trained
            on the newest data be better?" when no other signal can: under shadow promotion it costs a challenger's
            training, and only live evidence promotes.
        follow_up_windows: the age limit of a champion that is itself the product of a retrain a change started (it
            started serving after the last retrain, and a drift or metric signal fired that retrain, or it was such a
            follow-up itself): a world that just changed enough for a challenger to win may not have finished changing
            (its training window straddles the change), so it is challenged again after this many windows, until a
            challenger fails to win (then ``max_age_windows`` applies). The product of a retrain fired by age alone
            waits ``max_age_windows``: nothing was seen changing. None: off.
    """

    min_rows: int = 500
    min_labels: int = 200
    use_drift: bool = True
    use_estimated: bool = True
    use_realized: bool = True
    hysteresis: int = 2
    decisive_drop: float | None = 3.0
    cooldown_days: int = 14
    cooldown_windows: int | None = None
    budget: int = 4
    budget_days: int = 90
    budget_burst: int | None = None
    fallback_drift_share: float = 0.3
    fallback_drop: float = 0.03
    fallback_relative_increase: float = 0.1
    min_drift_share: float = 0.05
    min_drop: float = 0.01
    max_age_windows: int | None = None
    follow_up_windows: int | None = None

    def __post_init__(self) -> None:
        for name in ("min_rows", "min_labels", "cooldown_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"policy field {name!r} must be >= 0, got {getattr(self, name)}")
        if self.decisive_drop is not None and not self.decisive_drop > 1:
            raise ValueError(f"policy field 'decisive_drop' must be > 1 or None, got {self.decisive_drop}")
        if self.budget_burst is not None and self.budget_burst < 1:
            raise ValueError(f"policy field 'budget_burst' must be >= 1 or None, got {self.budget_burst}")
        for name in ("hysteresis", "budget", "budget_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"policy field {name!r} must be >= 1, got {getattr(self, name)}")
        for name in ("fallback_drift_share", "fallback_drop", "fallback_relative_increase", "min_drift_share", "min_drop"):
            if not getattr(self, name) > 0:
                raise ValueError(f"policy field {name!r} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class WindowSignals:
    """What monitoring measured on one window of data time (``window_start`` inclusive, ``window_end`` exclusive)."""

    window_start: dt.date
    window_end: dt.date
    model_version: int
    rows: int
    labelled: int = 0
    drift_share: float | None = None  # importance-weighted share of drifted columns
    estimated_metric: float | None = None  # CBPE (classification only)
    realized_metric: float | None = None


@dataclass(frozen=True)
class Thresholds:
    """The thresholds the signals are judged by, and how they were obtained.

    Attributes:
        metric: the monitored metric (``roc_auc`` for classification, ``rmse`` for regression).
        drift_share: a window's weighted drift share fires above this.
        estimated_drop: the estimated metric's drop below ``reference_metric`` fires above this.
        realized_drop: the realized metric's drop below ``reference_metric`` fires above this.
        reference_metric: the metric on the reference's valid rows (None: metric signals cannot fire).
        source: ``"calibrated"`` (from reference chunks) or ``"fallback"`` (the policy's fixed values).
        chunks: reference chunks the calibration used (0 for fallback).
    """

    metric: str
    drift_share: float
    estimated_drop: float
    realized_drop: float
    reference_metric: float | None
    source: str = "fallback"
    chunks: int = 0
    noise_std: float | None = None  # the metric's bootstrap std on ``noise_rows`` reference rows (relative for RMSE / MAE)
    noise_rows: int = 0
    noise_k: float = 3.0

    def noise_floor(self, rows: int) -> float:
        """The smallest drop a window of ``rows`` rows can show beyond sampling noise; 0 without a measured noise or rows.

        A drop compares two estimates, each with its own sampling noise: the reference metric (std ``noise_std`` on
        ``noise_rows`` rows) and the window's (the same std scaled by √(n₀ / n)), so the floor is
        k · std · √(1 + n₀ / n). A small reference (a fallback on a few dozen held-out rows) has a wide floor."""
        if not self.noise_std or self.noise_rows <= 0 or rows <= 0:
            return 0.0
        return self.noise_k * self.noise_std * (1 + self.noise_rows / rows) ** 0.5

    def __post_init__(self) -> None:
        if self.metric not in HIGHER_IS_BETTER:
            raise ValueError(f"thresholds field 'metric' must be one of {sorted(HIGHER_IS_BETTER)}, got {self.metric!r}")
        if self.source not in ("calibrated", "fallback"):
            raise ValueError(f"thresholds field 'source' must be 'calibrated' or 'fallback', got {self.source!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Thresholds:
        # a row saved before the noise floor existed has nulls there: the defaults (no floor)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data and not (k.startswith("noise_") and data[k] is None)})


def fallback_thresholds(policy: Policy, metric: str, reference_metric: float | None = None) -> Thresholds:
    """The policy's fixed thresholds, for when the reference is too small to calibrate on."""
    drop = policy.fallback_drop if HIGHER_IS_BETTER.get(metric, True) else policy.fallback_relative_increase
    return Thresholds(metric, policy.fallback_drift_share, drop, drop, reference_metric, "fallback", 0)


def metric_drop(metric: str, reference: float, value: float) -> float:
    """How far ``value`` fell below ``reference``: absolute for higher-is-better metrics, relative increase for errors."""
    if HIGHER_IS_BETTER[metric]:
        return reference - value
    return (value - reference) / reference if reference > 0 else value - reference


@dataclass(frozen=True)
class Decision:
    """The policy's verdict on one window, with a readable reason and the numbers behind it."""

    window_start: dt.date
    window_end: dt.date
    model_version: int
    action: str  # "retrain" | "skip"
    reason: str
    signals: dict[str, float | None] = field(default_factory=dict)  # drift_share, estimated_drop, realized_drop
    thresholds: Thresholds | None = None
    fired: tuple[str, ...] = ()

    def to_row(self) -> dict:
        """A flat row for a decisions table (thresholds and signals as columns)."""
        t = self.thresholds
        return {
            "window_start": self.window_start,
            "window_end": self.window_end,
            "model_version": self.model_version,
            "action": self.action,
            "reason": self.reason,
            "fired": ",".join(self.fired),
            **{f"signal_{k}": self.signals.get(k) for k in ("drift_share", "estimated_drop", "realized_drop")},
            "threshold_metric": t.metric if t else None,
            "threshold_drift_share": t.drift_share if t else None,
            "threshold_estimated_drop": t.estimated_drop if t else None,
            "threshold_realized_drop": t.realized_drop if t else None,
            "reference_metric": t.reference_metric if t else None,
            "threshold_source": t.source if t else None,
        }

    @classmethod
    def from_row(cls, row: Mapping) -> Decision:
        """A past decision read back from a decisions-table row (what :func:`decide` needs of it)."""
        fired = tuple(s for s in (row.get("fired") or "").split(",") if s)
        return cls(row["window_start"], row["window_end"], int(row["model_version"]), row["action"], row.get("reason", ""), fired=fired)


def _signal_values(s: WindowSignals, t: Thresholds) -> dict[str, float | None]:
    ref = t.reference_metric

    def drop(value: float | None) -> float | None:
        return None if value is None or ref is None else metric_drop(t.metric, ref, value)

    return {"drift_share": s.drift_share, "estimated_drop": drop(s.estimated_metric), "realized_drop": drop(s.realized_metric)}


def _drop_limit(t: Thresholds, s: WindowSignals, name: str) -> float:
    """The threshold a metric drop (``estimated`` or ``realized``) of window ``s`` is judged by: the calibrated one, never
    below the sampling noise of the window's rows (scored rows for the estimate, labelled rows for the realized metric)."""
    if name == "estimated":
        return max(t.estimated_drop, t.noise_floor(s.rows))
    return max(t.realized_drop, t.noise_floor(s.labelled))


def _fired(policy: Policy, t: Thresholds, s: WindowSignals) -> tuple[list[str], list[str]]:
    """The signals over their thresholds in window ``s``, and one phrase per signal saying where it stands."""
    if s.rows < policy.min_rows:
        return [], []
    values = _signal_values(s, t)
    fired, notes = [], []
    # a metric threshold is never below the window's own sampling noise (thresholds stay stable across versions)
    checks = [
        ("drift", policy.use_drift, values["drift_share"], t.drift_share, "weighted drift share", True),
        ("estimated", policy.use_estimated, values["estimated_drop"], _drop_limit(t, s, "estimated"), f"estimated {t.metric} drop", True),
        ("realized", policy.use_realized, values["realized_drop"], _drop_limit(t, s, "realized"), f"realized {t.metric} drop",
         s.labelled >= policy.min_labels),
    ]  # fmt: skip
    for name, enabled, value, limit, label, enough in checks:
        if not enabled:
            continue
        if name == "realized" and not enough:
            notes.append(f"{label} not counted ({s.labelled} labels < {policy.min_labels})")
        elif value is None:
            notes.append(f"{label} not available")
        elif value > limit:
            fired.append(name)
            notes.append(f"{label} {value:.3f} > {limit:.3f}")
        else:
            notes.append(f"{label} {value:.3f} <= {limit:.3f}")
    return fired, notes


def decide(policy: Policy, thresholds: Thresholds, history: Sequence[WindowSignals], past: Sequence[Decision], *,
           running: bool, retired: Sequence[dt.date] = ()) -> Decision:  # fmt: skip
    """Retrain or skip for the newest window of ``history``.

    Args:
        policy: the guardrails.
        thresholds: the serving model's thresholds (calibrated on its reference, or fallback).
        history: the monitoring windows in data-time order, newest last (earlier ones count for hysteresis).
        past: earlier decisions (only retrains matter: cooldown and budget); decisions about windows ending after
            the newest window are ignored, so replaying history gives the same answers.
        running: whether a retrain of this dataset is in progress now.
        retired: the window ends of the windows at which a challenger was retired (it lost, or stayed undecided): a
            retrain whose challenger was retired after it no longer holds a cooldown (nothing it produced serves, and
            the windows since were judged by the champion it left in place).

    Returns:
        The decision, with one readable sentence saying why, the signal values and the thresholds.
    """
    if not history:
        raise ValueError("decide needs at least one monitoring window in history")
    now = history[-1]
    values = _signal_values(now, thresholds)

    def verdict(action: str, reason: str, fired: Sequence[str] = ()) -> Decision:
        return Decision(now.window_start, now.window_end, now.model_version, action, reason, values, thresholds, tuple(fired))

    span = f"window {now.window_start} to {now.window_end}"
    if now.rows < policy.min_rows:
        return verdict("skip", f"skip: {span} has too few rows to judge ({now.rows} < {policy.min_rows}).")
    fired, notes = _fired(policy, thresholds, now)
    retrains = sorted((d for d in past if d.action == "retrain" and d.window_end <= now.window_end), key=lambda d: d.window_end)
    if policy.max_age_windows is not None and now.rows >= policy.min_rows:
        since = retrains[-1].window_start if retrains else None
        own = [s.window_start for s in history if s.model_version == now.model_version]
        age = sum(1 for start in own if since is None or start > since)
        follow_up = policy.follow_up_windows is not None and since is not None and min(own) > since and _change_driven(retrains, past)
        limit = min(policy.follow_up_windows, policy.max_age_windows) if follow_up else policy.max_age_windows
        why = "since a retrain's product started: the world may still be changing" if follow_up else "since it started or the last retrain"
        if age >= limit:
            fired.append("age")
            notes.append(f"age {age} windows >= {limit} (served by v{now.model_version} {why})")
        else:
            notes.append(f"age {age} of {limit} windows")
    if not fired:
        said = "; ".join(notes) or "every signal is switched off"
        return verdict("skip", f"skip: no signal crossed its threshold in {span} ({said}).")
    # hysteresis: the trailing windows of the same model version in which each signal fired
    # drift is judged against the recent range as well as the reference (aiflow.monitoring.monitor._compare): it is
    # news once, when the data leaves where it was; a drop in a metric must hold
    # a drop decisive_drop times past its threshold (itself above the window's noise) is not noise: it needs no second window
    decisive = set(decisive_drops(policy, thresholds, now))
    need = {n: 1 if n in ("drift", "age") or n in decisive else policy.hysteresis for n in fired}
    held: dict[str, int] = {"age": 1}
    for name in fired:
        if name == "age":
            continue
        run = 0
        for s in reversed(history):
            if s.model_version != now.model_version or name not in _fired(policy, thresholds, s)[0]:
                break
            run += 1
            if run == need[name]:
                break
        held[name] = run
    holding = [n for n in fired if held[n] >= need[n]]
    if not holding:
        waits = ", ".join(f"{n} held {held[n]} of {need[n]} windows" for n in fired)
        return verdict("skip", f"skip: signals crossed but hysteresis not yet met in {span} ({waits}; {'; '.join(notes)}).", fired)
    # the cooldown keeps a retrain from judging windows still served by the version it was decided on; once another
    # version serves (the retrain's product, promoted), that hole is closed and the cooldown is over: its follow-up may
    # challenge it at once (under the 28-day default, a half-stale product served 4 windows more)
    last = retrains[-1] if retrains and now.model_version == retrains[-1].model_version else None
    if last is not None and any(last.window_end < r <= now.window_end for r in retired):
        last = None  # its challenger was retired: the cooldown is over
    if last is not None and policy.cooldown_windows is not None:
        # now is the n-th monitored window after the retrain's (every monitored window has a decision)
        n = 1 + len({d.window_start for d in past if last.window_start < d.window_start < now.window_start})
        if n <= policy.cooldown_windows:
            return verdict(
                "skip",
                f"skip: cooldown, window {n} of {policy.cooldown_windows} after the retrain for the window starting "
                f"{last.window_start} ({', '.join(holding)} fired in {span}).",
                holding,
            )
    elif last is not None:
        until = last.window_end + dt.timedelta(days=policy.cooldown_days)
        if now.window_end < until:
            return verdict(
                "skip",
                f"skip: cooldown until {until} after the retrain for the window ending {last.window_end} "
                f"({', '.join(holding)} fired in {span}).",
                holding,
            )
    since = now.window_end - dt.timedelta(days=policy.budget_days)
    recent = [d for d in retrains if d.window_end > since]
    if len(recent) >= policy.budget:
        return verdict(
            "skip",
            f"skip: retrain budget exhausted ({len(recent)} retrains in the last {policy.budget_days} days of data time, "
            f"since {since}; budget {policy.budget}) although {', '.join(holding)} fired in {span}.",
            holding,
        )
    paced = next_paced_retrain(policy, [d.window_end for d in retrains])
    if paced is not None and now.window_end < paced:
        return verdict(
            "skip",
            f"skip: retrain budget paced ({policy.budget_burst} retrains in a burst, then {policy.budget} per "
            f"{policy.budget_days} days of data time): the next retrain may come from the window ending {paced}, "
            f"although {', '.join(holding)} fired in {span}.",
            holding,
        )
    fired_notes = "; ".join(n for n in notes if any(n.startswith(p) for p in _labels(thresholds, holding)))
    if running:
        return verdict("skip", f"skip: a retrain is already running ({fired_notes} in {span}).", holding)
    held_for = f"decisive: at least {policy.decisive_drop:g} times its threshold, no hysteresis" if decisive & set(holding) else f"held {policy.hysteresis} window(s)"
    return verdict("retrain", f"retrain: {fired_notes} in {span}, {held_for}.", holding)


def rejudged(decision: Decision, before: Decision | None, later: dt.date | None, *, labelled: int) -> Decision:
    """The verdict on a window judged again (its labels arrived, or a run retried), from ``decision`` (what :func:`decide`
    says now), ``before`` (the window's earlier verdict, if any) and ``later`` (the start of a later window that already
    retrained, if any): a retrain the window asked for stays asked — its numbers updated, never a second run — and a
    retrain asked only now is superseded by the later window's (an older window never retrains after a newer one did)."""
    if before is not None and before.action == "retrain":
        return replace(decision, action="retrain", reason=f"{before.reason} Re-judged with {labelled} labels: {decision.reason}",
                       fired=decision.fired or before.fired)  # fmt: skip
    if decision.action == "retrain" and later is not None:
        return replace(decision, action="skip", reason=f"skip: superseded: the later window {later} already retrained ({decision.reason})")
    return decision


def _change_driven(retrains: Sequence[Decision], past: Sequence[Decision]) -> bool:
    """Whether the last of ``retrains`` answered a change: a drift or metric signal fired, or it was the follow-up of a
    retrain that did (the version it was decided on was the product of the retrain before it). A retrain fired by age
    alone found nothing changed: its product waits the normal age limit, not a follow-up (the demo year: 2 retrains fewer,
    a better worst week; benchmarks/README.md). A retrain recorded without its signals counts as a change."""
    last, earlier = retrains[-1], retrains[:-1]
    if set(last.fired) != {"age"}:
        return True
    if not earlier:
        return False
    first_judged = min(d.window_start for d in [*past, last] if d.model_version == last.model_version)
    return first_judged > earlier[-1].window_start and _change_driven(earlier, past)


def decisive_drops(policy: Policy, thresholds: Thresholds, now: WindowSignals) -> tuple[str, ...]:
    """The metric drops (``estimated``, ``realized``) of window ``now`` that fired at least ``decisive_drop`` times
    their threshold: not noise, they need no hysteresis, and a challenger trained before them is superseded."""
    if policy.decisive_drop is None:
        return ()
    fired, _ = _fired(policy, thresholds, now)
    values = _signal_values(now, thresholds)
    return tuple(n for n in fired if n in ("estimated", "realized") and values[f"{n}_drop"] is not None
                 and values[f"{n}_drop"] >= policy.decisive_drop * _drop_limit(thresholds, now, n))  # fmt: skip


def superseding_drops(policy: Policy, thresholds: Thresholds, now: WindowSignals, past: Sequence[Decision]) -> tuple[str, ...]:
    """The decisive drops of window ``now`` that supersede a challenger waiting in shadow: the world moved past its
    training data (a window after the one the last retrain, the challenger's, was decided on). Empty: it keeps waiting."""
    asked = max((d.window_start for d in past if d.action == "retrain"), default=None)
    if asked is None or now.window_start <= asked:
        return ()
    return decisive_drops(policy, thresholds, now)


def next_paced_retrain(policy: Policy, retrains: Sequence[dt.date]) -> dt.date | None:
    """The first window end at which the paced budget allows another retrain after ``retrains`` (their window ends).

    A token bucket of ``budget_burst`` tokens, full at the start, one spent per retrain, refilled at ``budget`` per
    ``budget_days`` days of data time (exact fractions: a date on the boundary is allowed). None when pacing is off or
    nothing has been spent."""
    if policy.budget_burst is None or not retrains:
        return None
    rate = Fraction(policy.budget, policy.budget_days)  # tokens per day
    tokens, last = Fraction(policy.budget_burst), None
    for end in sorted(retrains):
        if last is not None:
            tokens = min(Fraction(policy.budget_burst), tokens + (end - last).days * rate)
        tokens, last = tokens - 1, end
    return last + dt.timedelta(days=max(0, math.ceil((1 - tokens) / rate)))


def _labels(t: Thresholds, names: Sequence[str]) -> list[str]:
    label = {"drift": "weighted drift share", "estimated": f"estimated {t.metric} drop", "realized": f"realized {t.metric} drop", "age": "age"}
    return [label[n] + " " for n in names]
