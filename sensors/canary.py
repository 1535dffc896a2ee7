"""Canary sensor: run the dataset's canary job every N minutes while a canary alias is set (stopped by default)."""

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from aiflow.models.registry import Registry
from aiflow.serving.holder import CANARY
from aiflow.spec import DatasetSpec
from resources.storage import LakeResource
from sensors.jobs import canary_job_name

#: Minutes between two analyses while a canary is set.
DEFAULT_INTERVAL_MINUTES = 15


def canary_sensor(spec: DatasetSpec, *, minutes: int = DEFAULT_INTERVAL_MINUTES, default_status=DefaultSensorStatus.STOPPED):
    """A sensor that requests ``<dataset>_canary_job`` every ``minutes`` while ``spec``'s model has a canary."""

    @sensor(
        name=f"{spec.name}_canary_sensor",
        job_name=canary_job_name(spec),
        minimum_interval_seconds=minutes * 60,
        default_status=default_status,
        description=f"Every {minutes} min while '{spec.name}' has a canary: observe the inference log and labels, compare canary and champion.",
    )
    def _sensor(context: SensorEvaluationContext, lake: LakeResource):
        """Request one canary analysis per evaluation while a canary is set."""
        version = Registry(lake.lake()).alias(spec.name, CANARY)
        if version is None:
            return SkipReason(f"{spec.name} has no canary")
        return RunRequest(tags={"aiflow/trigger": "canary_sensor", "aiflow/canary_version": str(version)})

    return _sensor
