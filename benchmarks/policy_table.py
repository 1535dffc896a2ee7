"""Retrain policy over the demo year (issue 12): for each candidate policy, the retrains it starts and the live ROC AUC it gets.

An engine-level replay of the closed loop (no Dagster, no HTTP server; ``aiflow replay`` runs the real
thing once, too slowly to run once per policy):

1. The lake is built once, as the main job lands it: the first quarter, then the rest of the year, each through
   the engine calls the data-plane assets make (ingest → refresh_silver → refresh_features), so the feature
   state is fitted on the first quarter's training window as in the main job.
2. A model "trained at week W" (a Monday) trains with :func:`aiflow.train.loop.train` on the features table,
   the spec's relative split replaced by the fixed split it resolves to when the newest data is the Sunday
   before W (train 62 days, valid 14, test 14). Models are cached by W (and on disk under ``--out``): every
   policy that retrains at W gets the same model. The first model is trained at 2013-04-01 (data to 03-31).
3. Each weekly window 2013-04-01 .. 2013-12-29 is scored by the policy's serving model on the window's
   features rows; its signals are computed as the monitoring pass does (``aiflow.monitoring.monitor``):
   the importance-weighted drift share (``detect_drift`` against the serving model's reference train rows,
   the spec's drift settings, the prediction column included), the CBPE-estimated ROC AUC (the calibrator
   fitted on the reference valid rows) and the realized ROC AUC (labels assumed back when the window is
   decided, as in the main job). Thresholds are calibrated once per model exactly as ``thresholds_for`` does.
   ``decide`` sees the serving version's windows (hysteresis) and every earlier decision (cooldown, budget).
   A retrain decided at window W deploys the model trained at W + 7 days (data through W's Sunday) from the
   next window on. There is no champion gate here (the main job has the gates): every retrain deploys.

Run: ``python -m benchmarks.policy_table [--out DIR]`` (a temp dir by default; re-running with the same
``--out`` reuses the lake and the trained models).
"""

from __future__ import annotations

import os

# as the training entrypoint does: idle OpenMP workers sleep instead of spinning on the shared cores
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from aiflow.data.demo import write_landing
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.data.split import split_windows
from aiflow.evaluation.paired import paired_evidence
from aiflow.models.bundle import LoadedModel, load_bundle
from aiflow.models.reference import LABEL, PREDICTION, load_reference
from aiflow.monitoring.challenger import ChallengerPolicy, challenger_policy_of, decisive_offline, earlier_champions, judge, reinstatement
from aiflow.monitoring.drift import columns_share, detect_drift, weighted_share
from aiflow.monitoring.monitor import ModelContext, _drift_options, policy_of, thresholds_for
from aiflow.monitoring.performance import Calibrator, live_performance
from aiflow.monitoring.policy import Decision, Policy, Thresholds, WindowSignals, decide, superseding_drops
from aiflow.monitoring.windows import window_expr
from aiflow.spec import EVENT_DATE, DatasetSpec, Split, demo_spec_path, load_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from aiflow.train.contract import TrainParams
from aiflow.train.loop import train
from aiflow.train.request import pinned_request

FIRST_DAY = dt.date(2013, 1, 1)
FIRST_TRAIN_DAYS = 90  # January to March, as ./scripts/demo (aiflow replay) lands it first
LOOP_START = dt.date(2013, 4, 1)  # a Monday: the first monitored window and the first model's week
LAST_DAY = dt.date(2013, 12, 29)  # a Sunday: the last monitored window ends here


def say(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------------------------------ lake
def run_data_plane(lake: Lake, landing: Path, spec: DatasetSpec) -> int:
    """Ingest, cleanse and build features for whatever the landing zone holds (the assets' engine calls)."""
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    for table in spec.tables:
        refresh_silver(lake, table)
    refresh_features(lake, spec)
    return lake.version(Tables.features(spec.name))


def build_lake(out: Path, spec: DatasetSpec) -> Lake:
    """The lake holding the year's features, landed as the main job lands it (reused when ``out`` has it)."""
    lake = Lake(out / "lake")
    features = Tables.features(spec.name)
    if lake.exists(features):
        last = lake.scan(features).select(pl.col(EVENT_DATE).max()).collect().item()
        if last is not None and last >= LAST_DAY:
            say(f"lake: reusing {lake.uri(features)} (data to {last})")
            return lake
    landing = out / "landing"
    t0 = time.monotonic()
    write_landing(landing, start=FIRST_DAY, days=FIRST_TRAIN_DAYS)
    run_data_plane(lake, landing, spec)
    write_landing(landing, start=LOOP_START)
    version = run_data_plane(lake, landing, spec)
    rows = lake.scan(features).select(pl.len()).collect().item()
    say(f"lake: features v{version}, {rows:,} rows, built in {time.monotonic() - t0:.0f} s")
    return lake


# ---------------------------------------------------------------------------------------------- models
@dataclasses.dataclass(frozen=True)
class Served:
    """A model trained at ``week`` (data through the Sunday before it), with what monitoring needs of it."""

    week: dt.date
    version: int  # stands for the registry version: the weeks since the first model, plus one
    model: LoadedModel
    context: ModelContext
    thresholds: Thresholds
    family: str
    valid_roc_auc: float
    train_s: float


def week_split(spec: DatasetSpec, week: dt.date) -> Split:
    """The fixed split the spec's relative split resolves to when the newest event date is the Sunday before ``week``."""
    return split_windows(spec.split, [week - dt.timedelta(days=1)]).as_split()


class Models:
    """Models by training week: trained once (kept on disk under ``out``), loaded, with thresholds calibrated once."""

    def __init__(self, lake: Lake, spec: DatasetSpec, out: Path, params: TrainParams):
        self.lake, self.spec, self.params = lake, spec, params
        self.artifacts = out / "artifacts"
        self.index_path = out / "models.json"
        self.index: dict[str, dict] = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        # thresholds_for keeps its thresholds in the monitoring history of a lake: a scratch one, never the data lake
        self.scratch = Lake(out / "monitoring_scratch")
        self.loaded: dict[dt.date, Served] = {}

    def get(self, week: dt.date) -> Served:
        if week not in self.loaded:
            self.loaded[week] = self._load(week)
        return self.loaded[week]

    def _load(self, week: dt.date) -> Served:
        key = week.isoformat()
        if key not in self.index:
            split = week_split(self.spec, week)
            spec = self.spec.model_copy(update={"split": split})
            request = pinned_request(self.lake, spec, self.params, str(self.artifacts), f"policy-table-{key}", "policy table")
            t0 = time.monotonic()
            result = train(request, log=lambda _line: None)
            self.index[key] = {
                "artifact_uri": result.artifact_uri, "artifact_sha256": result.artifact_sha256, "bundle_files": result.bundle_files,
                "family": result.family, "valid_roc_auc": result.metrics.get("roc_auc"), "train_s": round(time.monotonic() - t0, 1),
                "split": split.model_dump(mode="json"), "rows_train": result.rows_train, "rows_valid": result.rows_valid,
            }  # fmt: skip
            self.index_path.write_text(json.dumps(self.index, indent=1))
        entry = self.index[key]
        store = ArtifactStore(entry["artifact_uri"])
        files = entry["bundle_files"] or None
        model = load_bundle(store, "", entry["artifact_sha256"], files)
        reference = load_reference(store, "", entry["artifact_sha256"], files)
        if reference is None:
            raise RuntimeError(f"{entry['artifact_uri']}: the bundle has no reference profile; delete {self.index_path} and re-run")
        valid = reference.valid()
        calibrator = Calibrator.fit(valid[PREDICTION].to_numpy(), valid[LABEL].to_numpy())
        version = (week - LOOP_START).days // 7 + 1
        context = ModelContext(version, reference, model.feature_state(), calibrator)
        thresholds = thresholds_for(self.scratch, self.spec, context)
        say(
            f"  model of week {week} (v{version}): {entry['family']}, valid ROC AUC {entry['valid_roc_auc']:.4f}, "
            f"trained in {entry['train_s']:.0f} s; thresholds ({thresholds.source}): drift {thresholds.drift_share:.3f}, "
            f"estimated drop {thresholds.estimated_drop:.3f}, realized drop {thresholds.realized_drop:.3f}, "
            f"reference ROC AUC {thresholds.reference_metric:.4f}"
        )
        return Served(week, version, model, context, thresholds, entry["family"], entry["valid_roc_auc"], entry["train_s"])


# --------------------------------------------------------------------------------------------- signals
@dataclasses.dataclass(frozen=True)
class Measured:
    """One window as one model served it: its signals and its realized ROC AUC."""

    signals: WindowSignals
    realized: float | None


class Windows:
    """Each weekly window's features rows, and its signals under a given serving model (cached by window and model)."""

    def __init__(self, lake: Lake, spec: DatasetSpec):
        self.spec = spec
        features = lake.scan(Tables.features(spec.name)).filter(pl.col(EVENT_DATE).is_between(LOOP_START, LAST_DAY))
        frame = features.with_columns(window_expr(pl.col(EVENT_DATE), spec.monitoring.window).alias("window_start")).collect()
        self.rows = {start: part for (start,), part in frame.partition_by("window_start", as_dict=True).items()}
        self.starts = sorted(self.rows)
        self.cache: dict[tuple[dt.date, dt.date], Measured] = {}
        self.scored: dict[tuple[dt.date, dt.date], np.ndarray] = {}
        self.news: dict[tuple[dt.date, dt.date], float] = {}
        self.drift_s = 0.0

    def scores(self, start: dt.date, served: Served) -> np.ndarray:
        """The probabilities ``served`` gives the window's rows (cached)."""
        key = (start, served.week)
        if key not in self.scored:
            self.scored[key] = np.asarray(served.model.predict(self.rows[start]), dtype=np.float64)
        return self.scored[key]

    def labels(self, start: dt.date) -> np.ndarray:
        return self.rows[start][self.spec.target.name].cast(pl.Float64).to_numpy()

    def news_share(self, start: dt.date, served: Served) -> float:
        """The drift share as the shipped monitoring computes it: a column counts when it drifted against the reference
        and against the window before (the reference's valid rows for the first window)."""
        key = (start, served.week)
        if key not in self.news:
            reference, i = served.context.reference, self.starts.index(start)
            kinds = {**reference.columns, PREDICTION: "numeric"}

            def frame(day: dt.date) -> pl.DataFrame:
                return self.rows[day].select(list(reference.columns)).with_columns(pl.Series(PREDICTION, self.scores(day, served)))

            current = frame(start)
            recent = frame(self.starts[i - 1]) if i > 0 else reference.valid().select(list(kinds))
            t0 = time.monotonic()
            far = detect_drift(reference.train(), current, kinds, **_drift_options(self.spec)).columns
            near = detect_drift(recent, current, kinds, **_drift_options(self.spec)).columns
            self.drift_s += time.monotonic() - t0
            both = far.join(near.select("column", pl.col("drifted").alias("near")), on="column").with_columns(pl.col("drifted") & pl.col("near"))
            inputs = both.filter(pl.col("column") != PREDICTION)
            self.news[key] = columns_share(inputs, reference.importance)
        return self.news[key]

    def measure(self, start: dt.date, served: Served) -> Measured:
        key = (start, served.week)
        if key not in self.cache:
            self.cache[key] = self._measure(start, served)
        return self.cache[key]

    def _measure(self, start: dt.date, served: Served) -> Measured:
        spec, ctx = self.spec, served.context
        rows = self.rows[start]
        reference = ctx.reference
        threshold = reference.threshold or 0.5
        probability = self.scores(start, served)
        label = rows[spec.target.name].cast(pl.Float64)
        end = spec.monitoring.window_bounds(start)[1]  # the last event date, as the drift history records it
        # drift as monitor._window_drift computes it: the inputs and the prediction against the reference's train rows
        current = rows.select(list(reference.columns)).with_columns(pl.Series(PREDICTION, probability, dtype=pl.Float64))
        kinds = {**reference.columns, PREDICTION: "numeric"}
        t0 = time.monotonic()
        drift = detect_drift(reference.train(), current, kinds, **_drift_options(spec))
        self.drift_s += time.monotonic() - t0
        share = weighted_share(drift, reference.importance)
        # live performance as the monitoring pass computes it (labels back: the main job's labels arrive before the decision)
        scored = pl.DataFrame(
            {"window_start": [start] * rows.height, "model_version": [served.version] * rows.height, "label": label,
             "label_delay_hours": pl.Series([None] * rows.height, dtype=pl.Float64),
             "prediction": (probability >= threshold).astype(np.float64), "probability": probability}
        )  # fmt: skip
        perf = live_performance(scored, spec.problem_type, by=("window_start", "model_version"), threshold=threshold,
                                calibrator=ctx.calibrator).row(0, named=True)  # fmt: skip
        signals = WindowSignals(
            window_start=start, window_end=end, model_version=served.version, rows=int(perf["rows"]), labelled=int(perf["labelled"]),
            drift_share=share, estimated_metric=perf["estimated_roc_auc"], realized_metric=perf["roc_auc"],
        )  # fmt: skip
        return Measured(signals, perf["roc_auc"])


# ---------------------------------------------------------------------------------------------- replay
@dataclasses.dataclass(frozen=True)
class Candidate:
    """A row of the table: a retrain policy (the sensor), the monthly schedule, both, or neither (never retrain)."""

    name: str
    policy: Policy | None
    schedule: bool = False  # also retrain at the first window of each month, whatever the sensor says
    fixed_drift: float | None = None  # judge drift by this fixed share instead of the calibrated threshold
    shadow: ChallengerPolicy | None = None  # the shipped loop: a retrain is a challenger, promoted on paired evidence
    news: bool = False  # drift as shipped: drifted against the reference and against the window before


def candidates(spec: DatasetSpec, overrides: dict | None = None, challenger: dict | None = None) -> list[Candidate]:
    """The candidate policies, all with the spec's guardrails (and ``overrides`` of them) unless the name says otherwise;
    the challenger rows with the spec's challenger policy (and ``challenger`` overrides of it)."""
    base = dataclasses.replace(policy_of(spec), **(overrides or {}))
    shadow = dataclasses.replace(challenger_policy_of(spec), **(challenger or {}))

    def signals(*names: str, **extra) -> Policy:
        return dataclasses.replace(  # the signals named, without the age signals (the older rows of the table)
            base, use_drift="drift" in names, use_estimated="estimated" in names, use_realized="realized" in names,
            max_age_windows=None, follow_up_windows=None, **extra,
        )  # fmt: skip

    return [
        Candidate("never retrain", None),
        Candidate("monthly schedule", None, schedule=True),
        Candidate("drift only", signals("drift")),
        Candidate(
            f"drift only, fixed threshold {base.fallback_drift_share} (not calibrated)",
            signals("drift"),
            fixed_drift=base.fallback_drift_share,
        ),
        Candidate("estimated only", signals("estimated")),
        Candidate("realized only", signals("realized")),
        Candidate("estimated + realized", signals("estimated", "realized")),
        Candidate("drift + estimated + realized", signals("drift", "estimated", "realized")),
        Candidate("estimated + realized, hysteresis 1", signals("estimated", "realized", hysteresis=1)),
        Candidate("estimated + realized + monthly schedule", signals("estimated", "realized"), schedule=True),
        Candidate("shipped: drift (news) + estimated + realized, challenger on evidence", base, shadow=shadow, news=True),
        Candidate("challenger on evidence, monthly challengers", None, schedule=True, shadow=shadow, news=True),
    ]


#: The demo goal's bound: no more than 2 labelled windows in a row this far below what a fresh model achieves on them.
FRESH_GAP = 0.05
FRESH_COLUMN = f"longest run > {FRESH_GAP} below fresh"


def fresh_metrics(models: Models, windows: Windows) -> dict[dt.date, float]:
    """Each window's ROC AUC under a fresh model: the one trained on the data through the Sunday before it (the
    challenger a retrain decided the week before would have brought)."""
    from sklearn.metrics import roc_auc_score

    return {start: float(roc_auc_score(windows.labels(start), windows.scores(start, models.get(start)))) for start in windows.starts}


def longest_stale_run(windows: list[dict], fresh: dict[dt.date, float], gap: float = FRESH_GAP) -> tuple[int, dt.date | None]:
    """The longest run of labelled windows in a row whose ROC AUC is more than ``gap`` below a fresh model's on them, and
    the window it starts at (unlabelled windows break a run: nothing could be judged there)."""
    best, best_start, run, start = 0, None, 0, None
    for w in windows:
        value, ref = w["roc_auc"], fresh.get(w["window_start"])
        if value is not None and ref is not None and ref - value > gap:
            run, start = run + 1, start if run else w["window_start"]
            if run > best:
                best, best_start = run, start
        else:
            run = 0
    return best, best_start


@dataclasses.dataclass
class Outcome:
    candidate: Candidate
    windows: list[dict]  # one per window: window_start, model_week, rows, roc_auc, drift_fired, action, reason
    fresh: dict[dt.date, float] | None = None  # each window's ROC AUC under a fresh model (fresh_metrics)

    @property
    def retrains(self) -> list[dt.date]:
        return [w["window_start"] for w in self.windows if w["action"] == "retrain"]

    @property
    def promotions(self) -> list[dt.date]:
        return [w["window_start"] for w in self.windows if w.get("promoted")]

    def row(self) -> dict:
        frame = pl.DataFrame(self.windows)
        scored = frame.filter(pl.col("roc_auc").is_not_null())
        mean = float((scored["roc_auc"] * scored["rows"]).sum() / scored["rows"].sum())
        worst = scored.sort("roc_auc").row(0, named=True)
        return {
            "policy": self.candidate.name,
            "retrains": len(self.retrains),
            "retrain windows": ", ".join(d.strftime("%m-%d") for d in self.retrains) or "-",
            "promotions": len(self.promotions),
            "mean ROC AUC": round(mean, 4),
            "worst window ROC AUC": f"{worst['roc_auc']:.4f} ({worst['window_start']:%m-%d})",
            "drift fired": f"{frame['drift_fired'].mean():.0%}",
            **({} if self.fresh is None else {FRESH_COLUMN: _run_text(*longest_stale_run(self.windows, self.fresh))}),
        }


def _run_text(run: int, start: dt.date | None) -> str:
    return "0" if start is None else f"{run} (from {start:%m-%d})"


def replay(candidate: Candidate, models: Models, windows: Windows, spec: DatasetSpec) -> Outcome:
    """The year under one candidate: each window scored by the model serving it, decided, a retrain deployed a week later.

    With ``candidate.shadow`` (the shipped loop), a retrain at window i is the model trained through window i: promoted
    at once when its paired gain over the champion on its own test rows (windows i-1 and i, which it did not train on)
    clears the cost, else it scores in shadow from window i+1 and each later window judges it on every row both scored
    (labels are all back at decision time here): promoted for the next window, retired, or kept waiting (and a retrain
    verdict waits with it)."""
    serving = models.get(LOOP_START)
    champions, by_version = [serving], {serving.version: serving}  # every champion in order, for the pool
    retired: list[dt.date] = []  # the window ends at which a challenger was retired (its retrain's cooldown ends)
    history: list[WindowSignals] = []
    past: list[Decision] = []
    out = []
    challenger: Served | None = None
    shadow_from = 0
    for i, start in enumerate(windows.starts):
        measured = windows.measure(start, serving)
        signals = measured.signals
        if candidate.news:
            signals = dataclasses.replace(signals, drift_share=windows.news_share(start, serving))
        history.append(signals)
        thresholds = serving.thresholds
        if candidate.fixed_drift is not None:
            thresholds = dataclasses.replace(thresholds, drift_share=candidate.fixed_drift)
        drift_fired = signals.rows >= spec.monitoring.retrain.min_rows and signals.drift_share > thresholds.drift_share
        verdict, promote_next = None, None
        if challenger is not None and candidate.shadow is not None:
            seen = windows.starts[shadow_from : i + 1]
            y = np.concatenate([windows.labels(d) for d in seen])
            a = np.concatenate([windows.scores(d, serving) for d in seen])
            b = np.concatenate([windows.scores(d, challenger) for d in seen])
            verdict = judge(candidate.shadow, paired_evidence(y, a, b, "roc_auc", confidence=candidate.shadow.live_confidence), windows=len(seen), challenger=challenger.version,
                            champion=serving.version)  # fmt: skip
            drops = superseding_drops(candidate.policy, thresholds, signals, past) if candidate.policy is not None else ()
            if verdict.action == "wait" and drops:  # superseded, as the loop does
                verdict = dataclasses.replace(verdict, action="retire", reason=f"superseded by a decisive {' and '.join(drops)} drop")
            if verdict.action == "promote":
                promote_next = challenger
            if verdict.action == "retire":
                retired.append(signals.window_end)
            if verdict.action != "wait":
                challenger = None
        action, reason = "skip", "never retrains"
        if candidate.policy is not None:
            own = [s for s in history if s.model_version == serving.version]  # the serving version's windows (hysteresis)
            decision = decide(candidate.policy, thresholds, own, past, running=False, retired=retired)
            if decision.action == "retrain" and verdict is not None and verdict.action in ("wait", "promote"):
                decision = dataclasses.replace(decision, action="skip", reason=f"skip: challenger {verdict.action} ({decision.reason})")
            past.append(decision)  # the sensor's decisions table: a scheduled retrain is not in it (as in the main job)
            action, reason = decision.action, decision.reason
        # the schedule: the first window of each month (the first model was trained for April's)
        if candidate.schedule and action != "retrain" and start.day <= 7 and start != LOOP_START and challenger is None and promote_next is None:
            action, reason = "retrain", "monthly schedule"
        promoted = promote_next is not None
        if action == "retrain" and i + 1 < len(windows.starts):
            fresh = models.get(windows.starts[i + 1])  # trained on the data through this window's Sunday
            if candidate.shadow is None:
                promote_next, promoted = fresh, True
            else:
                test = windows.starts[max(0, i - 1) : i + 1]  # its test rows: the 14 days before its week
                y_test, champ_test = np.concatenate([windows.labels(d) for d in test]), np.concatenate([windows.scores(d, serving) for d in test])
                offline = paired_evidence(y_test, champ_test, np.concatenate([windows.scores(d, fresh) for d in test]), "roc_auc")
                pool = earlier_champions([c.version for c in champions], current=serving.version, pool=candidate.shadow.pool)
                earlier = {v: paired_evidence(y_test, champ_test, np.concatenate([windows.scores(d, by_version[v]) for d in test]), "roc_auc")
                           for v in pool}  # fmt: skip
                back = reinstatement(candidate.shadow, offline, earlier)
                if back is not None:
                    promote_next, promoted = by_version[back], True
                    reason += f" | earlier champion v{back} reinstated (offline gain {earlier[back].gain:+.4f}, lower bound {earlier[back].low:+.4f})"
                elif decisive_offline(candidate.shadow, offline):
                    promote_next, promoted = fresh, True
                    reason += f" | promoted at once (offline gain {offline.gain:+.4f}, lower bound {offline.low:+.4f})"
                else:
                    challenger, shadow_from = fresh, i + 1
        out.append({
            "window_start": start, "model_week": serving.week, "rows": signals.rows, "roc_auc": measured.realized,
            "estimated_roc_auc": signals.estimated_metric, "drift_share": signals.drift_share,
            "drift_threshold": thresholds.drift_share, "drift_fired": drift_fired, "action": action, "reason": reason,
            "promoted": promoted, "challenger": verdict.reason if verdict is not None else None,
        })  # fmt: skip
        if promote_next is not None:
            serving = promote_next
            champions.append(serving)
            by_version[serving.version] = serving
    return Outcome(candidate, out)


def markdown(rows: list[dict]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="working folder: lake, landing, models (default: a new temp dir)")
    parser.add_argument("--families", nargs="+", help="model families to train (default: the training default, every family)")
    parser.add_argument("--policy-args", default="{}", help="JSON overrides of the spec's Policy, e.g. '{\"budget\": 8}'")
    parser.add_argument("--challenger-args", default="{}", help="JSON overrides of the spec's ChallengerPolicy, e.g. '{\"cost\": 0.005}'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    out = Path(args.out or tempfile.mkdtemp(prefix="policy_table-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(demo_spec_path())
    say(f"policy table over the demo year in {out}")
    lake = build_lake(out, spec)
    params = TrainParams(families=args.families) if args.families else TrainParams()
    models = Models(lake, spec, out, params)
    windows = Windows(lake, spec)
    say(f"{len(windows.starts)} weekly windows {windows.starts[0]} .. {windows.starts[-1]}; families {params.families}")
    overrides, challenger = json.loads(args.policy_args), json.loads(args.challenger_args)
    if overrides or challenger:
        say(f"policy overrides: {overrides}; challenger overrides: {challenger}")
    t0 = time.monotonic()
    fresh = fresh_metrics(models, windows)
    say(f"fresh models' ROC AUC on each window ({time.monotonic() - t0:.0f} s): mean {np.mean(list(fresh.values())):.4f}")
    outcomes = []
    for candidate in candidates(spec, overrides, challenger):
        t0 = time.monotonic()
        outcome = dataclasses.replace(replay(candidate, models, windows, spec), fresh=fresh)
        outcomes.append(outcome)
        row = outcome.row()
        say(f"{candidate.name}: {row['retrains']} retrain(s) [{row['retrain windows']}], mean ROC AUC {row['mean ROC AUC']}, "
            f"worst {row['worst window ROC AUC']}, drift fired {row['drift fired']}, {FRESH_COLUMN} {row[FRESH_COLUMN]} "
            f"({time.monotonic() - t0:.0f} s)")  # fmt: skip
    rows = [o.row() for o in outcomes]
    table = markdown(rows)
    wall = time.monotonic() - started
    trained = [m for m in models.loaded.values()]
    summary = (
        f"{len(trained)} models (trained {sum(m.train_s for m in trained):.0f} s in all, cached by week), "
        f"{len(windows.cache)} (window, model) pairs measured (drift {windows.drift_s:.0f} s), wall time {wall:.0f} s"
    )
    say("\n" + table + "\n\n" + summary)
    results = {
        "table": rows, "summary": summary, "wall_s": round(wall, 1), "families": params.families,
        "models": {m.week.isoformat(): {"family": m.family, "valid_roc_auc": m.valid_roc_auc, "train_s": m.train_s,
                                         "thresholds": m.thresholds.to_dict()} for m in trained},
        "fresh_roc_auc": {d.isoformat(): v for d, v in fresh.items()},
        "windows": {o.candidate.name: [{k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in w.items()} for w in o.windows]
                    for o in outcomes},
    }  # fmt: skip
    (out / "policy_table.json").write_text(json.dumps(results, indent=1))
    (out / "policy_table.md").write_text(table + "\n\n" + summary + "\n")
    say(f"written: {out / 'policy_table.md'}, {out / 'policy_table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
