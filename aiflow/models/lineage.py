"""Code lineage: which code produced a model."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def code_version(repo: str | os.PathLike | None = None) -> str | None:
    """``AIFLOW_CODE_VERSION`` if set (images bake it in), else the git SHA of ``repo`` with a
    ``-dirty`` suffix when the work tree has uncommitted changes; None when neither is known."""
    if os.environ.get("AIFLOW_CODE_VERSION"):
        return os.environ["AIFLOW_CODE_VERSION"]
    where = str(repo or Path(__file__).resolve().parents[2])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
