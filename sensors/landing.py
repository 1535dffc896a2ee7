"""Landing-zone sensor: start data-plane runs for new or replaced files, in batches."""

import hashlib
import json

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from aiflow.data.ingest import unrecorded_files
from aiflow.spec import DatasetSpec
from assets.keys import bronze_key, op_name
from resources.storage import LakeResource, LandingResource
from sensors.jobs import data_plane_job_name
from sensors.ticks import tick_seconds

MAX_FILES_PER_RUN = 500
#: Files requested but not yet in the ledger that the cursor may hold (all tables together).
MAX_IN_FLIGHT = 10_000
CURSOR_FORMAT = 2


def _in_flight(cursor: str | None) -> dict[str, dict[str, str]]:
    """The cursor's files in flight per table; a cursor of the first format (every file seen) reads the same way."""
    if not cursor:
        return {}
    data = json.loads(cursor)
    return data.get("in_flight", {}) if data.get("format") == CURSOR_FORMAT else data


def landing_sensor(
    spec: DatasetSpec,
    *,
    max_files_per_run: int = MAX_FILES_PER_RUN,
    max_in_flight: int = MAX_IN_FLIGHT,
    minimum_interval_seconds: int | None = None,
):
    """A sensor over every landing zone of the dataset.

    The ingestion ledger is the record of every file ever seen: a file is requested when the ledger does
    not hold it unchanged (same name, size and modification time), so the first tick on a zone that was
    already ingested requests nothing, and a replaced file (same name, new content) is requested again;
    the ledger then decides by content hash whether it is new.

    The cursor only holds the files *in flight*: requested, not yet in the ledger (name → size and
    mtime), so a file is not requested twice while its run is queued. Each tick drops the entries the
    ledger now holds or that left the zone, so the cursor does not grow with the files ever seen; and it
    holds at most ``max_in_flight`` entries: beyond that, new files wait for a later tick (a backlog,
    said in the skip reason), never dropped. A file whose run failed stays in flight until it changes,
    the run is re-executed, or the cursor is reset.
    """

    @sensor(
        name=f"{spec.name}_landing_sensor",
        job_name=data_plane_job_name(spec),
        minimum_interval_seconds=minimum_interval_seconds or tick_seconds(30),
        default_status=DefaultSensorStatus.RUNNING,
        description="Starts data-plane runs for landing-zone files the ingestion ledger does not hold yet.",
    )
    def _sensor(context: SensorEvaluationContext, landing: LandingResource, lake: LakeResource):
        before = _in_flight(context.cursor)
        store = lake.lake()
        in_flight: dict[str, dict[str, str]] = {}
        pending: dict[str, dict[str, str]] = {}
        for table in spec.tables:
            fresh = {f.name: f.signature for f in unrecorded_files(store, table, landing.zone(table).list())}
            known = before.get(table.name, {})
            in_flight[table.name] = {n: s for n, s in known.items() if fresh.get(n) == s}
            pending[table.name] = {n: s for n, s in sorted(fresh.items()) if known.get(n) != s}
        room = max(0, max_in_flight - sum(len(v) for v in in_flight.values()))
        # side tables first, so a run that carries both can join the new side rows
        backlog = [(t.name, n) for t in reversed(spec.tables) for n in pending[t.name]]
        queue, waiting = backlog[:room], len(backlog) - room
        for table_name, name in queue:
            in_flight[table_name][name] = pending[table_name][name]
        cursor = json.dumps({"format": CURSOR_FORMAT, "in_flight": in_flight}, sort_keys=True)
        if not queue:
            context.update_cursor(cursor)
            yield SkipReason(
                f"{waiting} new file(s) wait: {max_in_flight} requested files are not in the ledger yet"
                if waiting > 0
                else "no new files in the landing zones"
            )
            return
        if waiting > 0:
            context.log.warning(f"{waiting} new file(s) wait for a later tick: at most {max_in_flight} files in flight")
        for i in range(0, len(queue), max_files_per_run):
            batch: dict[str, list[str]] = {}
            for table_name, name in queue[i : i + max_files_per_run]:
                batch.setdefault(table_name, []).append(name)
            signature = json.dumps({t: {n: in_flight[t][n] for n in names} for t, names in batch.items()}, sort_keys=True)
            yield RunRequest(
                run_key=hashlib.sha256(signature.encode()).hexdigest()[:32],
                run_config={
                    "ops": {op_name(bronze_key(spec, t)): {"config": {"files": batch.get(t.name, [])}} for t in spec.tables}
                },
                tags={"aiflow/trigger": "landing_sensor", "aiflow/files": str(sum(len(v) for v in batch.values()))},
            )
        context.update_cursor(cursor)

    return _sensor
