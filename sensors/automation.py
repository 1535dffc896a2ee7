"""The automation sensor of a dataset: evaluates the assets' automation conditions under the daemon.

Dagster's default automation sensor starts STOPPED (measured on 1.13, ../shared/DAGSTER-AUTOMATION.md),
so each dataset declares its own, RUNNING by default, over its conditioned assets (batch predictions
follow the features). Its runs carry ``aiflow/trigger: automation`` beside Dagster's own tags.
"""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from aiflow.spec import DatasetSpec
from assets.keys import predictions_key
from sensors.retrain import TRIGGER_TAG
from sensors.ticks import tick_seconds


def automation_sensor(spec: DatasetSpec) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        f"{spec.name}_automation_sensor",
        target=AssetSelection.assets(predictions_key(spec)),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=tick_seconds(30),
        run_tags={TRIGGER_TAG: "automation"},
        description=f"Evaluates the automation conditions of '{spec.name}': batch predictions of new feature rows.",
    )
