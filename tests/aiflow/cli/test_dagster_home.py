"""Scope: aiflow.cli.dagster_home initializes a fresh DAGSTER_HOME once (deploy/dagster.local.yaml, `dagster instance
migrate` under a lock, `aiflow dagster-home`): three first runs started at the same instant in separate processes all succeed, every SQLite
store keeps one alembic head, and the home serves a fresh process afterwards. The `aiflow replay` demo uses it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aiflow.cli.dagster_home import LOCAL_YAML, init_dagster_home

#: A first run as any process makes one: open the instance from DAGSTER_HOME, run a job in it (run and event
#: storage), read sensor state (schedule storage). Every process starts at the same instant (argv[1], epoch s).
FIRST_RUN = """
import sys, time
from dagster import DagsterInstance, job, op

@op
def noop():
    return 1

@job
def first():
    noop()

while time.time() < float(sys.argv[1]):
    time.sleep(0.001)
instance = DagsterInstance.get()
instance.get_runs()
instance.all_instigator_state()
assert first.execute_in_process(instance=instance).success
print("ok")
"""


FIRST_RUNS = 3


def heads(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("select version_num from alembic_version")]


@pytest.mark.slow  # ~30 s: two migrations and three interpreters importing dagster
def test_first_runs_at_once_on_an_initialized_home_all_succeed(tmp_path: Path):
    home = tmp_path / "dagster_home"
    checkout = str(Path(__file__).resolve().parents[3])  # this checkout's code, whatever aiflow is installed
    made = subprocess.run(
        [str(Path(sys.executable).with_name("aiflow")), "dagster-home", str(home)], env={"PATH": "/usr/bin:/bin", "PYTHONPATH": checkout},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0 and made.stdout.strip() == f"DAGSTER_HOME={home} is ready (storage initialized)", made.stderr
    assert yaml.safe_load((home / "dagster.yaml").read_text()) == yaml.safe_load(LOCAL_YAML.read_text())
    init_dagster_home(home)  # idempotent: a second set-up finds the storage made and keeps the config
    env = {"DAGSTER_HOME": str(home), "PATH": "/usr/bin:/bin"}
    start = time.time() + 8  # after both interpreters have imported dagster
    runs = [
        subprocess.Popen([sys.executable, "-c", FIRST_RUN, str(start)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(FIRST_RUNS)
    ]
    outcomes = [(*run.communicate(timeout=120), run.returncode) for run in runs]
    for out, err, code in outcomes:
        assert code == 0 and out.strip() == "ok", err[-3000:]
    dbs = sorted(home.rglob("*.db"))
    assert {db.name for db in dbs} >= {"runs.db", "schedules.db", "index.db"}
    assert all(len(heads(db)) == 1 for db in dbs), {db.name: heads(db) for db in dbs}
    usable = subprocess.run(
        [sys.executable, "-c", "from dagster import DagsterInstance; print(len(DagsterInstance.get().get_runs()))"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert usable.returncode == 0 and usable.stdout.strip() == str(FIRST_RUNS), usable.stderr[-3000:]
