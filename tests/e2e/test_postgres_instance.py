"""Scope: Dagster's own storage on PostgreSQL by configuration only (deploy/dagster.postgres.yaml, env vars): a real
`dagster job execute` process, then fresh processes that read its run, materializations and check results back, and the
landing sensor's cursor surviving a restart on the sensor daemon's own tick code (tiny spec, not the demo)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    build_sensor_context,
)

from tests.aiflow.tiny import TINY, TRIPS_ROWS, csv_bytes, write_file

pytestmark = pytest.mark.slow  # end to end: run by ./scripts/test after the default suite

if TYPE_CHECKING:  # not imported at run time: the restarted daemon process imports this module
    from tests.fixtures.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCAL_YAML = REPO / "deploy" / "dagster.local.yaml"
POSTGRES_YAML = REPO / "deploy" / "dagster.postgres.yaml"
DATASET = TINY["name"]
JOB = f"{DATASET}_data_plane_job"
SENSOR = f"{DATASET}_landing_sensor"
#: The code location name `dagster dev -m definitions` gives this project; sensor state is keyed by it.
LOCATION = "definitions"
CONNECTION_FIELDS = {"hostname", "port", "db_name", "username", "password"}


def test_postgres_instance_differs_from_the_local_one_only_in_storage_and_reads_every_secret_from_env():
    local, pg = yaml.safe_load(LOCAL_YAML.read_text()), yaml.safe_load(POSTGRES_YAML.read_text())
    assert "storage" not in local  # SQLite under $DAGSTER_HOME
    assert {k: v for k, v in pg.items() if k != "storage"} == local
    db = pg["storage"]["postgres"]["postgres_db"]
    assert set(db) == CONNECTION_FIELDS | {"scheme"}
    # no literal value for any connection field: each is {env: DAGSTER_PG_*}
    assert {f: db[f] for f in CONNECTION_FIELDS} == {f: {"env": db[f]["env"]} for f in CONNECTION_FIELDS}
    assert all(db[f]["env"].startswith("DAGSTER_PG_") for f in CONNECTION_FIELDS)
    assert db["scheme"] == "postgresql+psycopg2"  # the driver dagster-postgres installs (SQLAlchemy 2.1 would pick psycopg 3)


def _tiny_home(tmp_path: Path, pg: PostgresServer) -> tuple[Path, Path, dict[str, str]]:
    """An aiflow home with one landing file per table, a DAGSTER_HOME holding the PostgreSQL instance file, and the env."""
    home, dagster_home, spec_path = tmp_path / "home", tmp_path / "dagster_home", tmp_path / f"{DATASET}.yaml"
    spec_path.write_text(yaml.safe_dump(TINY))
    write_file(home / "landing" / DATASET, "2013-01-01.csv", csv_bytes(TRIPS_ROWS))
    write_file(home / "landing" / "weather", "w.csv", b"origin,temp,ts\nJFK,1.5,2013-01-01T10:00:00Z\nEWR,2.5,2013-01-01T22:00:00Z\n")
    dagster_home.mkdir()
    shutil.copy(POSTGRES_YAML, dagster_home / "dagster.yaml")
    env = {
        **os.environ,
        **pg.dagster_env,
        "AIFLOW_HOME": str(home),
        "AIFLOW_DATASET": str(spec_path),
        "AIFLOW_PROFILE": "local",
        "DAGSTER_HOME": str(dagster_home),
    }
    env.pop("AIFLOW_DATASETS", None)
    return home, dagster_home, env


def _trips_file(home: Path, day: int) -> None:
    row = f"{100 + day},DL,JFK,500,150,yes,2012-12-01,0.0,2013-01-{day:02d}T12:00:00Z"
    write_file(home / "landing" / DATASET, f"2013-01-{day:02d}.csv", csv_bytes([row]))


def daemon_tick(dagster_home: str, minutes_later: float = 0.0, python_file: str | None = None) -> None:
    """One iteration of the sensor daemon (`dagster-daemon`'s own code) over this project's code location.

    It reads every running sensor's state (cursor, last tick) from the instance, evaluates the sensors,
    stores the ticks and the new cursors, and submits the run requests to the run queue (queued, not
    launched: no run-queue daemon runs here). ``minutes_later`` evaluates as if that much time had
    passed, past the landing sensor's minimum interval. The code location is the `definitions` module
    (as `dagster dev -m definitions` loads it), or ``python_file`` under the same location name: inside
    pytest, `definitions` may already be imported for another dataset.
    """
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import freeze_time
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            python_file=python_file,
            module_name=None if python_file else "definitions",
            working_directory=str(REPO),
        ),
        location_name=LOCATION,
    )
    at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes_later)
    with (
        DagsterInstance.from_config(dagster_home) as instance,
        WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context,
        freeze_time(at),
    ):
        list(execute_sensor_iteration(context, logging.getLogger("sensor_daemon"), None, None))


def _tick_in_new_process(env: dict[str, str], minutes_later: float) -> None:
    code = f"from tests.e2e.test_postgres_instance import daemon_tick; daemon_tick({env['DAGSTER_HOME']!r}, {minutes_later})"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _landing_state(instance: DagsterInstance):
    states = [s for s in instance.all_instigator_state() if s.instigator_name == SENSOR]
    assert len(states) == 1, [s.instigator_name for s in instance.all_instigator_state()]
    return states[0]


def _requested_files(instance: DagsterInstance, run_id: str) -> list[str]:
    run = instance.get_run_by_id(run_id)
    return run.run_config["ops"][f"{DATASET}__bronze_{DATASET}"]["config"]["files"]


def _code_location_file(tmp_path: Path, env: dict[str, str]) -> str:
    """This project's definitions for the tiny home, as a file (the same assembly the `definitions` module runs)."""
    path = tmp_path / "tiny_code_location.py"
    path.write_text(
        "from definitions import build_definitions\n"
        "from resources.profiles import local_resources\n"
        f"defs = build_definitions({env['AIFLOW_DATASET']!r}, resources=local_resources({env['AIFLOW_HOME']!r}))\n"
    )
    return str(path)


def test_runs_checks_and_sensor_cursor_live_in_postgres_across_processes(tmp_path, postgres_db, monkeypatch, request):
    home, dagster_home, env = _tiny_home(tmp_path, postgres_db)

    # 0. the documented switch: copy the file, set DAGSTER_PG_*, `dagster instance migrate` (creates the tables)
    migrate = subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    # 1. a real Dagster process runs the data plane of the tiny dataset, then exits
    job = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "definitions", "-d", str(REPO), "-j", JOB],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]

    # 2. a fresh instance in this (another) process finds the run, its materializations and its check results
    for name, value in postgres_db.dagster_env.items():  # the instance file reads them when this process opens it
        monkeypatch.setenv(name, value)
    instance = DagsterInstance.from_config(str(dagster_home))
    request.addfinalizer(instance.dispose)  # its connection pool closes before the server stops
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    runs = instance.get_runs(RunsFilter(job_name=JOB))
    assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS]
    run_id = runs[0].run_id
    materialized = {
        r.event_log_entry.dagster_event.asset_key
        for r in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    }
    # exactly the assets and checks of this project's data-plane job for the dataset, each check with its verdict
    from definitions import build_definitions
    from resources.profiles import local_resources

    defs = build_definitions(env["AIFLOW_DATASET"], resources=local_resources(str(home)))
    planned = defs.resolve_job_def(JOB).asset_layer
    assert (
        materialized
        == set(planned.selected_asset_keys)
        == {AssetKey([DATASET, f"{stage}_{t}"]) for stage in ("bronze", "silver") for t in (DATASET, "weather")}
        | {AssetKey([DATASET, "features"])}
    )
    evaluations = [
        r.event_log_entry.dagster_event.event_specific_data
        for r in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    ]
    checked = {AssetCheckKey(e.asset_key, e.check_name): e.passed for e in evaluations}
    assert set(checked) == set(planned.asset_graph.asset_check_keys) and len(checked) >= 3 * 3
    assert all(checked.values()), checked
    # and the rows really are in PostgreSQL
    with closing(postgres_db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'", (run_id,))
        assert cur.fetchone() == (len(materialized),)
        cur.execute("SELECT check_name, execution_status FROM asset_check_executions WHERE run_id = %s", (run_id,))
        assert sorted(cur.fetchall()) == sorted((k.name, "SUCCEEDED") for k in checked)

    # 3. the landing sensor, ticked by the daemon's code here, asks for the new day and stores its cursor
    # (the retrain sensor keeps its state in the decisions Delta table, not in a cursor: nothing to prove here)
    _trips_file(home, 2)
    daemon_tick(str(dagster_home), python_file=_code_location_file(tmp_path, env))
    state = _landing_state(instance)
    [tick] = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    assert tick.status.value == "SUCCESS" and [_requested_files(instance, r) for r in tick.run_ids] == [["2013-01-02.csv"]]
    first = state.instigator_data.cursor
    assert tick.cursor == first and sorted(json.loads(first)["in_flight"][DATASET]) == ["2013-01-02.csv"]

    # 4. a restarted daemon (new process, a minute later) reads that cursor back: only the day that landed since
    _trips_file(home, 3)
    _tick_in_new_process(env, minutes_later=1.5)
    fresh = DagsterInstance.from_config(str(dagster_home))
    request.addfinalizer(fresh.dispose)
    state = _landing_state(fresh)
    ticks = fresh.get_ticks(state.instigator_origin_id, state.selector_id)
    assert [t.status.value for t in ticks] == ["SUCCESS", "SUCCESS"]  # newest first
    assert [[_requested_files(fresh, r) for r in t.run_ids] for t in ticks] == [[["2013-01-03.csv"]], [["2013-01-02.csv"]]]
    assert ticks[1].cursor == first
    assert sorted(json.loads(ticks[0].cursor)["in_flight"][DATASET]) == ["2013-01-02.csv", "2013-01-03.csv"]
    assert state.instigator_data.cursor == ticks[0].cursor
    # without that cursor the sensor would ask for the in-flight day again (day 1 is in the ledger either way)
    context = build_sensor_context(
        instance=fresh, cursor=None, resources={"landing": defs.resources["landing"], "lake": defs.resources["lake"]}
    )
    again = [r for r in defs.resolve_sensor_def(SENSOR)(context) if isinstance(r, RunRequest)]
    assert [r.run_config["ops"][f"{DATASET}__bronze_{DATASET}"]["config"]["files"] for r in again] == [["2013-01-02.csv", "2013-01-03.csv"]]
    queued = fresh.get_runs(RunsFilter(job_name=JOB, statuses=[DagsterRunStatus.QUEUED]))
    assert len(queued) == 2 and all(r.tags.get("dagster/sensor_name") == SENSOR for r in queued)
    with closing(postgres_db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM job_ticks WHERE selector_id = %s AND status = 'SUCCESS'", (state.selector_id,))
        assert cur.fetchone() == (2,)
