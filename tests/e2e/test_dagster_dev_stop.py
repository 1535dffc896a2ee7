"""Scope: `dagster dev` on an aiflow home (this repo's workspace, deploy/dagster.local.yaml, sensors running) stops on
SIGTERM within 10 s, and nothing it started outlives it by more than 10 s: started as a terminal starts it, and from a
script with job control on (`set -m`), the README's workaround for Dagster ignoring SIGTERM in a script's background job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aiflow.cli.dagster_home import init_dagster_home
from tests.fixtures.servers import HOST, free_ports, log_tail, stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
READY_TIMEOUT_S = 180
STOP_LIMIT_S = 10


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    init_dagster_home(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIFLOW_", "DAGSTER_"))}
    return {**env, "DAGSTER_HOME": str(home), "AIFLOW_HOME": str(tmp_path / "aiflow"), "PYTHONPATH": str(ROOT)}


def _wait_ready(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dagster dev exited {proc.returncode}:\n{log_tail(log)}"
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/server_info", timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"dagster dev not ready after {READY_TIMEOUT_S} s:\n{log_tail(log)}")


def _as_a_terminal_starts_it() -> None:
    """SIGINT at its default disposition, as a terminal starts a command. The test itself may run under a parent that
    ignores SIGINT (a CI runner or `nohup ... &` in a script), which children inherit and `dagster dev` then applies to
    SIGTERM too: the very case the README's workaround is about, and not what these tests are for."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return any(not state.startswith("Z") for state in out)  # zombies are dead, waiting for their reaper


def _sigterm_and_time(pid: int, wait) -> float:
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait(STOP_LIMIT_S * 3)
    return time.monotonic() - started


def _assert_group_gone(pgid: int, log: Path) -> None:
    deadline = time.monotonic() + STOP_LIMIT_S
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(pgid), f"processes of dagster dev still running {STOP_LIMIT_S} s after it stopped:\n{log_tail(log)}"


def test_dagster_dev_stops_on_sigterm_within_10_s(tmp_path: Path):
    env, (port,) = _env(tmp_path), free_ports(1)
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [DAGSTER, "dev", "-w", "workspace.yaml", "-h", HOST, "-p", str(port)], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_as_a_terminal_starts_it,
        )  # fmt: skip
    try:
        _wait_ready(proc, port, log)
        took = _sigterm_and_time(proc.pid, lambda t: proc.wait(timeout=t))
        assert took <= STOP_LIMIT_S, f"dagster dev took {took:.1f} s to stop:\n{log_tail(log)}"
        _assert_group_gone(proc.pid, log)
    finally:
        stop(proc, timeout=5)


def test_from_a_script_with_job_control_dagster_dev_stops_on_sigterm_within_10_s(tmp_path: Path):
    env, (port,) = _env(tmp_path), free_ports(1)
    log, pid_file = tmp_path / "dev.log", tmp_path / "dev.pid"
    script = f'set -m\n"{DAGSTER}" dev -w workspace.yaml -h {HOST} -p {port} >"{log}" 2>&1 &\necho $! >"{pid_file}"\nwait\n'
    shell = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, start_new_session=True, preexec_fn=_as_a_terminal_starts_it)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline and shell.poll() is None, "the script did not start dagster dev"
            time.sleep(0.2)
        pid = int(pid_file.read_text())
        _wait_ready(shell, port, log)
        took = _sigterm_and_time(pid, lambda t: shell.wait(timeout=t))  # the script's `wait` returns when dagster dev exits
        assert took <= STOP_LIMIT_S, f"dagster dev took {took:.1f} s to stop:\n{log_tail(log)}"
        _assert_group_gone(pid, log)  # with job control, the background job leads its own process group
    finally:
        stop(shell, timeout=5)
        if pid_file.exists() and pid_file.read_text().strip():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
