"""Scope: the s3 profile end to end through Dagster against a real SeaweedFS server (no S3 mocks)."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import DagsterInstance, RunRequest, build_resources, build_sensor_context, materialize

from aiflow.storage.lake import Lake, Tables
from definitions import build_definitions
from resources.profiles import resources_for
from resources.storage import ArtifactsResource
from tests.dagster_helpers import DATA_PLANE

pytestmark = [pytest.mark.s3, pytest.mark.slow]  # end to end: run by ./scripts/test after the default suite


def _upload(client, bucket: str, prefix: str, folder) -> list[str]:
    keys = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.upload_file(str(path), bucket, key)
            keys.append(key)
    return keys


def test_s3_profile_sensor_and_data_plane(s3_server, s3_prefix, demo_landing, monkeypatch):
    prefix = s3_prefix.removeprefix(f"s3://{s3_server.bucket}/")
    monkeypatch.setenv("AIFLOW_LAKE_URI", f"{s3_prefix}/lake")
    monkeypatch.setenv("AIFLOW_LANDING_URI", s3_prefix)
    monkeypatch.setenv("AIFLOW_ARTIFACT_URI", f"{s3_prefix}/artifacts")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    _upload(s3_server.client(), s3_server.bucket, f"{prefix}/landing", demo_landing)

    defs = build_definitions(resources=resources_for("s3"))
    instance = DagsterInstance.ephemeral()

    # the sensor lists the S3 landing zones through dagster-aws's client
    sensor = defs.resolve_sensor_def("flights_landing_sensor")
    with build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as context:
        requests = [r for r in sensor(context) if isinstance(r, RunRequest)]
    assert len(requests) == 1
    assert requests[0].run_config["ops"]["flights__bronze_flights"]["config"]["files"] == [f"2013-01-0{d}.csv" for d in range(1, 6)]

    job = defs.resolve_job_def("flights_data_plane_job")
    result = job.execute_in_process(run_config=requests[0].run_config, instance=instance)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())

    lake = Lake(f"{s3_prefix}/lake", s3_server.storage_options)
    landed = sum(pl.read_csv(p, infer_schema=False).height for p in (demo_landing / "flights").glob("*.csv"))
    assert lake.scan(Tables.bronze("flights")).select(pl.len()).collect().item() == landed
    assert lake.scan(Tables.features("flights")).select(pl.len()).collect().item() == landed
    bronze_meta = result.asset_materializations_for_node("flights__bronze_flights")[0].metadata
    assert bronze_meta["delta_uri"].value == f"{s3_prefix}/lake/bronze/flights"

    # running again with nothing new changes no table
    versions = {t: lake.version(t) for t in (Tables.bronze("flights"), Tables.silver("flights"), Tables.features("flights"))}
    again = materialize([*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance, selection=DATA_PLANE)
    assert again.success
    assert lake.version(Tables.bronze("flights")) == versions[Tables.bronze("flights")]
    assert lake.scan(Tables.features("flights")).select(pl.len()).collect().item() == landed


AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP")


def test_artifacts_resource_takes_s3_credentials_as_fields_not_from_the_environment(s3_server, s3_prefix, monkeypatch):
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    fields = dict(
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
        region=s3_server.region,
        endpoint_url=s3_server.endpoint_url,
        allow_http=True,
    )
    store = ArtifactsResource(root=f"{s3_prefix}/artifacts", **fields).store()
    assert store.put_bytes("flights/v1/model.bin", b"weights") == f"{s3_prefix}/artifacts/flights/v1/model.bin"
    bucket_prefix = s3_prefix.removeprefix(f"s3://{s3_server.bucket}/")
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"{bucket_prefix}/artifacts/flights/v1/model.bin")["Body"]
    assert body.read() == b"weights"
    wrong = ArtifactsResource(root=f"{s3_prefix}/artifacts", **{**fields, "secret_access_key": "not-the-secret"}).store()
    with pytest.raises(OSError) as refused:  # the fields are what the store signs with
        wrong.get_bytes("flights/v1/model.bin")
    assert not isinstance(refused.value, FileNotFoundError), refused.value


def test_s3_profile_artifacts_resolve_their_env_vars_at_run_time(s3_server, s3_prefix, monkeypatch):
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)  # decides at load time that the endpoint is an EnvVar
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    artifacts = resources_for("s3")["artifacts"]  # loads without the secrets
    monkeypatch.setenv("AIFLOW_ARTIFACT_URI", f"{s3_prefix}/artifacts")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    with build_resources({"artifacts": artifacts}) as built:
        store = built.artifacts.store()
        assert store.root == f"{s3_prefix}/artifacts"
        store.put_bytes("run/plot.png", b"png")
        assert store.get_bytes("run/plot.png") == b"png"
    assert s3_server.secret_key not in repr(store)
