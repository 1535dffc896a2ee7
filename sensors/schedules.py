"""Schedules: nightly table maintenance."""

from dagster import DefaultScheduleStatus, ScheduleDefinition


def maintenance_schedule(job) -> ScheduleDefinition:
    """Nightly maintenance of one dataset (the job's name carries it)."""
    return ScheduleDefinition(
        name=job.name.removesuffix("_job") + "_nightly",
        job=job,
        cron_schedule="30 3 * * *",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Compact and vacuum every Delta table at 03:30.",
    )
