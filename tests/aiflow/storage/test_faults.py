"""Scope: aiflow.storage.faults sorts real failures: a down S3 endpoint (delta-rs, Polars) and a down PostgreSQL
(psycopg2, SQLAlchemy) are infrastructure naming the store without credentials; bad input and missing tables are not."""

from __future__ import annotations

import polars as pl
import psycopg2
import pydantic
import pytest
import sqlalchemy
from deltalake import DeltaTable

from aiflow.storage.faults import INFRASTRUCTURE, USER, classify, safe_uri
from aiflow.train.contract import TrainParams
from tests.fixtures.servers import free_ports

SECRET = "s3cr3t-never-logged"


@pytest.fixture(scope="module")
def down() -> str:
    """An endpoint nothing listens on: what a stopped server looks like to its clients."""
    return f"127.0.0.1:{free_ports(1)[0]}"


def s3_options(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": f"http://{endpoint}", "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
    }  # fmt: skip


def raised(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_a_down_s3_endpoint_is_infrastructure_naming_the_table(down):
    stores = {"lake": "s3://bucket/lake", "artifacts": "s3://other/artifacts"}
    for call in (
        lambda: DeltaTable("s3://bucket/lake/features/flights", storage_options=s3_options(down)),
        lambda: pl.scan_delta("s3://bucket/lake/features/flights", storage_options=s3_options(down)).collect(),
    ):
        fault = classify(raised(call), stores)
        assert fault.kind == INFRASTRUCTURE and fault.retryable and fault.store == "lake", fault
        assert fault.message.startswith("storage or network unavailable (lake at s3://bucket/lake): OSError:")
        assert "Connection refused" in fault.message and "\x1b[" not in fault.message and SECRET not in fault.message


def test_a_down_postgresql_is_infrastructure_without_its_password(down):
    host, port = down.split(":")
    uri = f"postgresql://dagster:{SECRET}@{host}:{port}/dagster"
    engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg2://"))  # the driver dagster-postgres uses
    for call in (lambda: psycopg2.connect(uri, connect_timeout=5), engine.connect):
        fault = classify(raised(call), {"dagster storage": uri})
        assert fault.kind == INFRASTRUCTURE, fault
        assert "dagster storage at postgresql://dagster:***@127.0.0.1" in fault.message and SECRET not in fault.message


def test_an_outage_found_anywhere_in_the_chain_counts():
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as inner:
            raise ValueError("could not read the features") from inner
    except ValueError as outer:
        fault = classify(outer, {"lake": "/data/lake"})
    assert fault.kind == INFRASTRUCTURE and fault.message.startswith("storage or network unavailable (lake at /data/lake): ConnectionRefusedError")


def test_bad_input_and_missing_tables_are_not_retried(tmp_path):
    validation = raised(lambda: TrainParams(epochs=-1))
    assert isinstance(validation, pydantic.ValidationError)
    missing = raised(lambda: DeltaTable(str(tmp_path / "nowhere")))
    for exc in (validation, missing, ValueError("spec: column 'carrier' is not in the file"), KeyError("target")):
        fault = classify(exc, {"lake": str(tmp_path)})
        assert fault.kind == USER and not fault.retryable and fault.store is None, (exc, fault)
        assert fault.message.startswith(type(exc).__name__)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("postgresql://dagster:pw@db:5432/dagster", "postgresql://dagster:***@db:5432/dagster"),
        ("postgresql://dagster@db/dagster?sslmode=require&password=pw", "postgresql://dagster@db/dagster?sslmode=require&password=***"),
        ("https://host/x?X-Amz-Signature=abc&part=1", "https://host/x?X-Amz-Signature=***&part=1"),
        ("s3://bucket/lake", "s3://bucket/lake"),
        ("/data/lake", "/data/lake"),
    ],
)
def test_safe_uri_masks_credentials_only(uri, expected):
    assert safe_uri(uri) == expected
