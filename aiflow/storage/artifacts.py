"""Artifact store: model files and checkpoints in a local folder or under an s3:// prefix.

Backed by ``pyarrow.fs`` (local and S3 with one API). S3 credentials and endpoint are the same
options as the lake's (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP``). Whoever builds a store passes them
(``aiflow.storage.settings.Settings.artifact_store``, the Dagster ``ArtifactsResource``); only when
none are given does the store read them from its own process environment, which is how the training
process (a subprocess, or a pod given a Kubernetes secret) gets them, never from run configuration.

Server-side encryption: the options may carry ``aws_server_side_encryption`` (``AES256`` or
``aws:kms``) and ``aws_sse_kms_key_id``, the object_store names delta-rs and Polars understand; from
the environment they come from ``AIFLOW_S3_SSE`` (unset: ``AES256``, encryption on by default; ``none``: off) and
``AIFLOW_S3_SSE_KMS_KEY_ID``. With them, every
S3 write of the store goes through boto3 with ``ServerSideEncryption`` (pyarrow's S3 filesystem cannot
ask for SSE-S3 or SSE-KMS); reads need nothing (S3 decrypts).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

_S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP")

#: Environment variables of server-side encryption (the profile's setting) and the storage-option keys they
#: become (object_store's names: delta-rs and Polars take them as they are).
SSE_ENV = "AIFLOW_S3_SSE"
SSE_KMS_KEY_ENV = "AIFLOW_S3_SSE_KMS_KEY_ID"
SSE_OPTION = "aws_server_side_encryption"
SSE_KMS_KEY_OPTION = "aws_sse_kms_key_id"
SSE_MODES = ("AES256", "aws:kms")
#: Encryption when nothing is configured: SSE-S3. Every object is encrypted unless ``AIFLOW_S3_SSE=none`` says otherwise
#: (an S3-compatible store that refuses the header).
SSE_DEFAULT = "AES256"
SSE_OFF = "none"


def sse_options(mode: str | None, kms_key_id: str | None = None) -> dict[str, str]:
    """Storage options asking for server-side encryption on every write.

    ``mode`` unset means :data:`SSE_DEFAULT` (``AES256``); ``none`` turns encryption off (empty options).

    Raises:
        ValueError: an unknown mode, or a KMS key id without ``aws:kms`` (the message names the variables).
    """
    mode = (mode or "").strip() or None
    kms_key_id = (kms_key_id or "").strip() or None
    if mode is None:
        if kms_key_id:
            raise ValueError(f"{SSE_KMS_KEY_ENV} is set but {SSE_ENV} is not: set {SSE_ENV}=aws:kms to encrypt with that key")
        mode = SSE_DEFAULT
    if mode.lower() == SSE_OFF:
        if kms_key_id:
            raise ValueError(f"{SSE_KMS_KEY_ENV} needs {SSE_ENV}=aws:kms, got {SSE_ENV}={mode}")
        return {}
    if mode not in SSE_MODES:
        raise ValueError(f"{SSE_ENV} must be one of {', '.join(SSE_MODES)}, {SSE_OFF} (or unset: {SSE_DEFAULT}), got {mode!r}")
    if kms_key_id and mode != "aws:kms":
        raise ValueError(f"{SSE_KMS_KEY_ENV} needs {SSE_ENV}=aws:kms, got {SSE_ENV}={mode}")
    return {SSE_OPTION: mode, **({SSE_KMS_KEY_OPTION: kms_key_id} if kms_key_id else {})}


def boto3_sse_args(options: dict[str, str] | None) -> dict[str, str]:
    """boto3 parameters (``ServerSideEncryption``, ``SSEKMSKeyId``) for the SSE in storage options; empty without."""
    options = options or {}
    args = {"ServerSideEncryption": options[SSE_OPTION]} if options.get(SSE_OPTION) else {}
    if args and options.get(SSE_KMS_KEY_OPTION):
        args["SSEKMSKeyId"] = options[SSE_KMS_KEY_OPTION]
    return args


def s3_options_from_env() -> dict[str, str]:
    """S3 options of this process's environment (credentials, endpoint, server-side encryption)."""
    options = {k: os.environ[k] for k in _S3_KEYS if os.environ.get(k)}
    return {**options, **sse_options(os.environ.get(SSE_ENV), os.environ.get(SSE_KMS_KEY_ENV))}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Files under one root URI.

    Args:
        root: a local folder or ``s3://bucket/prefix``.
        storage_options: S3 options (see module doc); None reads them from this process's environment.
    """

    def __init__(self, root: str | os.PathLike, storage_options: dict[str, str] | None = None):
        root = str(root)
        if root.startswith("s3://"):
            options = s3_options_from_env() if storage_options is None else storage_options
            endpoint = options.get("AWS_ENDPOINT_URL")
            parsed = urlparse(endpoint) if endpoint else None
            self.fs = pafs.S3FileSystem(
                access_key=options.get("AWS_ACCESS_KEY_ID"),
                secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
                region=options.get("AWS_REGION", "us-east-1"),
                endpoint_override=parsed.netloc if parsed else None,
                scheme=parsed.scheme if parsed else "https",
            )
            self.root = root.rstrip("/")
            self._base = self.root.removeprefix("s3://")
            self._options = dict(options)
            self._sse = boto3_sse_args(options)
            self._client = None
        elif "://" in root:
            raise ValueError(f"artifact store root must be a folder or s3:// URI, got {root!r}")
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(root).resolve())
            self._base = self.root

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    def uri(self, path: str) -> str:
        return f"{self.root}/{path.lstrip('/')}"

    def _path(self, path: str) -> str:
        return f"{self._base}/{path.lstrip('/')}"

    def put_bytes(self, path: str, data: bytes) -> str:
        """Write atomically (a reader never sees half a file); return the file's URI."""
        target = self._path(path)
        parent = target.rsplit("/", 1)[0]
        if isinstance(self.fs, pafs.LocalFileSystem):  # S3 has no folders (creating one leaves empty marker objects)
            self.fs.create_dir(parent, recursive=True)
            tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            os.replace(tmp, target)
        elif self._sse:  # an S3 PUT is atomic; pyarrow cannot ask for SSE, boto3 can
            from botocore.exceptions import BotoCoreError, ClientError

            bucket, _, key = target.partition("/")
            try:
                self._boto3().put_object(Bucket=bucket, Key=key, Body=data, **self._sse)
            except (BotoCoreError, ClientError) as exc:
                raise OSError(f"could not write {self.uri(path)} ({self._sse['ServerSideEncryption']} encryption): {exc}") from exc
        else:
            with self.fs.open_output_stream(target) as out:
                out.write(data)
        return self.uri(path)

    def _boto3(self):
        if self._client is None:
            from aiflow.storage.settings import s3_client  # settings imports this module

            self._client = s3_client(self._options)
        return self._client

    def get_bytes(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(self._path(path)) as src:
                return src.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"no artifact at {self.uri(path)}") from None

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(self._path(path)).type == pafs.FileType.File

    def delete_dir(self, path: str) -> None:
        info = self.fs.get_file_info(self._path(path))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self._path(path))

    def list(self, prefix: str) -> list[str]:
        """Paths (relative to the root) of the files under ``prefix``."""
        selector = pafs.FileSelector(self._path(prefix), recursive=True, allow_not_found=True)
        return sorted(
            info.path[len(self._base) + 1 :] for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File
        )
