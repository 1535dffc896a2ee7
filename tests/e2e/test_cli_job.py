"""Scope: end to end as a user runs it: `aiflow demo landing`, `dagster job execute`, `aiflow status` (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from aiflow.storage.lake import Lake, Tables

pytestmark = pytest.mark.slow  # end to end: run by ./scripts/test after the default suite

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_demo_landing_then_data_plane_job_from_the_shell(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "AIFLOW_HOME": str(home), "DAGSTER_HOME": str(tmp_path / "dagster"), "AIFLOW_PROFILE": "local"}
    (tmp_path / "dagster").mkdir()
    landing = _run([str(BIN / "aiflow"), "demo", "landing", "--days", "3", "--quiet"], env)
    assert landing.returncode == 0, landing.stderr
    assert sorted(p.name for p in (home / "landing" / "flights").iterdir()) == ["2013-01-01.csv", "2013-01-02.csv", "2013-01-03.csv"]

    job = _run([str(BIN / "dagster"), "job", "execute", "-m", "definitions", "-d", str(REPO), "-j", "data_plane_job"], env)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "RUN_SUCCESS" in job.stdout + job.stderr

    lake = Lake(home / "lake")
    landed = sum(pl.read_csv(p, infer_schema=False).height for p in (home / "landing" / "flights").glob("*.csv"))
    assert lake.scan(Tables.bronze("flights")).select(pl.len()).collect().item() == landed
    assert lake.scan(Tables.features("flights")).select(pl.len()).collect().item() == landed

    status = _run([str(BIN / "aiflow"), "status"], env)
    assert status.returncode == 0, status.stderr
    assert "features/flights" in status.stdout and str(landed) in status.stdout
