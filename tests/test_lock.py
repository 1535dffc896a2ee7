"""requirements.lock: every dependency of pyproject.toml pinned exactly, within constraints.txt, machine-neutral; the set-up installs it and the venv is consistent."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
#: What a line of the lock may be: `name==version` (PEP 440, a local build tag such as +cpu allowed).
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[0-9][0-9A-Za-z.!+_-]*)$")


def pyproject_requirements(pyproject: dict) -> list[Requirement]:
    """The main dependencies and every optional group (dev)."""
    project = pyproject["project"]
    lines = project["dependencies"] + [r for group in project.get("optional-dependencies", {}).values() for r in group]
    return [Requirement(line) for line in lines]


def constraint_requirements(text: str) -> list[Requirement]:
    return [Requirement(line.split("#")[0].strip()) for line in text.splitlines() if line.split("#")[0].strip()]


def lock_problems(lock_text: str, pyproject: dict, constraints_text: str) -> list[str]:
    """Everything wrong with a lock file's text (empty: fine)."""
    problems, pins = [], {}
    for number, raw in enumerate(lock_text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        if match is None:
            problems.append(f"requirements.lock line {number}: {line!r} is not `name==version` (no ranges, URLs, paths or options)")
            continue
        try:
            pins[canonicalize_name(match["name"])] = Requirement(line)
        except InvalidRequirement as error:
            problems.append(f"requirements.lock line {number}: {error}")
    if re.search(r"(file:|/opt/|/home/|/work/|/tmp/|--(extra-)?index-url|--find-links)", lock_text):
        problems.append("requirements.lock carries a local path or an index/find-links option: it must be machine-neutral")
    for requirement in pyproject_requirements(pyproject):
        if canonicalize_name(requirement.name) not in pins:
            problems.append(f"pyproject.toml dependency {requirement.name!r} is not pinned in requirements.lock: run ./scripts/lock")
    for constraint in constraint_requirements(constraints_text):
        pin = pins.get(canonicalize_name(constraint.name))
        if pin is not None:
            (version,) = [s.version for s in pin.specifier]
            if not constraint.specifier.contains(version, prereleases=True):
                problems.append(f"requirements.lock pins {pin} outside constraints.txt's {constraint}")
    return problems


@pytest.fixture(scope="module")
def sources() -> tuple[str, dict, str]:
    return LOCK.read_text(), tomllib.loads((ROOT / "pyproject.toml").read_text()), (ROOT / "constraints.txt").read_text()


def test_the_lock_pins_every_dependency_within_the_constraints(sources):
    assert lock_problems(*sources) == []
    lock_text, _, _ = sources
    torch = [line for line in lock_text.splitlines() if line.startswith("torch==")]
    assert torch and torch[0].removeprefix("torch==").split("+")[0] == "2.13.0"  # the local CPU build: 2.13.0+cpu
    assert "./scripts/lock" in lock_text.splitlines()[1]  # the header names the one command that updates it


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda lock, py, con: (re.sub(r"(?m)^polars==\S+", "polars>=2", lock), py, con), "not `name==version`"),
        (lambda lock, py, con: (re.sub(r"(?m)^deltalake==\S+\n", "", lock), py, con), "'deltalake' is not pinned"),
        (lambda lock, py, con: ("--find-links /opt/wheels\n" + lock, py, con), "machine-neutral"),
        (lambda lock, py, con: (re.sub(r"(?m)^torch==\S+", "torch==2.14.0", lock), py, con), "outside constraints.txt"),
        (
            lambda lock, py, con: (lock, {"project": {**py["project"], "dependencies": [*py["project"]["dependencies"], "newpkg"]}}, con),
            "'newpkg' is not pinned",
        ),
    ],
    ids=["range", "missing", "local-path", "off-constraint", "new-dependency"],
)
def test_the_lock_checker_rejects_a_stale_or_loose_lock(sources, edit, complaint):
    """The checks are real: a copy of the lock edited badly (or a dependency added without re-locking) is named."""
    problems = lock_problems(*edit(*sources))
    assert any(complaint in p for p in problems), problems


def test_setup_and_image_install_the_lock_then_the_package_without_dependencies():
    setup = (ROOT / "scripts" / "setup").read_text()
    installs = [line for line in setup.splitlines() if " install " in line and not line.lstrip().startswith("#")]
    assert any("-r requirements.lock" in line for line in installs)
    assert any("--no-deps -e ." in line for line in installs)
    assert not any("constraints.txt" in line or "'.[dev]'" in line for line in installs)  # nothing resolved at install time
    assert "pip check" in setup
    lock_script = (ROOT / "scripts" / "lock").read_text()
    assert "pip compile pyproject.toml --extra dev" in lock_script and "--constraint constraints.txt" in lock_script


def test_the_installed_environment_is_consistent():
    """`pip check` in the venv the tests run in (pandas<3 for evidently is a constraint, not a dependency pip sees)."""
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
