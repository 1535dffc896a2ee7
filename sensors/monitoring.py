"""The monitoring sensor: observes what the server wrote (inference log, labels) and the registry's alias log, and asks
for a monitoring run of every window data time has moved past.

State lives where it belongs: which windows exist and what they hold is read from the lake (the inference
log and the labels, in data time); the cursor only remembers what each window held when its run was
requested (served rows, labels), so a window is asked for once when it completes and again when its
labels change. Run keys carry the same numbers, so a tick repeated after a daemon crash requests
nothing twice. Re-runs of already-monitored windows wait until the labels table has been still for one
tick, so a stream of feedback batches makes one re-run, not one per batch.
"""

import json

from dagster import AssetObservation, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from aiflow.models.registry import Registry
from aiflow.monitoring.partition import window_status
from aiflow.serving.feedback import labels_table
from aiflow.serving.inference_log import log_table
from aiflow.spec import DatasetSpec
from aiflow.storage.lake import Tables
from assets.deployment import alias_metadata
from assets.keys import champion_key, inference_log_key, labels_key
from assets.metadata import table_metadata
from resources.storage import LakeResource
from sensors.jobs import MONITORING_TAG
from sensors.retrain import TRIGGER_TAG, WINDOW_TAG
from sensors.ticks import tick_seconds


def monitoring_sensor(spec: DatasetSpec, job):
    @sensor(
        name=f"{spec.name}_monitoring_sensor",
        job=job,
        minimum_interval_seconds=tick_seconds(30),
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Observes the inference log, labels and champion alias of '{spec.name}' and starts a monitoring run "
        "(drift, live performance, decision) for each window data time has moved past, and again when its labels change.",
    )
    def _monitoring(context: SensorEvaluationContext, lake: LakeResource):
        """Observe the served world; request one monitoring run per completed window (and per change of its labels)."""
        store = lake.lake()
        cursor = json.loads(context.cursor) if context.cursor else {}
        versions = {
            "log": store.version(log_table(spec.name)),
            "labels": store.version(labels_table(spec.name)),
            "aliases": store.version(Tables.alias_events()),
        }
        events = []
        for name, key, table in (("log", inference_log_key(spec), log_table(spec.name)), ("labels", labels_key(spec), labels_table(spec.name))):
            if versions[name] is not None and versions[name] != cursor.get(name):
                events.append(AssetObservation(key, metadata=table_metadata(store, table), tags={"dagster/data_version": f"v{versions[name]}"}))
        registry = Registry(store)
        champion = registry.alias(spec.name, "champion") if versions["aliases"] is not None else None
        if champion is not None and champion != cursor.get("champion"):
            events.append(
                AssetObservation(
                    champion_key(spec), description=f"the alias log says v{champion} serves",
                    metadata={**alias_metadata(registry, spec.name), "serving_version": champion},
                    tags={"dagster/data_version": f"v{champion}"},
                )
            )  # fmt: skip
        seen: dict[str, list[int]] = cursor.get("windows", {})
        labels_still = versions["labels"] == cursor.get("labels")
        changed = (versions["log"], versions["labels"]) != (cursor.get("log"), cursor.get("labels")) or cursor.get("pending", False)
        requests, pending = [], False
        if versions["log"] is not None and changed:
            for row in window_status(store, spec).filter("complete").iter_rows(named=True):
                window, held = row["window_start"].isoformat(), [int(row["rows"]), int(row["labelled"])]
                if seen.get(window) == held:
                    continue
                if window in seen and not labels_still:
                    pending = True  # labels still arriving: ask again once the labels table has been still for a tick
                    continue
                seen[window] = held
                requests.append(
                    RunRequest(
                        run_key=f"{spec.name}-monitor-{window}-{held[0]}-{held[1]}", partition_key=window,
                        tags={WINDOW_TAG: window, TRIGGER_TAG: "monitoring_sensor", MONITORING_TAG: spec.name},
                    )
                )  # fmt: skip
        new_cursor = {**versions, "champion": champion, "windows": seen, "pending": pending}
        for r in requests:
            context.log.info(f"{spec.name}: monitoring window {r.partition_key} ({r.tags[WINDOW_TAG]}): run key {r.run_key}")
        return SensorResult(
            run_requests=requests, asset_events=events, cursor=json.dumps(new_cursor, sort_keys=True),
            skip_reason=None if requests else f"{spec.name}: no window completed or changed since the last tick",
        )  # fmt: skip

    return _monitoring
