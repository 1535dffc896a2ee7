"""Landing-zone sensor: start data-plane runs for new or replaced files, in batches."""

import hashlib
import json

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from aiflow.spec import DatasetSpec
from assets.keys import bronze_key, op_name
from resources.storage import LandingResource
from sensors.jobs import data_plane_job_name

MAX_FILES_PER_RUN = 500


def landing_sensor(spec: DatasetSpec, *, max_files_per_run: int = MAX_FILES_PER_RUN, minimum_interval_seconds: int = 30):
    """A sensor over every landing zone of the dataset.

    The cursor maps each file requested so far to its size and modification time, so a file that is
    replaced (same name, new content) is requested again; the ledger then decides by content hash
    whether it is new. Entries for files that left the landing zone are dropped, so the cursor stays
    as small as the zone.
    """

    @sensor(
        name=f"{spec.name}_landing_sensor",
        job_name=data_plane_job_name(spec),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Starts data-plane runs for new files in the landing zones.",
    )
    def _sensor(context: SensorEvaluationContext, landing: LandingResource):
        seen: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
        new_cursor: dict[str, dict[str, str]] = {}
        pending: dict[str, list[str]] = {}
        for table in spec.tables:
            listed = {f.name: f.signature for f in landing.zone(table).list()}
            before = seen.get(table.name, {})
            new_cursor[table.name] = {n: s for n, s in before.items() if listed.get(n) == s}
            pending[table.name] = sorted(n for n, s in listed.items() if before.get(n) != s)
            for name in pending[table.name]:
                new_cursor[table.name][name] = listed[name]
        total = sum(len(v) for v in pending.values())
        if not total:
            context.update_cursor(json.dumps(new_cursor, sort_keys=True))
            yield SkipReason("no new files in the landing zones")
            return
        # side tables first, so a run that carries both can join the new side rows
        queue = [(t.name, n) for t in reversed(spec.tables) for n in pending[t.name]]
        batches: list[dict[str, list[str]]] = []
        for i in range(0, len(queue), max_files_per_run):
            batch: dict[str, list[str]] = {}
            for table_name, name in queue[i : i + max_files_per_run]:
                batch.setdefault(table_name, []).append(name)
            batches.append(batch)
        for batch in batches:
            signature = json.dumps({t: {n: new_cursor[t][n] for n in names} for t, names in batch.items()}, sort_keys=True)
            yield RunRequest(
                run_key=hashlib.sha256(signature.encode()).hexdigest()[:32],
                run_config={
                    "ops": {op_name(bronze_key(spec, t)): {"config": {"files": batch.get(t.name, [])}} for t in spec.tables}
                },
                tags={"aiflow/trigger": "landing_sensor", "aiflow/files": str(sum(len(v) for v in batch.values()))},
            )
        context.update_cursor(json.dumps(new_cursor, sort_keys=True))

    return _sensor
