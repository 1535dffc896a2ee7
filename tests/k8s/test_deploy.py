"""BOUNDARY test (no cluster here): deploy/ files pass Dagster's instance schema, K8sRunLauncher config and the Kubernetes schema."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import dockerfile
import kubernetes_validate
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s import K8sRunLauncher

from aiflow.storage.settings import Settings
from resources.k8s_tags import GPU_RUN_TAGS, GPU_TAG_KEY
from resources.k8s_training import K8sTrainingLauncher
from tests.test_lock import lock_problems, pins_of

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def test_instance_yaml_is_valid_dagster_config(tmp_path):
    shutil.copy(K8S / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # raises on any schema error

    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors
    assert launcher["config"]["job_namespace"] == K8sTrainingLauncher(image="x").namespace
    assert "aiflow-aws" in launcher["config"]["env_secrets"]
    assert validate_config(S3ComputeLogManager.config_type(), config["compute_logs"]["config"]).success

    (limit,) = [t for t in config["concurrency"]["runs"]["tag_concurrency_limits"] if t["key"] == GPU_TAG_KEY]
    assert limit["value"] == GPU_RUN_TAGS[GPU_TAG_KEY] and limit["limit"] >= 1


def test_helm_values_point_the_code_location_at_definitions_and_limit_gpu_runs():
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-f") + 1] == "definitions.py" and (ROOT / "definitions.py").exists()
    assert {"name": "AIFLOW_PROFILE", "value": "k8s"} in deployment["env"]
    # the code location's environment is complete for the k8s profile (secrets aside: they come from envSecrets)
    env = {e["name"]: e["value"] for e in deployment["env"]}
    settings = Settings.from_env(env)
    assert (settings.profile, settings.lake_uri, settings.artifact_uri) == ("k8s", env["AIFLOW_LAKE_URI"], env["AIFLOW_ARTIFACT_URI"])
    assert {"name": "aiflow-aws"} in deployment["envSecrets"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": GPU_TAG_KEY, "value": "true", "limit": 2} in limits


def test_rbac_validates_strictly_and_grants_what_the_pipes_launcher_calls():
    documents = list(yaml.safe_load_all((K8S / "rbac.yaml").read_text()))
    for document in documents:
        kubernetes_validate.validate(document, kubernetes_validate.utils.latest_version(), strict=True)
    accounts = {d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"}
    assert K8sTrainingLauncher(image="x").service_account_name in accounts
    (role,) = [d for d in documents if d["kind"] == "Role" and d["metadata"]["name"] == "aiflow-training-launcher"]
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    needed = {("pods", v) for v in ("create", "get", "list", "delete")} | {("pods/log", "get"), ("events", "list")}
    assert needed <= granted


# --- the image: deploy/Dockerfile, parsed by BuildKit's own parser (the `dockerfile` package), no engine needed ---

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
LOCK = "requirements.lock"  # the runtime lock (tests/test_lock.py: no dev tool, every entry hashed)
TORCH_INSTALL = 'pip install --index-url "${TORCH_INDEX_URL}" "torch==${torch_version}"'
#: What only a builder may run: compilers, build tools, package-manager installs.
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|yum|dnf)\b.*\binstall\b|\b(build-essential|gcc|g\+\+|make|cmake|cargo|rustc)\b|pip (install|wheel)"
)


def stages(text: str) -> list[list[dockerfile.Command]]:
    """The Dockerfile's commands grouped by stage (each group starts with its FROM)."""
    groups: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_string(text):
        if command.cmd == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(command)
    return groups


def locks_of(run: str) -> set[str]:
    """The runtime lock and the files a RUN command derives from it (`... requirements.lock > X`)."""
    return {LOCK} | {p.split(">")[-1].strip() for p in re.split(r"&&|;", run) if LOCK in p and ">" in p}


def dockerfile_problems(text: str, root: Path = ROOT) -> list[str]:
    """Everything wrong with a Dockerfile for the user-code image (empty: fine)."""
    problems = []
    groups = stages(text)
    if len(groups) < 2:
        return [f"{len(groups)} stage(s): want a builder and a slim final stage"]
    builder, final = groups[0], groups[-1]
    builder_name = builder[0].value[-1] if "AS" in (v.upper() for v in builder[0].value) else None
    if not re.fullmatch(r"python:3\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", final[0].value[0]):
        problems.append(f"final stage FROM {final[0].value[0]}: want a python:3.X-slim base")
    for group in groups:
        if not re.search(r"@sha256:[0-9a-f]{64}$", group[0].value[0]):
            problems.append(f"line {group[0].start_line}: FROM {group[0].value[0]} is not pinned by digest")
    if "imagetools inspect" not in text and "crane digest" not in text:
        problems.append("no command to refresh the base image's digest is documented")
    port = next((c.value[c.value.index("-p") + 1] for c in final if c.cmd == "CMD" and "-p" in c.value), None)
    checks = [c for c in final if c.cmd == "HEALTHCHECK"]
    if not checks or "grpc-health-check" not in checks[-1].value or port not in checks[-1].value:
        problems.append(f"the final stage needs a HEALTHCHECK running `dagster api grpc-health-check -p {port}` (the CMD's port)")
    if final[0].value[0] != builder[0].value[0]:
        problems.append("builder and final stage differ in base image: the copied venv's interpreter path breaks")
    for command in final:
        if command.cmd == "RUN" and BUILD_TOOLS.search(" ".join(command.value)):
            problems.append(f"line {command.start_line}: build tools or installs in the final stage: {command.original}")
    copied_from = [c for c in final if c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags)]
    if not copied_from or any(f != f"--from={builder_name}" for c in copied_from for f in c.flags if f.startswith("--from=")):
        problems.append(f"the final stage must COPY --from={builder_name} (the venv), and from nothing else")
    users = [c.value[0] for c in final if c.cmd == "USER"]
    if not users or users[-1] in ("0", "root") or not users[-1].isdigit():
        problems.append(f"final USER {users[-1] if users else None}: want a numeric non-root uid (runAsNonRoot checks it)")
    ignored = [
        p.strip() for p in (root / "deploy" / "Dockerfile.dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    for command in (c for group in groups for c in group if c.cmd == "COPY" and not any(f.startswith("--from=") for f in c.flags)):
        for source in command.value[:-1]:
            if not (root / source).exists():
                problems.append(f"line {command.start_line}: COPY {source}: no such file in the build context")
            if any(fnmatch.fnmatch(source, p) or source.split("/")[0] == p for p in ignored):
                problems.append(f"line {command.start_line}: COPY {source}: excluded by Dockerfile.dockerignore")
    # Every dependency install reads the runtime lock, hash-checked and resolving nothing; torch (the one entry whose
    # build the image chooses) comes by name from TORCH_INDEX_URL alone; the package itself goes in with --no-deps.
    installs = [c for group in groups for c in group if c.cmd == "RUN" and "pip install" in c.value[0]]
    for command in installs:
        parts = re.split(r"&&|;", command.value[0])
        locks = locks_of(command.value[0])
        for part in (p.strip() for p in parts if "pip install" in p):
            if "--extra-index-url" in part:
                problems.append(f"line {command.start_line}: `{part}`: a second index beside PyPI (dependency confusion)")
            if any(f"-r {lock}" in part for lock in locks):
                if "--require-hashes" not in part or "--no-deps" not in part:
                    problems.append(f"line {command.start_line}: `{part}` must install {LOCK} with --require-hashes --no-deps")
            elif part == TORCH_INSTALL:
                continue
            elif "--no-deps" not in part:
                problems.append(f"line {command.start_line}: `{part}` does not install from {LOCK}")
    if not any(f"--require-hashes --no-deps -r {lock}" in c.value[0] for c in installs for lock in locks_of(c.value[0])):
        problems.append(f"no RUN installs {LOCK} (or a file derived from it) with --require-hashes --no-deps")
    if not any(LOCK in c.value[:-1] for c in builder if c.cmd == "COPY"):
        problems.append(f"the builder does not COPY {LOCK}")
    if not any(c.cmd == "ARG" and c.value[0].startswith("TORCH_INDEX_URL=") for c in builder) or not any(
        "${TORCH_INDEX_URL}" in c.value[0] for c in builder if c.cmd == "RUN"
    ):
        problems.append("the builder must take torch from the TORCH_INDEX_URL build argument (CUDA images)")
    return problems


def test_dockerfile_is_multi_stage_slim_non_root_and_installs_the_lock():
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    groups = stages(text)
    assert len(groups) >= 2 and (ROOT / LOCK).exists()
    copied = [part for group in groups for c in group if c.cmd == "COPY" for part in c.value[:-1]]
    assert {"requirements.lock", "definitions.py", "workspace.yaml", "assets", "resources", "sensors"} <= set(copied)
    final_env = dict(zip(*[iter(v for c in groups[-1] if c.cmd == "ENV" for v in c.value)] * 2, strict=True))
    (venv,) = [c.value[-1] for c in groups[-1] if c.cmd == "COPY" and c.flags]
    assert final_env["PATH"].startswith(f"{venv}/bin:")  # `dagster`, `aiflow`, `python` are the venv's


def test_the_image_installs_every_runtime_lock_entry_but_torch_with_its_hashes(tmp_path):
    """The builder's own shell commands, run on the real lock: the file pip installs with --require-hashes is the
    runtime lock without torch's entry (its hashes and annotations too), and torch's version comes out right."""
    (run,) = [c.value[0] for group in stages(DOCKERFILE.read_text()) for c in group if c.cmd == "RUN" and LOCK in c.value[0]]
    derive = run.split("&& pip install")[0].replace("/tmp/", f"{tmp_path}/")
    shutil.copy(ROOT / LOCK, tmp_path / LOCK)
    script = f'set -e; {derive}; printf %s "$torch_version" > {tmp_path}/torch_version'
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, timeout=30)
    lock, image = pins_of((ROOT / LOCK).read_text()), pins_of((tmp_path / "requirements.image.lock").read_text())
    assert image == {name: pin for name, pin in lock.items() if name != "torch"} and len(image) > 100
    assert lock["torch"][0].startswith((tmp_path / "torch_version").read_text() + "+")
    assert lock_problems("the image's lock", (tmp_path / "requirements.image.lock").read_text(), [], "") == []  # no stray hash line


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda t: re.sub(r"FROM python:3.11-slim@sha256:\w+ AS runtime", "FROM python:3.11 AS runtime", t), "slim"),
        (lambda t: re.sub(r"@sha256:\w+ AS runtime", " AS runtime", t), "pinned by digest"),
        (lambda t: t.replace("crane digest", "crane").replace("imagetools inspect", "inspect"), "refresh"),
        (lambda t: re.sub(r"HEALTHCHECK[^\n]*\\\n[^\n]*\n", "", t), "HEALTHCHECK"),
        (lambda t: t.replace('"grpc-health-check", "-p", "3030"', '"grpc-health-check", "-p", "4000"'), "HEALTHCHECK"),
        (lambda t: t.replace("USER 10001", "USER root"), "non-root"),
        (lambda t: t.replace("COPY --from=builder /opt/venv /opt/venv", "COPY aiflow /opt/aiflow/aiflow"), "--from=builder"),
        (lambda t: t + "RUN apt-get update && apt-get install -y gcc\n", "final stage"),
        (lambda t: t.replace("COPY sensors ./sensors", "COPY sensors tests ./"), "dockerignore"),
        (lambda t: t.replace("COPY assets ./assets", "COPY assetz ./assets"), "no such file"),
        (lambda t: t.replace("-r /tmp/requirements.image.lock", "-c constraints.txt ."), "requirements.lock"),
        (lambda t: t.replace("-r /tmp/requirements.image.lock", "-r requirements.txt"), "requirements.lock"),
        (lambda t: t.replace('--index-url "${TORCH_INDEX_URL}" ', ""), "TORCH_INDEX_URL"),
        (lambda t: t.replace("--require-hashes --no-deps -r /tmp", "-r /tmp"), "--require-hashes --no-deps"),
        (lambda t: t.replace("--require-hashes --no-deps -r /tmp", "--no-deps -r /tmp"), "--require-hashes --no-deps"),
        (lambda t: t.replace('--index-url "${TORCH_INDEX_URL}"', '--extra-index-url "${TORCH_INDEX_URL}"'), "second index"),
        (
            lambda t: t.replace("COPY requirements.lock ./", "COPY requirements-dev.lock ./").replace(
                " requirements.lock", " requirements-dev.lock"
            ),
            "does not COPY requirements.lock",
        ),
        (lambda t: t.split("FROM python:3.11-slim@")[0] + "FROM python:3.11-slim@" + t.split("FROM python:3.11-slim@")[1], "stage"),
    ],
    ids=[
        "not-slim",
        "no-digest",
        "no-refresh-command",
        "no-healthcheck",
        "healthcheck-port",
        "root",
        "no-copy-from",
        "compiler",
        "ignored-source",
        "missing-source",
        "not-the-lock",
        "another-file",
        "no-cuda-arg",
        "no-hashes",
        "no-hashes-only-no-deps",
        "extra-index",
        "dev-lock",
        "one-stage",
    ],
)
def test_the_dockerfile_checker_rejects_a_bad_edit(edit, complaint):
    """The checks are real: each bad edit of a copy of the Dockerfile is named."""
    edited = edit(DOCKERFILE.read_text())
    assert edited != DOCKERFILE.read_text()
    problems = dockerfile_problems(edited)
    assert any(complaint in p for p in problems), problems
