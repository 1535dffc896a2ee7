"""Landing zones: where raw files arrive. A local folder or an S3 prefix, behind one small interface."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: Sub-folder of a landing zone that holds rejected files and the reason they were rejected.
REJECTED_DIR = "_rejected"

FORMAT_BY_SUFFIX = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass(frozen=True)
class LandedFile:
    """One file in a landing zone. ``name`` is its path relative to the zone's root."""

    name: str
    uri: str
    size: int
    modified: dt.datetime

    @property
    def signature(self) -> str:
        """Changes when the file is replaced; used by the sensor to notice re-dropped files."""
        return f"{self.size}:{self.modified.timestamp():.6f}"

    @property
    def format(self) -> str | None:
        return FORMAT_BY_SUFFIX.get(Path(self.name).suffix.lower())


class LandingZone(Protocol):
    uri: str

    def list(self) -> list[LandedFile]:
        """Every data file in the zone (rejected files excluded), sorted by name."""

    def read_bytes(self, name: str) -> bytes: ...

    def reject(self, name: str, batch_id: str, reason: str) -> str:
        """Copy a file into the zone's rejected area with its reason; return where it went."""


class LocalLandingZone:
    """A landing zone on the local file system."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.uri = str(self.root)

    def list(self) -> list[LandedFile]:
        if not self.root.exists():
            return []
        files = []
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if not path.is_file() or rel.startswith(REJECTED_DIR + "/") or path.name.startswith("."):
                continue
            stat = path.stat()
            files.append(
                LandedFile(rel, str(path), stat.st_size, dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC))
            )
        return sorted(files, key=lambda f: f.name)

    def read_bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def reject(self, name: str, batch_id: str, reason: str) -> str:
        target = self.root / REJECTED_DIR / batch_id / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.root / name, target)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
        return str(target)


class S3LandingZone:
    """A landing zone under an S3 prefix, read with a boto3 client (dagster-aws provides it)."""

    def __init__(self, client, uri: str):
        if not uri.startswith("s3://"):
            raise ValueError(f"S3 landing zone URI must start with s3://, got {uri!r}")
        self.client = client
        self.uri = uri.rstrip("/")
        bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, (prefix + "/" if prefix else "")

    def list(self) -> list[LandedFile]:
        files = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(self.prefix) :]
                if not rel or rel.endswith("/") or rel.startswith(REJECTED_DIR + "/") or Path(rel).name.startswith("."):
                    continue
                modified = obj["LastModified"]
                files.append(LandedFile(rel, f"s3://{self.bucket}/{obj['Key']}", obj["Size"], modified))
        return sorted(files, key=lambda f: f.name)

    def read_bytes(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()

    def reject(self, name: str, batch_id: str, reason: str) -> str:
        key = f"{self.prefix}{REJECTED_DIR}/{batch_id}/{name}"
        self.client.copy_object(Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": self.prefix + name})
        self.client.put_object(Bucket=self.bucket, Key=key + ".reason.txt", Body=(reason + "\n").encode())
        return f"s3://{self.bucket}/{key}"


def resolve_uri(uri: str, home: str | os.PathLike) -> str:
    """An absolute path or URL stays as it is; a relative path is taken under ``home``."""
    if "://" in uri or os.path.isabs(uri):
        return uri
    return str(Path(home, uri).resolve()) if "://" not in str(home) else f"{str(home).rstrip('/')}/{uri}"
