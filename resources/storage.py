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


class LakeResource(ConfigurableResource):
    """Where every Delta table lives. Subclasses say how to reach it."""

    def lake(self) -> Lake:
        raise NotImplementedError


class LocalLakeResource(LakeResource):
    """Delta tables in a local folder (the embedded default)."""

    root: str = Field(".aiflow/lake", description="Folder holding every Delta table (relative to the working directory).")

    def lake(self) -> Lake:
        return Lake(Path(self.root))


class S3LakeResource(LakeResource):
    """Delta tables under an s3:// prefix. Credentials come from the environment (EnvVar)."""

    root_uri: str = Field(description="s3://bucket/prefix holding every Delta table.")
    access_key_id: str | None = Field(None, description="AWS access key id (use EnvVar).")
    secret_access_key: str | None = Field(None, description="AWS secret access key (use EnvVar).")
    region: str = Field("us-east-1", description="AWS region.")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS); None for AWS.")
    allow_http: bool = Field(False, description="Allow plain-HTTP endpoints (local test servers only).")

    def storage_options(self) -> dict[str, str]:
        options = {"AWS_REGION": self.region}
        if self.access_key_id:
            options["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            options["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.allow_http:
            options["AWS_ALLOW_HTTP"] = "true"
        return options

    def lake(self) -> Lake:
        return Lake(self.root_uri, storage_options=self.storage_options())


class LandingResource(ConfigurableResource):
    """Where raw files arrive; a table's zone is its spec's landing URI resolved under ``root``."""

    def zone(self, table: TableSpec) -> LandingZone:
        raise NotImplementedError


class LocalLandingResource(LandingResource):
    root: str = Field(".aiflow", description="Folder that relative landing URIs in the spec are resolved against.")

    def zone(self, table: TableSpec) -> LandingZone:
        return LocalLandingZone(resolve_uri(table.landing.uri, os.path.abspath(self.root)))


class S3LandingResource(LandingResource):
    """Landing zones under an S3 prefix, read through dagster-aws's S3 client."""

    s3: ResourceDependency[S3Resource]
    root_uri: str = Field(description="s3://bucket/prefix that relative landing URIs in the spec are resolved against.")

    def zone(self, table: TableSpec) -> LandingZone:
        return S3LandingZone(self.s3.get_client(), resolve_uri(table.landing.uri, self.root_uri))


class ArtifactsResource(ConfigurableResource):
    """Where model bundles and checkpoints go: a folder or an s3:// prefix.

    S3 credentials are not fields: the store (here and in the training process) reads ``AWS_*``
    from its environment, which the s3 profile and the Kubernetes secret provide.
    """

    root: str = Field(".aiflow/artifacts", description="Folder or s3://bucket/prefix for model artifacts.")

    def uri(self) -> str:
        return self.root if "://" in self.root else os.path.abspath(self.root)

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.uri())
