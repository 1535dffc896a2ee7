"""Scope: the whole closed loop on the s3 profile against a real SeaweedFS server (no S3 mocks), on the small "rides"
dataset (other column names, Asia/Tokyo; the scenario is tests/e2e/s3_loop.py, run once per session): landing on S3 ->
lifecycle job -> a real `aiflow serve` reading its champion from S3 -> inference log and labels -> monitoring job
(drift + report, live performance) -> the retrain sensor's decision; all of it under the S3 lake, nothing in the local
home; server-side encryption (AIFLOW_S3_SSE) on every object written, checked by HEAD against SeaweedFS."""

from __future__ import annotations

import polars as pl
import pytest

from tests.e2e.s3_loop import ROWS_PER_DAY, SERVED, LoopRun

pytestmark = pytest.mark.s3


def test_the_whole_loop_writes_every_table_and_report_under_the_s3_lake(s3_loop_run: LoopRun):
    from aiflow.monitoring import history
    from aiflow.storage.lake import Lake

    run = s3_loop_run
    print(f"\n[s3 loop] seconds per phase: {run.seconds}")
    lake = Lake(f"{run.prefix}/lake", run.s3.storage_options)
    # the server served the champion it read from S3, and logged every record with its label on S3
    assert run.champion_seen == 1
    keys = run.keys()
    for table in (
        "inference_log/rides",
        "labels/rides",
        "monitoring/rides/drift",
        "monitoring/rides/performance",
        "monitoring/rides/decisions",
    ):
        assert any(k.startswith(f"lake/{table}/_delta_log/") for k in keys), f"no Delta table {table} under {run.prefix}/lake"
    assert lake.scan("inference_log/rides").select(pl.len()).collect().item() == run.served
    assert lake.scan("labels/rides").filter(pl.col("known")).select(pl.len()).collect().item() == run.labelled
    # the monitoring job: one complete online window, its report (Evidently HTML) on S3
    drift = history.drift_summary(lake, "rides").filter(pl.col("source") == "online")
    assert drift["window_start"].to_list() == [SERVED]
    reports = [k for k in keys if k.endswith(".html")]
    assert reports and all(k.startswith("lake/") for k in reports)
    html = run.s3.client().get_object(Bucket=run.s3.bucket, Key=f"{run.key_prefix}/{reports[0]}")["Body"].read()
    assert b"<html" in html[:2000].lower()
    perf = history.read_performance(lake, "rides")
    assert perf.filter(pl.col("window_start") == SERVED)["labelled"][0] == ROWS_PER_DAY * 7
    # the sensor decided the shifted window (recorded on S3) and its retrain run registered a second version there
    decisions = history.read_decisions(lake, "rides")
    assert decisions["window_start"].to_list() == [SERVED] and decisions["action"].to_list() == ["retrain"]
    (request,) = run.ticks[0].run_requests
    assert request.run_key == f"rides-retrain-{SERVED}" and "drift" in request.tags["aiflow/reason"]
    # the champion's bundle is under the S3 artifacts root
    from aiflow.models.registry import Registry

    location = Registry(lake).get("rides", 1).location(f"{run.prefix}/artifacts")
    assert location.startswith(f"{run.prefix}/artifacts/") and any(k.startswith("artifacts/rides/") for k in keys)


def test_nothing_of_the_loop_is_written_to_the_local_home(s3_loop_run: LoopRun):
    left = sorted(p.relative_to(s3_loop_run.home).as_posix() for p in s3_loop_run.home.rglob("*"))
    assert left == [], f"the s3 profile wrote into AIFLOW_HOME {s3_loop_run.home}: {left[:20]}"


def test_every_object_the_loop_wrote_is_server_side_encrypted(s3_loop_run: LoopRun):
    # SeaweedFS (4.x) implements SSE-S3: a HEAD answers x-amz-server-side-encryption for objects written with it
    client = s3_loop_run.s3.client()
    written = [k for k in s3_loop_run.keys() if not k.startswith("landing/")]  # the test itself uploaded the landing files
    assert len(written) > 20
    plain = [
        k
        for k in written
        if client.head_object(Bucket=s3_loop_run.s3.bucket, Key=f"{s3_loop_run.key_prefix}/{k}").get("ServerSideEncryption") != "AES256"
    ]
    assert plain == [], f"{len(plain)} of {len(written)} objects written without SSE, e.g. {plain[:10]}"
