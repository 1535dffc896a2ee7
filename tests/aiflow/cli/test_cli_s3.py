"""Scope: the `aiflow` CLI (real subprocesses) on the s3 profile against a real SeaweedFS server: demo landing writes to S3, status and models read the S3 lake and never a decoy local one, s3:// homes are refused without creating a folder named "s3:", and no secret appears in any output."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from aiflow.data.demo import write_landing
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.models.registry import Registry
from aiflow.spec import parse_spec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.settings import Settings
from tests.aiflow.tiny import TINY, TRIPS_ROWS, csv_bytes

AIFLOW = str(Path(sys.executable).with_name("aiflow"))


def clean_env() -> dict[str, str]:
    """This process's environment without any aiflow or AWS setting (each test says what it wants)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIFLOW_", "AWS_"))}


def aiflow(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AIFLOW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def register(lake: Lake, reason: str) -> None:
    Registry(lake).register(
        "flights",
        artifact_uri=f"/artifacts/{reason}",
        artifact_sha256=hashlib.sha256(reason.encode()).hexdigest(),
        training_table=lake.uri(Tables.features("flights")),
        training_version=0,
        metrics={"auc": 0.7},
        baseline_metrics={"auc": 0.6},
        params={},
        gate_results={},
        gates_passed=True,
        reason=reason,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory holding a decoy local lake (`.aiflow/lake`): one bronze row and a model the S3 runs must never show."""
    work = tmp_path / "work"
    lake = Lake(work / ".aiflow" / "lake")
    lake.append(Tables.bronze("flights"), pl.DataFrame({"decoy": [1]}))
    register(lake, "decoy-local")
    return work


@pytest.fixture
def s3_env(s3_server, s3_prefix) -> dict[str, str]:
    return {
        **clean_env(),
        "AIFLOW_PROFILE": "s3",
        "AIFLOW_LAKE_URI": f"{s3_prefix}/lake",
        "AIFLOW_LANDING_URI": s3_prefix,
        "AIFLOW_ARTIFACT_URI": f"{s3_prefix}/artifacts",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ALLOW_HTTP": "true",
    }


def no_secret(s3_server, *runs: subprocess.CompletedProcess) -> None:
    for run in runs:
        for text in (run.stdout, run.stderr):
            assert s3_server.secret_key not in text
            assert s3_server.access_key not in text


def table_row(stdout: str, table: str) -> list[str]:
    """Cells of the status table's row for ``table``."""
    found = [[c.strip() for c in line.strip().strip("│").split("┆")] for line in stdout.splitlines() if f"┆ {table} " in line or f"│ {table} " in line]
    assert len(found) == 1, stdout
    return found[0]


@pytest.mark.s3
def test_demo_landing_then_status_and_models_read_the_s3_lake(s3_server, s3_prefix, s3_env, workdir, spec, tmp_path):
    decoy = Lake(workdir / ".aiflow" / "lake")
    decoy_versions = Registry(decoy).versions().height

    landed = aiflow(workdir, s3_env, "demo", "landing", "--days", "2")
    assert landed.returncode == 0, landed.stderr
    assert f"aiflow: profile s3: lake {s3_prefix}/lake | landing {s3_prefix} | artifacts {s3_prefix}/artifacts" in landed.stderr
    assert "file" in landed.stderr and "2/2" in landed.stderr  # the progress bar
    assert f"2 flight files (2013-01-01.csv .. 2013-01-02.csv) and the weather under {s3_prefix}/landing" in landed.stdout

    # exactly where the README says: <AIFLOW_LANDING_URI>/landing/<table>/, the same bytes as a local demo landing
    bucket_prefix = s3_prefix.removeprefix(f"s3://{s3_server.bucket}/")
    client = s3_server.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket, Prefix=bucket_prefix)["Contents"])
    assert keys == [f"{bucket_prefix}/landing/{name}" for name in ("flights/2013-01-01.csv", "flights/2013-01-02.csv", "weather/weather-2013.csv")]
    local = tmp_path / "local_landing"
    write_landing(local, days=2, start=dt.date(2013, 1, 1))
    for name in ("flights/2013-01-02.csv", "weather/weather-2013.csv"):
        body = client.get_object(Bucket=s3_server.bucket, Key=f"{bucket_prefix}/landing/{name}")["Body"].read()
        assert body == (local / name).read_bytes()

    # the data plane through the same settings the CLI uses, then one registered model on S3
    settings = Settings.from_env(s3_env)
    lake = settings.lake()
    for table in spec.tables:
        zone = settings.landing_zone(table)
        assert zone.uri == f"{s3_prefix}/landing/{table.name}"
        ingest(lake, zone, table)
        refresh_silver(lake, table)
    refresh_features(lake, spec)
    register(lake, "s3-model")
    rows = sum(pl.read_csv(p, infer_schema=False).height for p in (local / "flights").glob("*.csv"))

    status = aiflow(workdir, s3_env, "status")
    listing = aiflow(workdir, s3_env, "models", "list")
    assert status.returncode == 0, status.stderr
    assert listing.returncode == 0, listing.stderr
    bronze = table_row(status.stdout, "bronze/flights")
    assert bronze[1:] == [str(lake.version(Tables.bronze("flights"))), str(rows), f"{s3_prefix}/lake/bronze/flights"]
    assert table_row(status.stdout, "features/flights")[2] == str(rows)
    assert str(workdir) not in status.stdout
    assert "s3-model" in listing.stdout and "decoy-local" not in listing.stdout
    for run in (status, listing):
        assert f"aiflow: profile s3: lake {s3_prefix}/lake" in run.stderr
    no_secret(s3_server, landed, status, listing)

    # the decoy local lake was neither read nor written
    assert Registry(decoy).versions().height == decoy_versions
    local_status = aiflow(workdir, clean_env(), "status")
    assert f"aiflow: profile local: lake {workdir / '.aiflow' / 'lake'}" in local_status.stderr
    assert not (workdir / ".aiflow" / "landing").exists()


@pytest.mark.s3
def test_a_non_demo_spec_on_s3(s3_server, s3_prefix, s3_env, workdir):
    spec_path = workdir / "trips.yaml"
    spec_path.write_text(yaml.safe_dump(copy.deepcopy(TINY)))
    tiny = parse_spec(copy.deepcopy(TINY), "tiny")
    settings = Settings.from_env(s3_env)
    zone_uri = settings.landing_uri_for(tiny)
    assert zone_uri == f"{s3_prefix}/landing/trips"
    bucket, _, prefix = zone_uri.removeprefix("s3://").partition("/")
    s3_server.client().put_object(Bucket=bucket, Key=f"{prefix}/2013-01-01.csv", Body=csv_bytes(TRIPS_ROWS))
    ingest(settings.lake(), settings.landing_zone(tiny), tiny)

    status = aiflow(workdir, s3_env, "--spec", str(spec_path), "status")
    assert status.returncode == 0, status.stderr
    assert table_row(status.stdout, "bronze/trips")[2:] == [str(len(TRIPS_ROWS)), f"{s3_prefix}/lake/bronze/trips"]
    assert table_row(status.stdout, "silver/trips")[1:3] == ["null", "null"]
    no_secret(s3_server, status)


@pytest.mark.s3
def test_missing_secret_is_named_and_nothing_local_is_read(s3_server, s3_env, workdir):
    env = {k: v for k, v in s3_env.items() if k != "AWS_SECRET_ACCESS_KEY"}
    status = aiflow(workdir, env, "status")
    listing = aiflow(workdir, env, "models", "list")
    assert status.returncode == 2
    assert "aiflow: error: AIFLOW_PROFILE=s3 needs the S3 credentials AWS_SECRET_ACCESS_KEY in the environment" in status.stderr
    assert listing.returncode == 1
    assert "aiflow models list: error: AIFLOW_PROFILE=s3 needs the S3 credentials AWS_SECRET_ACCESS_KEY" in listing.stderr
    assert status.stdout == listing.stdout == ""
    no_secret(s3_server, status, listing)


@pytest.mark.parametrize(
    ("extra_env", "args", "named"),
    [
        ({}, ["--home", "s3://bucket/team", "status"], "--home"),
        ({}, ["--home", "s3://bucket/team", "models", "list"], "--home"),
        ({"AIFLOW_HOME": "s3://bucket/team"}, ["demo", "landing", "--days", "1"], "AIFLOW_HOME"),
    ],
)
def test_an_s3_home_is_refused_and_creates_no_folder(tmp_path, extra_env, args, named):
    run = aiflow(tmp_path, {**clean_env(), **extra_env}, *args)
    assert run.returncode == 2
    assert f"aiflow: error: {named} must be a local folder, got 's3://bucket/team'. For S3, set AIFLOW_PROFILE=s3" in run.stderr
    assert "AIFLOW_LAKE_URI=s3://bucket/team/lake" in run.stderr
    assert list(tmp_path.iterdir()) == []  # no "s3:" folder, nothing else either


def test_home_flag_on_the_s3_profile_is_refused(tmp_path):
    env = {**clean_env(), "AIFLOW_PROFILE": "s3", "AIFLOW_LAKE_URI": "s3://b/lake", "AIFLOW_LANDING_URI": "s3://b", "AIFLOW_ARTIFACT_URI": "s3://b/a"}
    run = aiflow(tmp_path, env, "--home", str(tmp_path / "home"), "status")
    assert run.returncode == 2
    assert "aiflow: error: --home is the local profile's folder; AIFLOW_PROFILE=s3 takes its storage from AIFLOW_LAKE_URI" in run.stderr
    assert list(tmp_path.iterdir()) == []
