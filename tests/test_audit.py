"""scripts/audit, the dependency scan of the runtime lock: its offline part (reading and hash-checking requirements.lock, every
package counted, no service asked) runs here; the scan itself needs a vulnerability service these machines do not reach."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.test_lock import pins_of

ROOT = Path(__file__).resolve().parents[1]
#: Any request to a vulnerability service would go through this dead proxy and fail: the dry run must not need one.
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def dry_run(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE, "PYTHON": sys.executable}
    return subprocess.run([str(root / "scripts" / "audit"), "--dry-run"], env=env, capture_output=True, text=True, timeout=120)


def test_the_audit_reads_every_package_of_the_runtime_lock_offline():
    result = dry_run(ROOT)
    assert result.returncode == 0, result.stderr
    (count,) = re.findall(r"would have audited (\d+) packages", result.stderr + result.stdout)
    assert int(count) == len(pins_of((ROOT / "requirements.lock").read_text())) > 100
    script = (ROOT / "scripts" / "audit").read_text()
    assert "-r requirements.lock" in script and "--strict" in script and "--require-hashes" in script


def test_the_audit_refuses_a_lock_entry_without_hashes(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "audit", tmp_path / "scripts" / "audit")
    lock = (ROOT / "requirements.lock").read_text()
    (tmp_path / "requirements.lock").write_text(lock + "\nunhashed-package==1.0\n")
    result = dry_run(tmp_path)
    assert result.returncode != 0 and "unhashed-package" in result.stderr + result.stdout
