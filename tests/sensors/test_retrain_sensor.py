"""The retrain sensor evaluated by Dagster against a real instance, after real runs of the monitoring job on a real
monitored world (tests/aiflow/monitoring/world.py): a signal that persists gives exactly one run request carrying
its reason (hysteresis first), the webhook (a real HTTP receiver on 127.0.0.1) hears of it, a second tick decides
nothing twice, a running retrain blocks the next one, and the reason reaches the model the retrain produces."""

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
from aiflow.models.registry import Registry
from aiflow.monitoring import history
from aiflow.storage.artifacts import ArtifactStore
from definitions import build_definitions
from resources.notify import NotifierResource
from resources.profiles import local_resources
from tests.aiflow.monitoring.world import SERVED, World, build_world, rides_spec, serve_week

POLICY = {"retrain": {"signals": ["drift"], "hysteresis": 2, "min_rows": 300, "cooldown_days": 0}}
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

    def tick():
        context = build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name, resources=defs.resources)
        return sensor.evaluate_tick(context)

    def monitor():
        assert defs.resolve_job_def("rides_monitoring_job").execute_in_process(instance=instance).success

    for week, shifted in enumerate([False, True, True, False]):
        serve_week(world, week, shifted=shifted)
    monitor()  # three complete windows: same, shifted, shifted
    first = tick()
    shifted_again = SERVED + dt.timedelta(days=14)
    assert [r.run_key for r in first.run_requests] == [f"rides-retrain-{shifted_again}"]
    tags = first.run_requests[0].tags
    assert tags["aiflow/window"] == shifted_again.isoformat() and "drift" in tags["aiflow/reason"]
    # the drift asset announced both drifted windows, the sensor the retrain
    assert [b["event"] for b in receiver.bodies] == ["drift", "drift", "retrain"] and "rides" in receiver.bodies[-1]["text"]
    decisions = history.read_decisions(world.lake, "rides")
    assert decisions["action"].to_list() == ["skip", "skip", "retrain"]
    assert "hysteresis" in decisions["reason"][1] and decisions["evaluator"].unique().to_list() == ["sensor"]

    again = tick()  # nothing newly monitored: a skip, nothing decided twice
    assert not again.run_requests and "no newly monitored window" in again.skip_message
    assert history.read_decisions(world.lake, "rides").height == 3

    # a retrain in progress: the next window that fires is skipped, with the reason
    retrain = defs.resolve_job_def("rides_retrain_job")
    instance.create_run_for_job(retrain, status=DagsterRunStatus.STARTED, tags={"aiflow/retrain": "rides"})
    for week in (4, 5, 6):  # weeks 4 and 5 drift (hysteresis met at 5); 6 completes 5
        serve_week(world, week, shifted=True)
    monitor()
    blocked = tick()
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


def test_the_fallback_schedule_retrains_a_champion_older_than_the_maximum_age(built: World, tmp_path):
    from dagster import build_schedule_context

    defs = build_definitions(rides_spec_path(tmp_path), resources=local_resources(str(built.home)))  # read-only use of the world
    schedule = defs.get_schedule_def("rides_retrain_schedule")
    registered = Registry(built.lake).get("rides", built.version).created_at
    (tmp_path / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster_home"))  # a schedule context with resources needs a reloadable instance

    def tick(days: float):
        # as a context manager: the context enters the instance it reloads, and must leave it (Dagster keeps the
        # instance's state storage in a context variable that later definitions loads read)
        when = registered + dt.timedelta(days=days)
        with build_schedule_context(instance=instance, scheduled_execution_time=when, resources=defs.resources) as context:
            return schedule.evaluate_tick(context)

    young = tick(10)
    assert not young.run_requests and "10.0 days old" in young.skip_message
    old = tick(40)
    assert len(old.run_requests) == 1 and "40 days old (> 35)" in old.run_requests[0].tags["aiflow/reason"]


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
