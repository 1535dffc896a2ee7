"""BOUNDARY test (no cluster, no helm here): the Helm post-renderer deploy/k8s/post-render gives the chart's daemon and
webserver their own service accounts and changes nothing else, through the real script and the real `kubectl kustomize`,
on a hand-written stand-in for the chart's render (tests/k8s/chart_render.yaml); its output validates strictly."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
POST_RENDER = ROOT / "deploy" / "k8s" / "post-render"
SCRIPT = POST_RENDER / "post-render"
RENDER = Path(__file__).with_name("chart_render.yaml")
#: The daemon's account (the chart's own, values.yaml serviceAccount.name) and the webserver's (deploy/k8s/rbac.yaml).
DAEMON_SA, WEBSERVER_SA = "dagster", "dagster-webserver"
#: What the post-renderer may set on a Deployment's pod spec; everything else must come out as it went in.
PATCHED_FIELDS = ("serviceAccountName", "automountServiceAccountToken")


def kustomize_version() -> str | None:
    """The kustomize built into the kubectl on PATH (None: no kubectl, or one too old to report it, as 1.20 is)."""
    if shutil.which("kubectl") is None:
        return None
    answer = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True, check=False)
    return json.loads(answer.stdout or "{}").get("kustomizeVersion")


def _major(version: str | None) -> int:
    return int(version.lstrip("v").split(".")[0]) if version else 0


# kubectl is in the base image of this project's machines (kubectl 1.32, kustomize v5.5; CI runs on the same kind);
# scripts/setup installs none: Debian's kubernetes-client is kubectl 1.20, whose kustomize v2 rejects the
# kustomization (`patches` with a label selector), so installing it would not make these tests run.
pytestmark = [
    pytest.mark.k8s_boundary,
    pytest.mark.skipif(
        _major(kustomize_version()) < 4,
        reason="needs `kubectl kustomize` with kustomize v4 or later (kubectl 1.21+) on PATH: "
        f"found {shutil.which('kubectl') or 'no kubectl'}, kustomize {kustomize_version() or 'unknown'}",
    ),
]


def post_render(text: str, script: Path = SCRIPT) -> list[dict]:
    """Run the post-renderer as helm does (manifests on stdin, manifests on stdout, non-zero exit: failure)."""
    done = subprocess.run([str(script)], input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def keyed(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def by_component(docs: list[dict], component: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"].get("component") == component]
    return found


def normalized(doc: dict, *, drop: tuple[str, ...] = ()) -> dict:
    """The document with the pod-spec fields ``drop`` removed, and an empty ``metadata.annotations`` (which kustomize
    drops: the same object to the API server) dropped."""
    doc = copy.deepcopy(doc)
    if doc["metadata"].get("annotations") == {}:
        del doc["metadata"]["annotations"]
    if doc["kind"] == "Deployment":
        for field in drop:
            doc["spec"]["template"]["spec"].pop(field, None)
    return doc


def post_render_problems(before: list[dict], after: list[dict]) -> list[str]:
    """Everything the post-renderer got wrong on this render (empty: the accounts are split and nothing else moved)."""
    problems = []
    if sorted(keyed(before)) != sorted(keyed(after)):
        problems.append(f"resources changed: {sorted(keyed(before))} -> {sorted(keyed(after))}")
    for key, doc in keyed(before).items():
        out = keyed(after).get(key)
        if out is None:
            continue
        component = doc["metadata"].get("labels", {}).get("component", "")
        wanted = None
        if doc["kind"] == "Deployment" and component == "dagster-daemon":
            wanted = DAEMON_SA
        elif doc["kind"] == "Deployment" and component.startswith("dagster-webserver"):
            wanted = WEBSERVER_SA
        if wanted is not None:
            spec = out["spec"]["template"]["spec"]
            if spec.get("serviceAccountName") != wanted:
                problems.append(f"{key}: runs as {spec.get('serviceAccountName')!r}, not {wanted!r}")
            if spec.get("automountServiceAccountToken") is not True:
                problems.append(f"{key}: no token (its run launcher calls the API)")
            if normalized(out, drop=PATCHED_FIELDS) != normalized(doc, drop=PATCHED_FIELDS):
                problems.append(f"{key}: changed beyond its account")
        elif normalized(out) != normalized(doc):
            problems.append(f"{key}: changed, but it is neither the daemon nor the webserver")
    return problems


def test_the_daemon_and_the_webserver_get_their_own_accounts_and_nothing_else_changes():
    text = RENDER.read_text()
    before, after = documents(text), post_render(text)
    assert post_render_problems(before, after) == []
    assert by_component(after, "dagster-daemon")["spec"]["template"]["spec"]["serviceAccountName"] == DAEMON_SA
    assert by_component(after, "dagster-webserver")["spec"]["template"]["spec"]["serviceAccountName"] == WEBSERVER_SA
    # the stand-in starts where the chart does: both on the chart's one account; the code server on aiflow-run
    chart_accounts = {
        by_component(before, c)["spec"]["template"]["spec"]["serviceAccountName"] for c in ("dagster-daemon", "dagster-webserver")
    }
    assert chart_accounts == {DAEMON_SA}
    assert by_component(after, "user-deployments")["spec"]["template"]["spec"]["serviceAccountName"] == "aiflow-run"
    unpatched = [k for k, d in keyed(before).items() if d["kind"] != "Deployment" or k[1] == "dagster-dagster-user-deployments-aiflow"]
    assert len(unpatched) == 4 and all(normalized(keyed(after)[k]) == normalized(keyed(before)[k]) for k in unpatched)


def test_the_post_rendered_manifests_validate_strictly():
    for doc in post_render(RENDER.read_text()):
        kubernetes_validate.validate(doc, kubernetes_validate.utils.latest_version(), strict=True)


def renamed_release(text: str) -> str:
    """The same render for release `prod` with the webserver's nameOverride left and the read-only webserver on
    (dagsterWebserver.enableReadOnly), and the chart's account left to its default (the release's full name)."""
    docs = documents(
        text.replace("name: dagster-webserver", "name: prod-webserver").replace("name: dagster-daemon", "name: prod-dagster-daemon")
    )
    read_only = copy.deepcopy(by_component(docs, "dagster-webserver"))
    read_only["metadata"]["name"] = "prod-webserver-read-only"
    for labels in (
        read_only["metadata"]["labels"],
        read_only["spec"]["selector"]["matchLabels"],
        read_only["spec"]["template"]["metadata"]["labels"],
    ):
        labels["component"] = "dagster-webserver-read-only"
    docs.append(read_only)
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["spec"]["template"]["spec"].get("serviceAccountName") == "dagster":
            doc["spec"]["template"]["spec"]["serviceAccountName"] = "prod-dagster"
    return yaml.safe_dump_all(docs, sort_keys=False)


def test_the_deployments_are_found_by_their_component_label_whatever_the_release_is_called():
    text = renamed_release(RENDER.read_text())
    before, after = documents(text), post_render(text)
    assert post_render_problems(before, after) == []
    assert by_component(after, "dagster-webserver-read-only")["spec"]["template"]["spec"]["serviceAccountName"] == WEBSERVER_SA
    assert by_component(after, "dagster-daemon")["spec"]["template"]["spec"]["serviceAccountName"] == DAEMON_SA


def test_a_render_kustomize_cannot_read_makes_the_post_renderer_fail():
    """helm stops on a post-renderer's non-zero exit; a broken render must not come out as an empty release."""
    done = subprocess.run([str(SCRIPT)], input="kind: [unclosed\n", capture_output=True, text=True, check=False)
    assert done.returncode != 0 and done.stdout == ""


def broken_copy(tmp_path: Path, edit) -> Path:
    """A copy of the post-renderer whose kustomization ``edit`` changed (the real script, run from the copy)."""
    copy_dir = tmp_path / "post-render"
    shutil.copytree(POST_RENDER, copy_dir)
    kustomization = yaml.safe_load((copy_dir / "kustomization.yaml").read_text())
    edit(kustomization)
    (copy_dir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return copy_dir / "post-render"


def _selector(patch: dict) -> str:
    return patch["target"]["labelSelector"]


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda k: k.update(patches=[p for p in k["patches"] if "webserver" not in _selector(p)]), "not 'dagster-webserver'"),
        (lambda k: k.update(patches=[p for p in k["patches"] if "daemon" not in _selector(p)]), "not 'dagster'"),
        (
            lambda k: [
                p["target"].update(labelSelector="app.kubernetes.io/instance=dagster") for p in k["patches"] if "webserver" in _selector(p)
            ],
            "neither the daemon nor the webserver",
        ),
        (
            lambda k: [
                p["target"].update(labelSelector="component=dagster-webserver") for p in k["patches"] if "webserver" in _selector(p)
            ],
            "read-only",
        ),
    ],
    ids=["webserver-patch-removed", "daemon-patch-removed", "selector-too-broad", "read-only-webserver-missed"],
)
def test_the_check_catches_a_broken_post_renderer(tmp_path, edit, complaint):
    text = renamed_release(RENDER.read_text())  # the chart's account is not the daemon's here: the pin must act
    problems = post_render_problems(documents(text), post_render(text, broken_copy(tmp_path, edit)))
    assert any(complaint in p for p in problems), problems
