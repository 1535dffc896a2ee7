"""Lake and landing-zone resources: local folder or S3, same interface, chosen by the profile."""

import os
from pathlib import Path

from dagster import ConfigurableResource, ResourceDependency
from dagster_aws.s3 import S3Resource
from pydantic import Field

from aiflow.spec import TableSpec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake
from aiflow.storage.landing import LandingZone, LocalLandingZone, S3LandingZone, resolve_uri
from aiflow.storage.settings import DEFAULT_HOME, DEFAULT_REGION, encrypt_writes, local_layout, s3_storage_options


class LakeResource(ConfigurableResource):
    """Where every Delta table lives. Subclasses say how to reach it."""

    def lake(self) -> Lake:
        raise NotImplementedError


class LocalLakeResource(LakeResource):
    """Delta tables in a local folder (the embedded default)."""

    root: str = Field(local_layout(DEFAULT_HOME)[0], description="Folder holding every Delta table (relative to the working directory).")

    def lake(self) -> Lake:
        return Lake(Path(self.root))


class S3Access(ConfigurableResource):
    """How to reach S3: credentials (give them as EnvVar, resolved at run time), region, endpoint."""

    access_key_id: str | None = Field(None, description="AWS access key id (use EnvVar); None: the default AWS chain.")
    secret_access_key: str | None = Field(None, description="AWS secret access key (use EnvVar).")
    region: str = Field(DEFAULT_REGION, description="AWS region.")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS); None for AWS.")
    allow_http: bool = Field(False, description="Allow plain-HTTP endpoints (local test servers only).")
    sse: str | None = Field(None, description="Server-side encryption of every write: AES256 (SSE-S3; also when None), aws:kms (SSE-KMS) or none (off).")
    sse_kms_key_id: str | None = Field(None, description="KMS key of aws:kms (None: the account's aws/s3 key).")

    def storage_options(self) -> dict[str, str]:
        """Options for delta-rs, Polars and the artifact store (the same keys the engine's settings build)."""
        return s3_storage_options(
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            endpoint_url=self.endpoint_url,
            allow_http=self.allow_http,
            sse=self.sse,
            sse_kms_key_id=self.sse_kms_key_id,
        )


class S3LakeResource(S3Access, LakeResource):
    """Delta tables under an s3:// prefix. Credentials come from the environment (EnvVar)."""

    root_uri: str = Field(description="s3://bucket/prefix holding every Delta table.")

    def lake(self) -> Lake:
        return Lake(self.root_uri, storage_options=self.storage_options())


class LandingResource(ConfigurableResource):
    """Where raw files arrive; a table's zone is its spec's landing URI resolved under ``root``."""

    def zone(self, table: TableSpec) -> LandingZone:
        raise NotImplementedError


class LocalLandingResource(LandingResource):
    root: str = Field(DEFAULT_HOME, description="Folder that relative landing URIs in the spec are resolved against.")

    def zone(self, table: TableSpec) -> LandingZone:
        return LocalLandingZone(resolve_uri(table.landing.uri, os.path.abspath(self.root)))


class S3LandingResource(LandingResource):
    """Landing zones under an S3 prefix, read through dagster-aws's S3 client."""

    s3: ResourceDependency[S3Resource]
    root_uri: str = Field(description="s3://bucket/prefix that relative landing URIs in the spec are resolved against.")
    sse: str | None = Field(None, description="Server-side encryption of the files the zone writes (rejected copies, reasons); None: AES256, none: off.")
    sse_kms_key_id: str | None = Field(None, description="KMS key of aws:kms (None: the account's aws/s3 key).")

    def zone(self, table: TableSpec) -> LandingZone:
        encryption = s3_storage_options(
            access_key_id=None, secret_access_key=None, region=None, endpoint_url=None, allow_http=False,
            sse=self.sse, sse_kms_key_id=self.sse_kms_key_id,
        )  # fmt: skip
        return S3LandingZone(encrypt_writes(self.s3.get_client(), encryption), resolve_uri(table.landing.uri, self.root_uri))


class ArtifactsResource(S3Access):
    """Where model bundles and checkpoints go: a folder or an s3:// prefix.

    S3 credentials are fields (EnvVar), exactly as the lake's; the training process, which gets only
    :meth:`uri`, reads them from its own environment (a subprocess inherits it, a pod gets a secret).
    """

    root: str = Field(local_layout(DEFAULT_HOME)[2], description="Folder or s3://bucket/prefix for model artifacts.")

    def uri(self) -> str:
        return self.root if "://" in self.root else os.path.abspath(self.root)

    def options(self) -> dict[str, str] | None:
        """Storage options for artifact URIs under this root (None for a local folder)."""
        return self.storage_options() if self.uri().startswith("s3://") else None

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.uri(), storage_options=self.options())
