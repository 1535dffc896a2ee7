"""The closed loop's retrain side: the retrain sensor, the fallback schedule, failure alerts.

The policy decides in the ``<dataset>/decisions`` asset (one partition per monitoring window); the sensor
only acts on its verdicts, read from the decisions table: one run per window judged "retrain", with
the run key ``<dataset>-retrain-<window>`` (a window never starts two runs, across daemon restarts too)
and the ``aiflow/retrain`` tag, which the run queue limits to one run per model
(``deploy/dagster.local.yaml``). Each request appears in the sensor's tick history. With no champion yet,
the sensor trains the first model once the landing zone has been ingested.
"""

import datetime as dt
import json

import polars as pl
from dagster import (
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    schedule,
    sensor,
)

from aiflow.data.ingest import unrecorded_files
from aiflow.models.registry import Registry
from aiflow.monitoring import history
from aiflow.monitoring.monitor import policy_of
from aiflow.monitoring.policy import next_paced_retrain
from aiflow.spec import EVENT_DATE, DatasetSpec
from aiflow.storage.lake import Tables
from assets.monitoring import ACTIVE, retrain_running
from assets.training import REASON_TAG, WINDOW_TAG
from resources.notify import NotifierResource
from resources.storage import LakeResource, LandingResource
from sensors.ticks import tick_seconds

TRIGGER_TAG = "aiflow/trigger"
#: The newest data a scheduled or first-model retrain is for (the sensor's retrains carry their window instead).
DATA_TAG = "aiflow/data"


def retrain_sensor(spec: DatasetSpec, job):
    @sensor(
        name=f"{spec.name}_retrain_sensor",
        job=job,
        minimum_interval_seconds=tick_seconds(60),
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Starts a retrain of '{spec.name}' for every window the decisions asset judged 'retrain' (one run per "
        "window), and the first model once the landing zone has been ingested and no champion exists.",
    )
    def _retrain(context: SensorEvaluationContext, lake: LakeResource, landing: LandingResource, notifier: NotifierResource):
        """Request the retrains the decisions ask for (a re-judged old window never retrains after a newer one did)."""
        store = lake.lake()
        cursor = json.loads(context.cursor) if context.cursor else {}
        if Registry(store).alias(spec.name, "champion") is None:
            return _first_model(context, spec, store, landing)
        version = store.version(history.decisions_table(spec.name))
        if version is None or version == cursor.get("decisions"):
            return SkipReason(f"{spec.name}: no new decision since the last tick")
        decided = history.read_decisions(store, spec.name)
        latest = cursor.get("latest_retrain_window")
        requests = []
        for row in decided.filter(pl.col("action") == "retrain").sort("window_start").iter_rows(named=True):
            window = row["window_start"].isoformat()
            if latest is not None and window <= latest:
                continue
            latest = window
            context.log.info(f"{spec.name} window {window}: {row['reason']}")
            notifier.notifier().send("retrain", f"{spec.name}: {row['reason']}", {"window": window, "fired": row["fired"]})
            requests.append(
                RunRequest(
                    run_key=row["run_key"] or f"{spec.name}-retrain-{window}",
                    tags={REASON_TAG: row["reason"][:1000], WINDOW_TAG: window, TRIGGER_TAG: "retrain_sensor"},
                )
            )
        new_cursor = json.dumps({**cursor, "decisions": version, "latest_retrain_window": latest}, sort_keys=True)
        if requests:
            return SensorResult(run_requests=requests, cursor=new_cursor)
        newest = decided.row(-1, named=True) if decided.height else None
        said = f"newest decision: window {newest['window_start']}: {newest['action']}" if newest else "no decision yet"
        return SensorResult(skip_reason=f"{spec.name}: no new retrain verdict ({said})", cursor=new_cursor)

    return _retrain


def _first_model(context: SensorEvaluationContext, spec: DatasetSpec, store, landing: LandingResource):
    """No champion yet: train the first model once the landing zone is ingested and no run of the dataset is in flight."""
    features = Tables.features(spec.name)
    if not store.exists(features):
        return SkipReason(f"{spec.name}: no champion and no features yet (the landing sensor ingests the first files)")
    waiting = sum(len(unrecorded_files(store, t, landing.zone(t).list())) for t in spec.tables)
    if waiting:
        return SkipReason(f"{spec.name}: no champion yet; {waiting} landing file(s) not ingested yet: the first model waits for them")
    active = context.instance.get_run_records(filters=RunsFilter(statuses=ACTIVE), limit=50)
    mine = (f"{spec.name}_", "data_plane_job", "lifecycle_job")
    busy = sorted({r.dagster_run.job_name for r in active if r.dagster_run.job_name.startswith(mine)})
    if busy:
        return SkipReason(f"{spec.name}: no champion yet; waiting for {', '.join(busy)} to finish before training the first model")
    version = store.version(features)
    return RunRequest(
        run_key=f"{spec.name}-first-model-features-v{version}",
        tags={REASON_TAG: f"first model: no champion yet (features v{version})", TRIGGER_TAG: "retrain_sensor", DATA_TAG: f"features-v{version}"},
    )


def retrain_schedule(spec: DatasetSpec, job):
    r = spec.monitoring.retrain
    max_age, budget, budget_days = r.max_age_days, r.budget, r.budget_days

    @schedule(
        name=f"{spec.name}_retrain_schedule",
        job=job,
        cron_schedule="0 4 * * *",
        default_status=DefaultScheduleStatus.RUNNING if max_age else DefaultScheduleStatus.STOPPED,
        description=f"Fallback: every day at 04:00, retrain '{spec.name}' if its champion is older than "
        f"monitoring.retrain.max_age_days ({max_age}) in data time (newest feature date minus the newest date it trained on), "
        f"within the budget ({budget} retrains in {budget_days} days of data, the sensor's included, paced by budget_burst); "
        "skipped while one runs.",
    )
    def _schedule(context: ScheduleEvaluationContext, lake: LakeResource):
        """Request a retrain when the champion is older than the spec's maximum age in data time, within the budget."""
        if retrain_running(context.instance, job.name):
            return SkipReason(f"{spec.name}: a retrain is already running")
        age = champion_age(lake.lake(), spec)
        if age is None:
            return SkipReason(f"{spec.name}: no champion yet (the retrain sensor trains the first)")
        days, newest = age
        if max_age is None or days <= max_age:
            return SkipReason(f"{spec.name}: the champion is {days} days old in data time (retrained after {max_age} days)")
        since = newest - dt.timedelta(days=budget_days)
        started = retrain_dates(context.instance, job.name)
        spent = sum(1 for d in started if d > since)
        if spent >= budget:
            return SkipReason(
                f"{spec.name}: the champion is {days} days old in data time, but {spent} retrain(s) were already started for "
                f"data after {since} (budget {budget} in {budget_days} days) and none replaced it: waiting for newer data"
            )
        paced = next_paced_retrain(policy_of(spec), started)
        if paced is not None and newest < paced:
            return SkipReason(
                f"{spec.name}: the champion is {days} days old in data time, but the retrain budget is paced ({r.budget_burst} "
                f"in a burst, then {budget} per {budget_days} days): the next retrain may start for data from {paced}"
            )
        return RunRequest(
            run_key=f"{spec.name}-scheduled-{newest.isoformat()}",
            tags={
                REASON_TAG: f"scheduled fallback: the champion is {days} days old in data time (> {max_age})",
                TRIGGER_TAG: "retrain_schedule", DATA_TAG: newest.isoformat(),
            },
        )  # fmt: skip

    return _schedule


def champion_age(lake, spec: DatasetSpec) -> tuple[int, dt.date] | None:
    """The champion's age in data time: days from the newest event date it trained on (the features table at its pinned
    version) to the newest event date of the features table now, and that newest date; None without a champion."""
    registry = Registry(lake)
    version = registry.alias(spec.name, "champion")
    features = Tables.features(spec.name)
    if version is None or not lake.exists(features):
        return None
    mv = registry.get(spec.name, version)
    newest = lake.scan(features).select(pl.col(EVENT_DATE).max()).collect().item()
    trained = lake.scan(features, version=mv.training_version).select(pl.col(EVENT_DATE).max()).collect().item()
    if newest is None or trained is None:
        return None
    return (newest - trained).days, newest


def retrain_dates(instance, job_name: str) -> list[dt.date]:
    """The data dates of the retrain runs started (by the sensor or the schedule), whatever they concluded."""
    dates = []
    for record in instance.get_run_records(filters=RunsFilter(job_name=job_name), limit=500):
        tags = record.dagster_run.tags
        when = tags.get(WINDOW_TAG) or tags.get(DATA_TAG) or ""
        try:
            dates.append(dt.date.fromisoformat(when[:10]))
        except ValueError:
            continue  # a run started by hand for no data date
    return dates


@run_failure_sensor(name="aiflow_run_failure_sensor", default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60)
def run_failure_alert(context: RunFailureSensorContext, notifier: NotifierResource) -> None:
    """Announce every failed run on the webhook (job, run id, the error's first line)."""
    message = (context.failure_event.message or "").splitlines()[0] if context.failure_event else ""
    notifier.notifier().send(
        "failure",
        f"run {context.dagster_run.run_id[:8]} of {context.dagster_run.job_name} failed: {message}",
        {"job": context.dagster_run.job_name, "run_id": context.dagster_run.run_id},
    )
