"""Scope: the whole closed loop on the s3 profile against a real SeaweedFS server (no S3 mocks), on the small "rides"
dataset (other column names, Asia/Tokyo; the scenario is tests/e2e/s3_loop.py, run once per session): landing on S3 ->
lifecycle job -> a real `aiflow serve` reading its champion from S3 -> inference log and labels -> monitoring job
(drift + report, live performance) -> the retrain sensor's decision; all of it under the S3 lake, nothing in the local
home; server-side encryption (AIFLOW_S3_SSE) on every object written, checked by HEAD against SeaweedFS."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from tests.aiflow.monitoring.world import rides_spec
from tests.e2e.s3_loop import ROWS_PER_DAY, SERVED, LoopRun

pytestmark = [pytest.mark.s3, pytest.mark.slow]  # end to end: run by ./scripts/test after the default suite


def test_the_whole_loop_writes_every_table_and_report_under_the_s3_lake(s3_loop_run: LoopRun):
    from aiflow.monitoring import history
    from aiflow.storage.lake import Lake

    run = s3_loop_run
    print(f"\n[s3 loop] seconds per phase: {run.seconds}; champion after the retrain: v{run.champion_after}")
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
    # the window is a calendar week in the dataset's timezone (Asia/Tokyo): the records whose local date falls in it
    served_ts = lake.scan("inference_log/rides").select(pl.col("input").str.json_path_match("$.ts")).collect().to_series()
    local = served_ts.str.to_datetime(time_zone="UTC").dt.convert_time_zone("Asia/Tokyo").dt.date()
    in_window = int(local.is_between(SERVED, SERVED + dt.timedelta(days=6)).sum())
    assert ROWS_PER_DAY * 6 < in_window < ROWS_PER_DAY * 8
    assert perf.filter(pl.col("window_start") == SERVED)["labelled"][0] == in_window
    # the sensor decided the shifted window (recorded on S3) and its retrain run registered a second version there
    decisions = history.read_decisions(lake, "rides")
    assert decisions["window_start"].to_list() == [SERVED] and decisions["action"].to_list() == ["retrain"]
    (request,) = run.ticks[0].run_requests
    assert request.run_key == f"rides-retrain-{SERVED}" and "drift" in request.tags["aiflow/reason"]
    # the champion's bundle is under the S3 artifacts root
    from aiflow.models.registry import Registry

    registry = Registry(lake)
    location = registry.get("rides", 1).location(f"{run.prefix}/artifacts")
    assert location.startswith(f"{run.prefix}/artifacts/") and any(k.startswith("artifacts/rides/") for k in keys)
    # the retrain run registered v2 on S3 with the sensor's reason; promoted or not, the server serves the champion
    v2 = registry.get("rides", 2)
    assert "drift" in (v2.reason or "") and v2.location(f"{run.prefix}/artifacts").startswith(f"{run.prefix}/artifacts/")
    assert run.champion_after in (1, 2)
    # what the retrain ended in is recorded on S3 too, beside the window's decision
    assert any(k.startswith("lake/monitoring/rides/retrain_outcomes/_delta_log/") for k in keys)
    ended = history.read_decisions(lake, "rides").row(0, named=True)
    assert ended["retrain_version"] == 2 and ended["retrain_outcome"] == ("promoted" if run.champion_after == 2 else "challenger")
    if run.champion_after == 2:
        assert run.champion_seen_after == 2  # hot-reloaded from the S3 registry by the running server


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


# ------------------------------------------------------------------------------------------ server-side encryption
S3_ENV = {
    "AIFLOW_PROFILE": "s3",
    "AIFLOW_LAKE_URI": "s3://b/lake",
    "AIFLOW_LANDING_URI": "s3://b",
    "AIFLOW_ARTIFACT_URI": "s3://b/artifacts",
}


def test_a_wrong_sse_setting_is_refused_naming_the_variable(monkeypatch):
    from aiflow.storage.settings import Settings, SettingsError
    from resources.profiles import resources_for

    with pytest.raises(SettingsError, match=r"AIFLOW_S3_SSE must be one of AES256, aws:kms, none .*'AES-256'"):
        Settings.from_env({**S3_ENV, "AIFLOW_S3_SSE": "AES-256"})
    with pytest.raises(SettingsError, match="AIFLOW_S3_SSE_KMS_KEY_ID needs AIFLOW_S3_SSE=aws:kms"):
        Settings.from_env({**S3_ENV, "AIFLOW_S3_SSE": "AES256", "AIFLOW_S3_SSE_KMS_KEY_ID": "k"})
    with pytest.raises(SettingsError, match="AIFLOW_S3_SSE_KMS_KEY_ID is set but AIFLOW_S3_SSE is not"):
        Settings.from_env({**S3_ENV, "AIFLOW_S3_SSE_KMS_KEY_ID": "k"})
    monkeypatch.setenv("AIFLOW_S3_SSE", "kms")
    with pytest.raises(SettingsError, match="AIFLOW_S3_SSE"):  # the code location refuses to load
        resources_for("s3")
    settings = Settings.from_env(
        {
            **S3_ENV,
            "AIFLOW_S3_SSE": "aws:kms",
            "AIFLOW_S3_SSE_KMS_KEY_ID": "alias/aiflow",
            "AWS_ACCESS_KEY_ID": "a",
            "AWS_SECRET_ACCESS_KEY": "s",
        }
    )
    assert settings.storage_options()["aws_server_side_encryption"] == "aws:kms"
    assert settings.storage_options()["aws_sse_kms_key_id"] == "alias/aiflow"
    assert "server-side encryption aws:kms" in settings.describe()


class Sent(Exception):
    """Raised by the before-send hook: the request was built (headers signed) and is not sent."""


def test_sse_kms_requests_carry_the_key_from_artifacts_and_landing_writes(s3_server, s3_prefix, monkeypatch):
    # SeaweedFS has no KMS (an aws:kms PUT answers InternalError): the headers are checked on the signed request,
    # captured by a botocore before-send hook that stops it before it leaves
    from aiflow.storage import settings as cfg
    from aiflow.storage.artifacts import ArtifactStore
    from aiflow.storage.landing import S3LandingZone

    options = {**s3_server.storage_options, "aws_server_side_encryption": "aws:kms", "aws_sse_kms_key_id": "alias/aiflow"}
    captured: list[dict] = []

    def stop(request, **_):
        captured.append({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})
        raise Sent(request.method)

    real = cfg.s3_client

    def capturing(opts):
        client = real(opts)
        client.meta.events.register("before-send.s3", stop)
        return client

    monkeypatch.setattr(cfg, "s3_client", capturing)
    with pytest.raises(Sent):
        ArtifactStore(f"{s3_prefix}/artifacts", storage_options=options).put_bytes("m/v1/model.bin", b"weights")
    zone = S3LandingZone(cfg.s3_client(options), f"{s3_prefix}/landing/rides")
    with pytest.raises(Sent):
        zone.reject("day.csv", "batch-1", "bad header")  # CopyObject first
    assert len(captured) == 2
    for headers in captured:
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == "alias/aiflow"


def test_sse_s3_reaches_the_server_for_landing_writes_and_is_absent_without_the_setting(s3_server, s3_prefix):
    from dagster import build_resources
    from dagster_aws.s3 import S3Resource

    from aiflow.storage.artifacts import ArtifactStore
    from resources.storage import S3LandingResource

    client, bucket = s3_server.client(), s3_server.bucket
    key_prefix = s3_prefix.removeprefix(f"s3://{bucket}/")
    client.put_object(Bucket=bucket, Key=f"{key_prefix}/landing/rides/day.csv", Body=b"a,b\n1,2\n")
    s3 = S3Resource(
        aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key, region_name=s3_server.region,
        endpoint_url=s3_server.endpoint_url,
    )  # fmt: skip
    landing = S3LandingResource(s3=s3, root_uri=s3_prefix, sse="AES256")
    table = rides_spec()  # its main table lands in landing/rides
    with build_resources({"landing": landing}) as built:
        rejected = built.landing.zone(table).reject("day.csv", "batch-1", "bad header")
    key = rejected.removeprefix(f"s3://{bucket}/")
    assert client.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption") == "AES256"
    assert client.head_object(Bucket=bucket, Key=key + ".reason.txt").get("ServerSideEncryption") == "AES256"
    # without the setting nothing is encrypted (SeaweedFS does not encrypt by default: the HEAD checks above can fail)
    plain = ArtifactStore(f"{s3_prefix}/artifacts", storage_options=s3_server.storage_options).put_bytes("x.bin", b"x")
    assert client.head_object(Bucket=bucket, Key=plain.removeprefix(f"s3://{bucket}/")).get("ServerSideEncryption") is None


def test_a_refused_encrypted_write_names_the_uri(s3_server, s3_prefix):
    from aiflow.storage.artifacts import ArtifactStore

    # SeaweedFS has no KMS: it refuses an aws:kms PUT, and the error says which file and which encryption
    options = {**s3_server.storage_options, "aws_server_side_encryption": "aws:kms"}
    store = ArtifactStore(f"{s3_prefix}/artifacts", storage_options=options)
    with pytest.raises(OSError, match=rf"could not write {s3_prefix}/artifacts/m/model.bin \(aws:kms encryption\)"):
        store.put_bytes("m/model.bin", b"weights")
