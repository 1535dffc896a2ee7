"""Scope: the s3 profile end to end through Dagster against a real SeaweedFS server (no S3 mocks)."""

from __future__ import annotations

import polars as pl
import pytest
from dagster import DagsterInstance, RunRequest, build_sensor_context, materialize

from aiflow.storage.lake import Lake, Tables
from definitions import build_definitions
from resources.profiles import resources_for
from tests.dagster_helpers import DATA_PLANE

pytestmark = pytest.mark.s3


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
