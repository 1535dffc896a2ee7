"""A Dagster instance home for aiflow, its storage initialized once before anything runs in it.

Dagster creates its SQLite tables on first use, in whichever process comes first; two first runs at once on a
fresh ``DAGSTER_HOME`` race on it (seen: ``table alembic_version already exists`` in one of them, and a
``schedules.db`` left with two alembic heads). :func:`init_dagster_home` runs ``dagster instance migrate`` once,
serialized by a file lock, so the daemon, ``dagster dev`` and runs started together find the tables made.
Dagster is run as a command (the engine never imports it).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCAL_YAML = ROOT / "deploy" / "dagster.local.yaml"
LOCK_NAME = ".aiflow-init.lock"


def dagster_command() -> str:
    """The ``dagster`` command of this interpreter's environment."""
    return str(Path(sys.executable).with_name("dagster"))


def init_dagster_home(home: Path, *, instance_yaml: str | None = None, env: dict[str, str] | None = None, timeout: float = 300) -> None:
    """Make ``home`` a Dagster instance home and create (or upgrade) its storage, once.

    Args:
        home: the ``DAGSTER_HOME`` folder (created if missing).
        instance_yaml: the ``dagster.yaml`` to write when the home has none (default: ``deploy/dagster.local.yaml``).
        env: environment of the migration (default: this process's); ``DAGSTER_HOME`` is set to ``home``.
        timeout: seconds the migration may take.

    Raises:
        RuntimeError: the migration failed; the message carries its output.
    """
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second initializer waits, then finds the storage made
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text(instance_yaml if instance_yaml is not None else LOCAL_YAML.read_text())
        done = subprocess.run(
            [dagster_command(), "instance", "migrate"], env={**(env if env is not None else os.environ), "DAGSTER_HOME": str(home)},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"`dagster instance migrate` failed on {home} (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def add_dagster_home_command(subparsers) -> None:
    """Register ``aiflow dagster-home [DIR]`` on the ``aiflow`` CLI's subparsers."""
    command = subparsers.add_parser(
        "dagster-home",
        help="Make a DAGSTER_HOME and initialize Dagster's storage in it once (deploy/dagster.local.yaml unless it has a "
        "dagster.yaml): run it before the first `dagster dev`, daemon or runs, so first runs started together cannot race on it.",
    )
    command.add_argument("dir", nargs="?", help="The home (default: $DAGSTER_HOME, else .aiflow/dagster_home).")
    command.set_defaults(func=cmd_dagster_home, needs_settings=False)


def cmd_dagster_home(args) -> int:
    home = Path(args.dir or os.environ.get("DAGSTER_HOME") or ".aiflow/dagster_home")
    try:
        init_dagster_home(home)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"aiflow dagster-home: error: {exc}", file=sys.stderr)
        return 1
    print(f"DAGSTER_HOME={home.resolve()} is ready (storage initialized)")
    return 0
