"""Settings: the one place that turns configuration into storage (the lake, landing zones, artifacts).

The CLI builds its stores from :class:`Settings`; the Dagster profiles (``resources/profiles.py``)
use the same variable names, defaults, local layout and landing resolution, with secrets as
``dagster.EnvVar`` so they are resolved at run time.

Profiles:

* ``local`` (default): everything under ``AIFLOW_HOME`` (default ``.aiflow``): the lake in
  ``<home>/lake``, landing zones resolved under ``<home>`` (the demo spec's ``landing/flights`` is
  ``<home>/landing/flights``), artifacts in ``<home>/artifacts``. The home is a local folder; an
  ``s3://`` home is refused (it used to become a folder named ``s3:``).
* ``s3`` and ``k8s`` (same storage): ``AIFLOW_LAKE_URI``, ``AIFLOW_LANDING_URI`` and
  ``AIFLOW_ARTIFACT_URI`` (each ``s3://bucket/prefix``); a spec's relative landing URI is resolved
  under ``AIFLOW_LANDING_URI`` (the demo's flights land in ``<AIFLOW_LANDING_URI>/landing/flights/``).
  Credentials ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``; optional ``AWS_REGION`` (default
  ``us-east-1``), ``AWS_ENDPOINT_URL`` and ``AWS_ALLOW_HTTP`` for S3-compatible servers. Server-side
  encryption of every write (Delta tables, artifacts, reports, landing-zone writes), on by default:
  ``AIFLOW_S3_SSE`` = ``AES256`` (SSE-S3, the default when unset), ``aws:kms`` (SSE-KMS, with
  ``AIFLOW_S3_SSE_KMS_KEY_ID`` naming the key; unset: the account's default ``aws/s3`` key) or ``none``
  (off, for an S3-compatible store that refuses the header).

Secrets are read from the environment only when a store is built, and never appear in a repr or in
:meth:`Settings.describe`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiflow.storage.artifacts import (
    SSE_ENV,
    SSE_KMS_KEY_ENV,
    SSE_KMS_KEY_OPTION,
    SSE_OFF,
    SSE_OPTION,
    ArtifactStore,
    boto3_sse_args,
    sse_options,
)
from aiflow.storage.lake import Lake
from aiflow.storage.landing import LandingZone, LocalLandingZone, S3LandingZone, resolve_uri

if TYPE_CHECKING:
    from aiflow.spec import TableSpec

# ---------------------------------------------------------------------------------- variable names
PROFILE = "AIFLOW_PROFILE"
HOME = "AIFLOW_HOME"
LAKE_URI = "AIFLOW_LAKE_URI"
LANDING_URI = "AIFLOW_LANDING_URI"
ARTIFACT_URI = "AIFLOW_ARTIFACT_URI"
ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
REGION = "AWS_REGION"
ENDPOINT_URL = "AWS_ENDPOINT_URL"
ALLOW_HTTP = "AWS_ALLOW_HTTP"
SSE = SSE_ENV
SSE_KMS_KEY_ID = SSE_KMS_KEY_ENV

PROFILES = ("local", "s3", "k8s")
DEFAULT_PROFILE = "local"
DEFAULT_HOME = ".aiflow"
DEFAULT_REGION = "us-east-1"

#: What each URI of the s3 profile holds (used in error messages).
S3_URIS = {
    LAKE_URI: "every Delta table, e.g. s3://my-bucket/lake",
    LANDING_URI: "the root that a spec's relative landing URIs resolve under, e.g. s3://my-bucket",
    ARTIFACT_URI: "model bundles and checkpoints, e.g. s3://my-bucket/artifacts",
}
#: The credentials (secrets): read only when a store is built.
SECRETS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY)


class SettingsError(ValueError):
    """Configuration that cannot work; the message names the variable and what to set."""


# ------------------------------------------------------------------------- helpers shared with Dagster
def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise SettingsError(f"unknown {PROFILE} {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def profile_from(environ: Mapping[str, str] | None = None) -> str:
    """The profile named by ``AIFLOW_PROFILE`` (default ``local``)."""
    env = os.environ if environ is None else environ
    return check_profile(env.get(PROFILE) or DEFAULT_PROFILE)


def home_from(environ: Mapping[str, str] | None = None) -> str:
    """``AIFLOW_HOME`` (default ``.aiflow``), checked to be a local folder."""
    env = os.environ if environ is None else environ
    return check_local_home(env.get(HOME) or DEFAULT_HOME, HOME)


def check_local_home(home: str | os.PathLike, source: str = HOME) -> str:
    """Refuse a URL as the local home: ``Path("s3://b")`` would silently become a folder named ``s3:``."""
    home = os.fspath(home)
    if "://" in home:
        base = home.rstrip("/")
        raise SettingsError(
            f"{source} must be a local folder, got {home!r}. For S3, set {PROFILE}=s3 with "
            f"{LAKE_URI}={base}/lake {LANDING_URI}={base} {ARTIFACT_URI}={base}/artifacts "
            f"and the {ACCESS_KEY_ID}/{SECRET_ACCESS_KEY} credentials (no {source})"
        )
    return home


def local_layout(home: str | os.PathLike) -> tuple[str, str, str]:
    """(lake, landing root, artifacts) of the local profile under ``home`` (not made absolute)."""
    home = check_local_home(home)
    return os.path.join(home, "lake"), home, os.path.join(home, "artifacts")


def allow_http(value: str | None) -> bool:
    """``AWS_ALLOW_HTTP``: true for ``true``/``1``/``yes`` (any case)."""
    return (value or "").strip().lower() in ("true", "1", "yes")


def s3_storage_options(
    *,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str | None,
    endpoint_url: str | None,
    allow_http: bool,
    sse: str | None = None,
    sse_kms_key_id: str | None = None,
) -> dict[str, str]:
    """Options for delta-rs, Polars and :class:`ArtifactStore`; missing credentials fall back to the default AWS chain.

    ``sse``/``sse_kms_key_id`` (``AIFLOW_S3_SSE``/``AIFLOW_S3_SSE_KMS_KEY_ID``) become object_store's
    ``aws_server_side_encryption``/``aws_sse_kms_key_id``: delta-rs then encrypts every object it writes.

    Raises:
        SettingsError: an unknown SSE mode (named with its variable).
    """
    try:
        encryption = sse_options(sse, sse_kms_key_id)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    options = {REGION: region or DEFAULT_REGION, **encryption}
    if access_key_id:
        options[ACCESS_KEY_ID] = access_key_id
    if secret_access_key:
        options[SECRET_ACCESS_KEY] = secret_access_key
    if endpoint_url:
        options[ENDPOINT_URL] = endpoint_url
    if allow_http:
        options[ALLOW_HTTP] = "true"
    return options


def s3_client(options: Mapping[str, str]):
    """A boto3 S3 client from storage options (path-style addressing when an endpoint is given).

    With server-side encryption in the options, every object the client writes is encrypted (see :func:`encrypt_writes`).
    """
    import boto3  # installed with dagster-aws; imported only when an S3 landing zone is built
    from botocore.config import Config

    endpoint = options.get(ENDPOINT_URL)
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=options.get(ACCESS_KEY_ID),
        aws_secret_access_key=options.get(SECRET_ACCESS_KEY),
        region_name=options.get(REGION, DEFAULT_REGION),
        config=Config(s3={"addressing_style": "path"} if endpoint else {}, signature_version="s3v4"),
    )
    return encrypt_writes(client, options)


#: boto3 operations that create an object (a multipart upload is encrypted when it starts).
WRITE_OPERATIONS = ("PutObject", "CopyObject", "CreateMultipartUpload")


def encrypt_writes(client, options: Mapping[str, str] | None):
    """Make ``client`` ask for the options' server-side encryption on every object it writes; returns it.

    A botocore ``before-parameter-build`` hook adds ``ServerSideEncryption`` (and ``SSEKMSKeyId``) to
    PutObject, CopyObject and CreateMultipartUpload unless the call sets them; ``upload_file`` and
    ``copy`` go through those. Without SSE in the options the client is returned unchanged.
    """
    args = boto3_sse_args(dict(options or {}))
    if not args:
        return client

    def add_sse(params, **_):
        for name, value in args.items():
            params.setdefault(name, value)

    for operation in WRITE_OPERATIONS:
        client.meta.events.register(f"before-parameter-build.s3.{operation}", add_sse)
    return client


# ------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class S3Access:
    """How to reach S3, without the secrets."""

    region: str = DEFAULT_REGION
    endpoint_url: str | None = None
    allow_http: bool = False
    #: Server-side encryption of every write: ``AES256``, ``aws:kms`` or ``none`` (None: the default, ``AES256``).
    sse: str | None = None
    sse_kms_key_id: str | None = None


@dataclass(frozen=True)
class Settings:
    """Where the lake, the landing zones and the artifacts are, and how to reach them.

    Build with :meth:`from_env`. Roots are absolute folders (local profile) or ``s3://`` URIs.
    """

    profile: str
    lake_uri: str
    landing_uri: str
    artifact_uri: str
    s3: S3Access | None = None
    #: Where the secrets are read from when a store is built; never shown.
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        profile: str | None = None,
        home: str | os.PathLike | None = None,
    ) -> Settings:
        """Settings from the environment (default ``os.environ``); ``home`` is the CLI's ``--home``.

        Raises:
            SettingsError: unknown profile, a URL as the local home, ``--home`` on an S3 profile, or
                an S3 profile missing one of its URIs (the message names the variable).
        """
        env = os.environ if environ is None else environ
        profile = check_profile(profile or env.get(PROFILE) or DEFAULT_PROFILE)
        if profile == "local":
            chosen = check_local_home(home, "--home") if home is not None else home_from(env)
            lake, landing, artifacts = (os.path.abspath(p) for p in local_layout(chosen))
            return cls(profile, lake, landing, artifacts, None, env)
        if home is not None:
            raise SettingsError(
                f"--home is the local profile's folder; {PROFILE}={profile} takes its storage from "
                f"{', '.join(S3_URIS)}. Drop --home, or unset {PROFILE} to use the local folder"
            )
        uris = {}
        for var, what in S3_URIS.items():
            value = (env.get(var) or "").strip()
            if not value:
                raise SettingsError(f"{PROFILE}={profile} needs {var}: {what}")
            if not value.startswith("s3://"):
                raise SettingsError(f"{var} must be an s3://bucket/prefix URI on the {profile} profile, got {value!r}")
            uris[var] = value.rstrip("/")
        try:  # checked now: a wrong SSE setting fails before anything is written
            encryption = sse_options(env.get(SSE), env.get(SSE_KMS_KEY_ID))
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        access = S3Access(
            region=env.get(REGION) or DEFAULT_REGION,
            endpoint_url=env.get(ENDPOINT_URL) or None,
            allow_http=allow_http(env.get(ALLOW_HTTP)),
            sse=encryption.get(SSE_OPTION) or SSE_OFF,
            sse_kms_key_id=encryption.get(SSE_KMS_KEY_OPTION),
        )
        return cls(profile, uris[LAKE_URI], uris[LANDING_URI], uris[ARTIFACT_URI], access, env)

    @property
    def on_s3(self) -> bool:
        return self.s3 is not None

    def describe(self) -> str:
        """One line naming the profile and every root (no secrets)."""
        where = f"profile {self.profile}: lake {self.lake_uri} | landing {self.landing_uri} | artifacts {self.artifact_uri}"
        if self.s3 and self.s3.endpoint_url:
            where += f" | endpoint {self.s3.endpoint_url}"
        if self.s3 and self.s3.sse and self.s3.sse != SSE_OFF:
            where += f" | server-side encryption {self.s3.sse}"
        return where

    def storage_options(self) -> dict[str, str] | None:
        """S3 options with the credentials, read now (None on the local profile).

        Raises:
            SettingsError: a credential variable is missing (named; its value is never shown).
        """
        if self.s3 is None:
            return None
        missing = [var for var in SECRETS if not self.environ.get(var)]
        if missing:
            raise SettingsError(
                f"{PROFILE}={self.profile} needs the S3 credentials {' and '.join(missing)} in the environment"
            )
        return s3_storage_options(
            access_key_id=self.environ[ACCESS_KEY_ID],
            secret_access_key=self.environ[SECRET_ACCESS_KEY],
            region=self.s3.region,
            endpoint_url=self.s3.endpoint_url,
            allow_http=self.s3.allow_http,
            sse=self.s3.sse,
            sse_kms_key_id=self.s3.sse_kms_key_id,
        )

    def lake(self) -> Lake:
        return Lake(self.lake_uri, storage_options=self.storage_options())

    def artifact_store(self) -> ArtifactStore:
        return ArtifactStore(self.artifact_uri, storage_options=self.storage_options())

    def landing_uri_for(self, table: TableSpec) -> str:
        """The table's landing zone: its spec's URI, resolved under the landing root when relative."""
        return resolve_uri(table.landing.uri, self.landing_uri)

    def landing_zone(self, table: TableSpec) -> LandingZone:
        uri = self.landing_uri_for(table)
        if uri.startswith("s3://") and self.on_s3:
            return S3LandingZone(s3_client(self.storage_options()), uri)
        if "://" in uri:
            raise SettingsError(
                f"the landing zone of {table.name!r} is {uri!r}: the {self.profile} profile reads local folders only; "
                f"set {PROFILE}=s3 for S3 landing zones"
            )
        return LocalLandingZone(uri)
