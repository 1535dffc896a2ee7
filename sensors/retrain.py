"""The closed loop: the retrain sensor (policy over the monitored windows), the fallback schedule, failure alerts.

The sensor decides in the engine (:func:`aiflow.monitoring.retrain.evaluate_pending`: weighted drift,
estimated and realized performance drop, minimum sample sizes, hysteresis, cooldown, budget, calibrated
thresholds), records every decision in ``monitoring/<dataset>/decisions`` and shows it in its tick
history (the skip reason, or the run request's tags). A retrain run has the run key
``<dataset>-retrain-<window>``, so a window never starts two runs, and the ``aiflow/retrain`` tag, which
the run queue limits to one run per model (``deploy/dagster.local.yaml``).
"""

import datetime as dt

from dagster import (
    DagsterRunStatus,
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

from aiflow.models.registry import Registry
from aiflow.monitoring.retrain import evaluate_pending
from aiflow.spec import DatasetSpec
from assets.training import REASON_TAG
from resources.notify import NotifierResource
from resources.storage import LakeResource

WINDOW_TAG = "aiflow/window"
TRIGGER_TAG = "aiflow/trigger"
ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def retrain_running(instance, job_name: str) -> bool:
    """Whether a run of ``job_name`` is queued or in progress (a second retrain must not start)."""
    return bool(instance.get_run_records(filters=RunsFilter(job_name=job_name, statuses=ACTIVE), limit=1))


def retrain_sensor(spec: DatasetSpec, job):
    @sensor(
        name=f"{spec.name}_retrain_sensor",
        job=job,
        minimum_interval_seconds=300,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Decide, for each newly monitored window of '{spec.name}', whether to retrain (policy in the spec's "
        "monitoring.retrain); every decision is recorded with its signals and reason.",
    )
    def _retrain(context: SensorEvaluationContext, lake: LakeResource, notifier: NotifierResource):
        """Evaluate the retraining policy on the windows monitored since the last decision; request a retrain when it fires."""
        running = retrain_running(context.instance, job.name)
        decisions = evaluate_pending(lake.lake(), spec, running=running, evaluator="sensor")
        if not decisions:
            return SkipReason(f"{spec.name}: no newly monitored window since the last decision")
        requests = []
        for d in decisions:
            context.log.info(f"{spec.name} window {d.window_start}..{d.window_end} (v{d.model_version}): {d.reason}")
            if d.action == "retrain":
                notifier.notifier().send("retrain", f"{spec.name}: {d.reason}", d.signals)
                requests.append(
                    RunRequest(
                        run_key=d.run_key,
                        tags={REASON_TAG: d.reason, WINDOW_TAG: d.window_start.isoformat(), TRIGGER_TAG: "retrain_sensor"},
                    )
                )
        if requests:
            return SensorResult(run_requests=requests)
        return SkipReason("; ".join(f"{d.window_start}: {d.reason}" for d in decisions))

    return _retrain


def retrain_schedule(spec: DatasetSpec, job):
    max_age = spec.monitoring.retrain.max_age_days

    @schedule(
        name=f"{spec.name}_retrain_schedule",
        job=job,
        cron_schedule="0 4 * * *",
        default_status=DefaultScheduleStatus.RUNNING if max_age else DefaultScheduleStatus.STOPPED,
        description=f"Fallback: every day at 04:00, retrain '{spec.name}' if its champion is older than "
        f"monitoring.retrain.max_age_days ({max_age}) — whatever the signals say (skipped while a retrain runs).",
    )
    def _schedule(context: ScheduleEvaluationContext, lake: LakeResource):
        """Request a retrain when the champion is older than the spec's maximum age."""
        if retrain_running(context.instance, job.name):
            return SkipReason(f"{spec.name}: a retrain is already running")
        when = context.scheduled_execution_time
        age = champion_age_days(lake.lake(), spec.name, when)
        if age is None:
            return SkipReason(f"{spec.name}: no champion yet (the lifecycle job trains the first)")
        if max_age is None or age <= max_age:
            return SkipReason(f"{spec.name}: the champion is {age:.1f} days old (retrained after {max_age} days)")
        return RunRequest(
            run_key=f"{spec.name}-scheduled-{when:%Y-%m-%d}",
            tags={REASON_TAG: f"scheduled fallback: the champion is {age:.0f} days old (> {max_age})", TRIGGER_TAG: "retrain_schedule"},
        )

    return _schedule


def champion_age_days(lake, name: str, now: dt.datetime) -> float | None:
    """Days since the champion version was registered (None without a champion)."""
    registry = Registry(lake)
    version = registry.alias(name, "champion")
    if version is None:
        return None
    return (now - registry.get(name, version).created_at).total_seconds() / 86400


@run_failure_sensor(name="aiflow_run_failure_sensor", default_status=DefaultSensorStatus.RUNNING, minimum_interval_seconds=60)
def run_failure_alert(context: RunFailureSensorContext, notifier: NotifierResource) -> None:
    """Announce every failed run on the webhook (job, run id, the error's first line)."""
    message = (context.failure_event.message or "").splitlines()[0] if context.failure_event else ""
    notifier.notifier().send(
        "failure",
        f"run {context.dagster_run.run_id[:8]} of {context.dagster_run.job_name} failed: {message}",
        {"job": context.dagster_run.job_name, "run_id": context.dagster_run.run_id},
    )
