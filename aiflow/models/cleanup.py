"""Artifact cleanup: remove bundles, checkpoints and evaluation plots that no registered model version needs.

Every training leaves a bundle (``<name>/candidates/<key>/``) and a checkpoint
(``<name>/checkpoints/<key>/``), every evaluation a plot (``<name>/evaluations/<candidate>-<run>.png``).
Only what a registered version references must be kept forever: its bundle and the plot of the
evaluation it was registered from (model cards are written for registered versions only and are kept).
Everything else is removed once it is older than the retention period, so a run in progress or a
candidate waiting for its evaluation is never touched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from aiflow.models.candidates import Handoffs
from aiflow.models.registry import Registry
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake


@dataclass
class CleanupReport:
    """What a cleanup removed (paths relative to the artifact root) and what it kept."""

    bundles: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    kept_referenced: int = 0
    kept_recent: int = 0
    bytes_freed: int = 0
    dry_run: bool = False

    @property
    def removed(self) -> int:
        return len(self.bundles) + len(self.checkpoints) + len(self.plots)


def _tail(uri: str | None, marker: str) -> str | None:
    """The part of ``uri`` from ``marker`` on (``flights/candidates/abc-v3``): absolute or relative locations alike."""
    if not uri:
        return None
    uri = uri.rstrip("/")
    at = uri.rfind(marker)
    return uri[at:] if at >= 0 else None


def referenced(lake: Lake, name: str) -> set[str]:
    """Artifact paths (relative to the root) a registered version of ``name`` needs: bundles and evaluation plots."""
    keep: set[str] = set()
    for row in Registry(lake).versions(name).iter_rows(named=True):
        bundle = _tail(row.get("artifact_uri"), f"{name}/candidates/")
        if bundle:
            keep.add(bundle)
    handoffs = Handoffs(lake)
    registered = {r.evaluation_id for r in handoffs.registrations(name)}
    for evaluation in handoffs.evaluations(name):
        plot = _tail(evaluation.plot_uri, f"{name}/evaluations/")
        if evaluation.evaluation_id in registered and plot:
            keep.add(plot)
    return keep


def _entries(store: ArtifactStore, prefix: str) -> dict[str, tuple[int, dt.datetime]]:
    """Top-level entries under ``prefix`` (a bundle or checkpoint folder, a plot file): total size and newest mtime."""
    out: dict[str, tuple[int, dt.datetime]] = {}
    base = store.root.removeprefix("s3://")
    selector = pafs.FileSelector(f"{base}/{prefix}", recursive=True, allow_not_found=True)
    for info in store.fs.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) + 1 :]
        entry = "/".join(rel.split("/")[:3])  # <name>/<area>/<folder or file>
        mtime = info.mtime if info.mtime is not None else dt.datetime.now(dt.UTC)
        mtime = mtime if mtime.tzinfo else mtime.replace(tzinfo=dt.UTC)
        size, newest = out.get(entry, (0, dt.datetime.min.replace(tzinfo=dt.UTC)))
        out[entry] = (size + (info.size or 0), max(newest, mtime))
    return out


def clean_artifacts(
    lake: Lake,
    store: ArtifactStore,
    name: str,
    *,
    retention: dt.timedelta = dt.timedelta(days=7),
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> CleanupReport:
    """Remove ``name``'s bundles, checkpoints and plots that no registered version references and that are
    older than ``retention`` (by their newest file). ``dry_run`` only reports what would go.
    """
    if retention < dt.timedelta(0):
        raise ValueError(f"retention must not be negative, got {retention}")
    now = now or dt.datetime.now(dt.UTC)
    keep = referenced(lake, name)
    report = CleanupReport(dry_run=dry_run)
    for area, removed in (("candidates", report.bundles), ("checkpoints", report.checkpoints), ("evaluations", report.plots)):
        for entry, (size, newest) in sorted(_entries(store, f"{name}/{area}").items()):
            if area != "checkpoints" and entry in keep:
                report.kept_referenced += 1
                continue
            if now - newest < retention:
                report.kept_recent += 1
                continue
            removed.append(entry)
            report.bytes_freed += size
            if dry_run:
                continue
            target = f"{store.root.removeprefix('s3://')}/{entry}"
            if store.fs.get_file_info(target).type == pafs.FileType.Directory:
                store.fs.delete_dir(target)
            else:
                store.fs.delete_file(target)
    return report
