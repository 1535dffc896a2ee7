"""The retrain sensor and the fallback schedule evaluated by Dagster against a real instance, after real partition runs
of the monitoring job (one per window, in data-time order) on a real monitored world (tests/aiflow/monitoring/world.py):
a signal gives exactly one run request carrying its reason, the webhook (a real HTTP
receiver on 127.0.0.1) hears of it, a second tick requests nothing twice, a running retrain blocks the next one, and the
reason reaches the model the retrain produces; the schedule counts the champion's age in data time and obeys the budget."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context

from aiflow.models.bundle import verify_bundle
from aiflow.models.candidates import Handoffs
from aiflow.monitoring import history
from aiflow.monitoring.partition import window_status
from aiflow.storage.artifacts import ArtifactStore
from definitions import build_definitions
from resources.notify import NotifierResource
from resources.profiles import local_resources
from tests.aiflow.monitoring.world import SERVED, World, build_world, rides_spec, serve_week

POLICY = {"retrain": {"signals": ["drift"], "hysteresis": 2, "min_rows": 300, "cooldown_days": 0, "budget": 4, "budget_burst": 2}}
FAST_TRAINING = {"ops": {"rides__candidate": {"config": {"families": ["sklearn"], "sklearn_max_iter": 30, "baseline_max_rows": 2000}}}}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("sensor-world"), rides_spec(**POLICY))


class Receiver:
    """A webhook receiver on a free loopback port that keeps every JSON body it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_the_sensor_requests_one_retrain_when_the_signal_persists_and_records_every_decision(built: World, tmp_path, receiver):
    shutil.copytree(built.home, tmp_path / "home")
    world = World(tmp_path / "home", built.spec, built.version)
    spec_path = world.home / "rides.yaml"
    spec_path.write_text(yaml.safe_dump(world.spec.model_dump(mode="json", exclude_none=True)))
    defs = build_definitions(spec_path, resources={**local_resources(str(world.home)), "notifier": NotifierResource(url=receiver.url)})
    instance = DagsterInstance.ephemeral()
    sensor = defs.get_sensor_def("rides_retrain_sensor")

    def tick(cursor=None):
        context = build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name, resources=defs.resources, cursor=cursor)
        return sensor.evaluate_tick(context)

    monitored: list[dt.date] = []

    def monitor():
        """What the monitoring sensor asks for: each complete window not monitored yet, oldest first."""
        for window in window_status(world.lake, world.spec).filter("complete")["window_start"]:
            if window not in monitored:
                job = defs.resolve_job_def("rides_monitoring_job")
                assert job.execute_in_process(instance=instance, partition_key=window.isoformat()).success
                monitored.append(window)

    for week, shifted in enumerate([False, True, True, False]):
        serve_week(world, week, shifted=shifted)
    monitor()  # the served weeks as calendar weeks of Asia/Tokyo: same, shifted, shifted (and the last, same, complete too)
    first = tick()
    shifted = SERVED + dt.timedelta(days=7)  # drift is news once, where the data moved (no hysteresis)
    shifted_again = SERVED + dt.timedelta(days=14)
    assert [r.run_key for r in first.run_requests] == [f"rides-retrain-{shifted}"]
    tags = first.run_requests[0].tags
    assert tags["aiflow/window"] == shifted.isoformat() and "drift" in tags["aiflow/reason"]
    assert tags["aiflow/trigger"] == "retrain_sensor"
    # the drift asset announced the week the data moved (the next, shifted the same way, is not news), the sensor the retrain
    events = [b["event"] for b in receiver.bodies]
    assert events.count("drift") == 1 and events.count("retrain") == 1 and "rides" in receiver.bodies[-1]["text"]
    decisions = history.read_decisions(world.lake, "rides")
    assert decisions["action"].to_list()[:3] == ["skip", "retrain", "skip"] and decisions["window_start"].n_unique() == decisions.height
    assert "no signal crossed" in decisions["reason"][2] and all(e.startswith("dagster run ") for e in decisions["evaluator"])

    again = tick(first.cursor)  # nothing newly decided: a skip, nothing requested twice
    assert not again.run_requests and "no new decision" in again.skip_message
    # a window computed again (late labels, a backfill) keeps one decision, and an old window never retrains again
    job = defs.resolve_job_def("rides_monitoring_job")
    assert job.execute_in_process(instance=instance, partition_key=shifted_again.isoformat()).success
    assert history.read_decisions(world.lake, "rides").height == decisions.height
    assert not tick(first.cursor).run_requests

    # a retrain in progress: the next window that fires is skipped, with the reason
    retrain = defs.resolve_job_def("rides_retrain_job")
    instance.create_run_for_job(retrain, status=DagsterRunStatus.STARTED, tags={"aiflow/retrain": "rides"})
    for week in (4, 5):  # week 4 moves again (news); 5 completes it
        serve_week(world, week, shifted=True)
    monitor()
    blocked = tick(first.cursor)
    assert not blocked.run_requests
    assert "running" in history.read_decisions(world.lake, "rides")["reason"][-1]


def test_the_reason_of_the_request_reaches_the_model_it_produces(built: World, tmp_path):
    shutil.copytree(built.home, tmp_path / "home")
    world = World(tmp_path / "home", built.spec, built.version)
    spec_path = world.home / "rides.yaml"
    spec_path.write_text(yaml.safe_dump(world.spec.model_dump(mode="json", exclude_none=True)))
    defs = build_definitions(spec_path, resources=local_resources(str(world.home)))
    reason = "retrain: drift share 0.71 > 0.30 in window 2013-02-18 to 2013-02-24, held 2 window(s)."
    result = defs.resolve_job_def("rides_retrain_job").execute_in_process(
        instance=DagsterInstance.ephemeral(), run_config=FAST_TRAINING, tags={"aiflow/reason": reason}, raise_on_error=False
    )
    produced = [c for c in Handoffs(world.lake).candidates("rides") if c.run_id == result.run_id]
    assert len(produced) == 1, "the retrain run trained no candidate"
    bundle = verify_bundle(ArtifactStore(world.artifacts), produced[0].artifact_uri, produced[0].artifact_sha256)
    assert bundle.manifest["lineage"]["reason"] == reason


def test_the_shipped_instance_config_runs_one_retrain_per_model_at_a_time(tmp_path):
    from pathlib import Path

    from sensors.jobs import RETRAIN_TAG

    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "deploy" / "dagster.local.yaml", tmp_path / "dagster.yaml")
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": RETRAIN_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    defs = build_definitions(rides_spec_path(tmp_path), resources=local_resources(str(tmp_path / "home")))
    assert defs.resolve_job_def("rides_retrain_job").tags[RETRAIN_TAG] == "rides"


def rides_spec_path(folder) -> str:
    path = folder / "rides.yaml"
    path.write_text(yaml.safe_dump(rides_spec(**POLICY).model_dump(mode="json", exclude_none=True)))
    return str(path)


def test_the_fallback_schedule_counts_the_champion_age_in_data_time_and_obeys_the_paced_budget(built: World, tmp_path):
    from dagster import build_schedule_context

    from tests.aiflow.monitoring.world import REFERENCE_DAYS, ROWS_PER_DAY, START, rides, weather
    from tests.aiflow.train.conftest import run_data_plane

    shutil.copytree(built.home, tmp_path / "home")
    world = World(tmp_path / "home", built.spec, built.version)
    defs = build_definitions(rides_spec_path(tmp_path), resources=local_resources(str(world.home)))
    schedule = defs.get_schedule_def("rides_retrain_schedule")
    (tmp_path / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))  # a schedule context with resources needs a reloadable instance

    def tick(wall_clock_days: float):
        # the wall clock moves a year on: only data time counts
        when = dt.datetime.now(dt.UTC) + dt.timedelta(days=wall_clock_days)
        with build_schedule_context(instance=instance, scheduled_execution_time=when, resources=defs.resources) as context:
            return schedule.evaluate_tick(context)

    def land(days: range) -> None:
        landing = world.home / "landing"
        for d in days:
            day = START + dt.timedelta(days=d)
            rides(day, ROWS_PER_DAY, seed=d).write_csv(landing / "rides" / f"{day}.csv")
        weather(START + dt.timedelta(days=days.start - 1), len(days) + 1).write_csv(landing / "rides_weather" / f"more-{days.start}.csv")
        run_data_plane(world.lake, landing, world.spec)

    young = tick(365)  # a year of wall clock, no new data: the champion is as young as its data
    assert not young.run_requests and "0 days old in data time" in young.skip_message
    land(range(REFERENCE_DAYS, REFERENCE_DAYS + 30))
    assert "30 days old in data time" in tick(0).skip_message  # at the limit (35): not yet
    land(range(REFERENCE_DAYS + 30, REFERENCE_DAYS + 40))
    old = tick(0)
    assert len(old.run_requests) == 1 and "40 days old in data time (> 35)" in old.run_requests[0].tags["aiflow/reason"]
    newest = old.run_requests[0].tags["aiflow/data"]
    assert old.run_requests[0].run_key == f"rides-scheduled-{newest}"
    # two retrains already started for this data (a burst of 2, 4 per 120 days): paced until the bucket holds
    # one more, 30 days on (the retrain sensor's decisions are paced by the same rule)
    retrain = defs.resolve_job_def("rides_retrain_job")
    for _ in range(2):
        instance.create_run_for_job(retrain, status=DagsterRunStatus.SUCCESS, tags={"aiflow/data": newest})
    paced = tick(1)
    later = dt.date.fromisoformat(newest) + dt.timedelta(days=30)
    assert not paced.run_requests
    assert paced.skip_message.endswith(f"the retrain budget is paced (2 in a burst, then 4 per 120 days): the next retrain may start for data from {later}")
    # four and none replaced the champion: the budget itself stops a daily retrain
    for _ in range(2):
        instance.create_run_for_job(retrain, status=DagsterRunStatus.SUCCESS, tags={"aiflow/data": newest})
    spent = tick(1)
    assert not spent.run_requests and "budget 4" in spent.skip_message


def test_a_failed_run_is_announced_on_the_webhook(tmp_path, receiver):
    from dagster import build_run_status_sensor_context

    from sensors.retrain import run_failure_alert

    defs = build_definitions(rides_spec_path(tmp_path), resources=local_resources(str(tmp_path / "empty")))  # no features: training fails
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def("rides_retrain_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = build_run_status_sensor_context(
        sensor_name=run_failure_alert.name, dagster_event=result.get_run_failure_event(), dagster_instance=instance,
        dagster_run=result.dagster_run, resources={"notifier": NotifierResource(url=receiver.url)},
    ).for_run_failure()  # fmt: skip
    run_failure_alert(context)
    assert [b["event"] for b in receiver.bodies] == ["failure"]
    assert "rides_retrain_job" in receiver.bodies[0]["text"] and result.run_id[:8] in receiver.bodies[0]["text"]
