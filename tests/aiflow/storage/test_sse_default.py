"""Server-side encryption is on by default: with AIFLOW_S3_SSE unset every object the s3 profile writes - Delta files through
delta-rs, artifacts through boto3, also from a training process that reads only its environment - reaches SeaweedFS with
AES256; AIFLOW_S3_SSE=none is the one way to turn it off."""

from __future__ import annotations

import polars as pl
import pytest

from aiflow.storage import settings as cfg
from aiflow.storage.artifacts import SSE_OPTION, ArtifactStore, sse_options


def test_unset_means_aes256_none_means_off_and_kms_is_kept():
    assert sse_options(None) == sse_options("") == {SSE_OPTION: "AES256"}
    assert sse_options("none") == sse_options("NONE") == {}
    assert sse_options("aws:kms", "alias/k") == {SSE_OPTION: "aws:kms", "aws_sse_kms_key_id": "alias/k"}
    with pytest.raises(ValueError, match="AIFLOW_S3_SSE_KMS_KEY_ID needs AIFLOW_S3_SSE=aws:kms"):
        sse_options("none", "alias/k")
    with pytest.raises(ValueError, match="AIFLOW_S3_SSE must be one of AES256, aws:kms, none"):
        sse_options("AES-256")


def encryption_of(s3_server, uri: str) -> str | None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3_server.client().head_object(Bucket=bucket, Key=key).get("ServerSideEncryption")


def profile_env(s3_server, prefix: str, **extra: str) -> dict[str, str]:
    """The s3 profile's environment as a deployment sets it: URIs, the key, the endpoint - and no AIFLOW_S3_SSE."""
    options = s3_server.storage_options
    return {
        cfg.PROFILE: "s3", cfg.LAKE_URI: f"{prefix}/lake", cfg.LANDING_URI: prefix, cfg.ARTIFACT_URI: f"{prefix}/artifacts",
        cfg.ACCESS_KEY_ID: options["AWS_ACCESS_KEY_ID"], cfg.SECRET_ACCESS_KEY: options["AWS_SECRET_ACCESS_KEY"],
        cfg.REGION: options["AWS_REGION"], cfg.ENDPOINT_URL: options["AWS_ENDPOINT_URL"], cfg.ALLOW_HTTP: "true", **extra,
    }  # fmt: skip


def test_every_object_is_encrypted_when_nothing_is_configured(s3_server, s3_prefix, monkeypatch):
    settings = cfg.Settings.from_env(profile_env(s3_server, s3_prefix))
    settings.lake().overwrite("bronze/sse_probe", pl.DataFrame({"id": [1, 2], "x": ["a", "b"]}))
    artifact = settings.artifact_store().put_bytes("probe/model.bin", b"weights")
    bucket, _, key_prefix = s3_prefix.removeprefix("s3://").partition("/")
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"{key_prefix}/lake/bronze/sse_probe/")["Contents"]
    keys = [f"s3://{bucket}/{o['Key']}" for o in listed]
    assert any(k.endswith(".parquet") for k in keys) and any("/_delta_log/" in k for k in keys)
    assert {k: encryption_of(s3_server, k) for k in [*keys, artifact]} == dict.fromkeys([*keys, artifact], "AES256")

    # a training process gets only its environment (the pod's Secret): the same default applies there
    for name, value in profile_env(s3_server, s3_prefix).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(cfg.SSE, raising=False)
    from_env = ArtifactStore(f"{s3_prefix}/artifacts").put_bytes("probe/checkpoint.pt", b"state")
    assert encryption_of(s3_server, from_env) == "AES256"


def test_none_turns_encryption_off(s3_server, s3_prefix):
    settings = cfg.Settings.from_env(profile_env(s3_server, s3_prefix, **{cfg.SSE: "none"}))
    assert SSE_OPTION not in settings.storage_options()
    plain = settings.artifact_store().put_bytes("probe/plain.bin", b"x")
    assert encryption_of(s3_server, plain) is None  # SeaweedFS does not encrypt on its own: the header is what did it
