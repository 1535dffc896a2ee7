"""Assembly only: the one Definitions object of the aiflow code location.

Datasets: ``AIFLOW_DATASETS`` lists spec files or folders of specs (separated by ``os.pathsep``),
``AIFLOW_DATASET`` names one spec; default: the bundled nycflights13 demo. Every dataset gets its
own assets, checks, jobs, sensor and schedule side by side; ``lifecycle_job`` and ``data_plane_job``
run every dataset at once. ``AIFLOW_PROFILE`` names the environment profile (``local``, ``s3``,
``k8s``) and ``AIFLOW_EXECUTOR`` may override its step executor (``resources/executors.py``).
All of these are configuration, not secrets.
"""

import os
import warnings
from collections.abc import Sequence

from dagster import AssetsDefinition, BetaWarning, Definitions, with_source_code_references

from aiflow.spec import DatasetSpec, demo_spec_path, load_specs
from assets.cleansing import cleansing_assets, cleansing_checks
from assets.deployment import deployment_assets
from assets.features import feature_assets, feature_checks
from assets.ingestion import ingestion_assets
from assets.monitoring import monitoring_assets
from assets.training import training_assets
from assets.validation import validation_assets, validation_checks
from resources.executors import executor_for
from resources.profiles import resources_for
from sensors.automation import automation_sensor
from sensors.backfill import backfill_job
from sensors.canary import canary_sensor
from sensors.jobs import canary_job, data_plane_job, lifecycle_job, maintenance_job, monitoring_job, retrain_job
from sensors.landing import landing_sensor
from sensors.monitoring import monitoring_sensor
from sensors.retrain import retrain_schedule, retrain_sensor, run_failure_alert
from sensors.rollback import rollback_job
from sensors.schedules import maintenance_schedule
from sensors.sweep import sweep_job

#: Project-wide rule, applied once: the beta APIs used here (observable sources, code references) are known and pinned
#: (dagster 1.13.*); their warnings would print on every load of the code location.
warnings.filterwarnings(
    "ignore", category=BetaWarning,
    message=r".*(observable_source_asset|include_sources|with_source_code_references|LocalFileCodeReference|CodeReferencesMetadataValue).*",
)  # fmt: skip


def spec_locations() -> list[str]:
    """Where the dataset specs are, from the environment (see the module docstring)."""
    if os.environ.get("AIFLOW_DATASETS"):
        return [p for p in os.environ["AIFLOW_DATASETS"].split(os.pathsep) if p]
    return [os.environ.get("AIFLOW_DATASET") or str(demo_spec_path())]


def dataset_definitions(spec: DatasetSpec) -> Definitions:
    """Everything one dataset brings: its assets, checks, jobs, sensor and schedule."""
    maintenance, retrain, monitoring = maintenance_job(spec), retrain_job(spec), monitoring_job(spec)
    assets = [
        *ingestion_assets(spec),
        *cleansing_assets(spec),
        *feature_assets(spec),
        *training_assets(spec),
        *validation_assets(spec),
        *deployment_assets(spec),
        *monitoring_assets(spec),
    ]
    if spec.owners:  # project-wide rule, once: every asset of the dataset belongs to the spec's owners
        assets = [a.map_asset_specs(lambda s: s.replace_attributes(owners=spec.owners)) if isinstance(a, AssetsDefinition) else a for a in assets]
    return Definitions(
        assets=with_source_code_references(assets),  # "View source" on every asset in the UI
        asset_checks=[*cleansing_checks(spec), *feature_checks(spec), *validation_checks(spec)],
        jobs=[
            data_plane_job(spec), lifecycle_job(spec), maintenance, sweep_job(spec), rollback_job(spec), canary_job(spec),
            monitoring, retrain, backfill_job(spec, os.environ.get("AIFLOW_PROFILE", "local")),
        ],  # fmt: skip
        sensors=[
            landing_sensor(spec), canary_sensor(spec), retrain_sensor(spec, retrain), monitoring_sensor(spec, monitoring),
            automation_sensor(spec),
        ],  # fmt: skip
        schedules=[maintenance_schedule(maintenance), retrain_schedule(spec, retrain)],
    )


def build_definitions(
    spec_paths: str | os.PathLike | Sequence[str | os.PathLike] | None = None, resources: dict | None = None
) -> Definitions:
    """The code location for the given spec files or folders (default: :func:`spec_locations`)."""
    if spec_paths is None:
        locations = spec_locations()
    elif isinstance(spec_paths, str | os.PathLike):
        locations = [spec_paths]
    else:
        locations = list(spec_paths)
    specs = load_specs(locations)
    return Definitions.merge(
        *(dataset_definitions(spec) for spec in specs),
        Definitions(
            jobs=[data_plane_job(), lifecycle_job()],
            sensors=[run_failure_alert],
            resources=resources if resources is not None else resources_for(),
            executor=executor_for(os.environ.get("AIFLOW_PROFILE", "local"), os.environ.get("AIFLOW_EXECUTOR") or None),
        ),
    )


defs = build_definitions()
