"""Images by digest: every FROM of deploy/Dockerfile is pinned to a sha256 digest, and scripts/pin-images (the refresh command) rewrites the pins."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "pin-images"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def unpinned_froms(text: str) -> list[str]:
    """The FROM images of a Dockerfile that are neither pinned by digest nor an earlier stage of the same file."""
    stages, unpinned = set(), []
    for command in dockerfile.parse_string(text):
        if command.cmd != "FROM":
            continue
        image = command.value[0]
        if image not in stages and not DIGEST.search(image):
            unpinned.append(image)
        if len(command.value) == 3 and command.value[1].upper() == "AS":
            stages.add(command.value[2])
    return unpinned


def test_every_from_of_the_dockerfile_is_pinned_by_digest():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert unpinned_froms(text) == []
    assert len([c for c in dockerfile.parse_string(text) if c.cmd == "FROM"]) >= 2
    assert "./scripts/pin-images" in text  # the refresh command, where the pin is


@pytest.mark.parametrize(
    "text, unpinned",
    [
        ("FROM python:3.11-slim AS builder\nFROM builder\n", ["python:3.11-slim"]),
        (f"FROM python:3.11-slim@sha256:{'a' * 64} AS b\nFROM b\nFROM debian:12\n", ["debian:12"]),
        ("FROM python@sha256:abc\n", ["python@sha256:abc"]),
    ],
)
def test_the_pin_check_names_an_image_by_tag(text, unpinned):
    assert unpinned_froms(text) == unpinned


def fake_registry_tool(folder: Path, output: str | None = None) -> Path:
    """A stand-in `crane` on PATH: no registry is reachable from these machines, so the digest lookup is the one mocked
    part; it answers sha256 of the reference (or `output`) and records each call."""
    folder.mkdir()
    answer = f"echo '{output}'" if output is not None else 'echo "sha256:$(printf %s "$2" | sha256sum | cut -c1-64)"'
    tool = folder / "crane"
    tool.write_text(f'#!/bin/sh\necho "$*" >> "{folder}/calls"\n{answer}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return folder


def repo_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "deploy", copy / "deploy")
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, copy / "scripts" / "pin-images")
    return copy


def run(copy: Path, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run([str(copy / "scripts" / "pin-images")], env=env, capture_output=True, text=True, timeout=60)


def expected_digest(ref: str) -> str:
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()


def test_pin_images_rewrites_every_third_party_image_to_the_registry_digest(tmp_path):
    copy = repo_copy(tmp_path)
    tools = fake_registry_tool(tmp_path / "bin")
    result = run(copy, f"{tools}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr

    calls = sorted((tools / "calls").read_text().splitlines())
    assert calls == ["digest python:3.11-slim", "digest quay.io/oauth2-proxy/oauth2-proxy:v7.12.0"]  # tags, old digests dropped
    text = (copy / "deploy" / "Dockerfile").read_text()
    froms = [c.value[0] for c in dockerfile.parse_string(text) if c.cmd == "FROM"]
    assert froms and set(froms) == {f"python:3.11-slim@{expected_digest('python:3.11-slim')}"}
    proxy = (copy / "deploy" / "k8s" / "oauth2-proxy.yaml").read_text()
    ref = "quay.io/oauth2-proxy/oauth2-proxy:v7.12.0"
    assert f"image: {ref}@{expected_digest(ref)}\n" in proxy
    assert "image: REGISTRY/aiflow:0.1.0" in (copy / "deploy" / "k8s" / "serving.yaml").read_text()  # our own image: the user's

    before = {p: p.read_text() for p in (copy / "deploy").rglob("*") if p.is_file()}
    assert run(copy, f"{tools}:/usr/bin:/bin").returncode == 0
    assert before == {p: p.read_text() for p in (copy / "deploy").rglob("*") if p.is_file()}  # a second run changes nothing


@pytest.mark.parametrize("answer", [None, "Error: MANIFEST_UNKNOWN"], ids=["no-tool", "not-a-digest"])
def test_pin_images_fails_and_changes_nothing_without_a_digest(tmp_path, answer):
    copy = repo_copy(tmp_path)
    path = "/usr/bin:/bin" if answer is None else f"{fake_registry_tool(tmp_path / 'bin', answer)}:/usr/bin:/bin"
    if answer is None and any(shutil.which(t, path=path) for t in ("crane", "skopeo", "docker")):
        pytest.skip("a real registry tool is installed on this machine")
    result = run(copy, path)
    assert result.returncode != 0
    assert "crane, skopeo or docker" in result.stderr or "not a digest" in result.stderr
    assert (copy / "deploy" / "Dockerfile").read_text() == (ROOT / "deploy" / "Dockerfile").read_text()
