"""BOUNDARY test: deploy/ says what the code reads - the landing root the real resolution turns into the demo's landing zones,
the Secrets the files and the k8s profile name (each created in deploy/README.md), and the PostgreSQL set-up run for real."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from aiflow.spec import demo_spec_path, load_spec
from aiflow.storage import settings as cfg
from resources.profiles import TRAINING_SECRET_ENV, resources_for

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY, K8S = ROOT / "deploy", ROOT / "deploy" / "k8s"
GUIDE = DEPLOY / "README.md"


def values() -> dict:
    return yaml.safe_load((K8S / "values.yaml").read_text())


def code_location_env() -> dict[str, str]:
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    return {e["name"]: e["value"] for e in deployment["env"]}


def serving_env() -> dict[str, str]:
    docs = [d for d in yaml.safe_load_all((K8S / "serving.yaml").read_text()) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}


def landing_uris_in_deploy_files() -> dict[str, str]:
    """Every AIFLOW_LANDING_URI value the deploy files give (manifests and docs), by where it is written."""
    found = {"values.yaml": code_location_env()[cfg.LANDING_URI], "serving.yaml": serving_env()[cfg.LANDING_URI]}
    for doc in DEPLOY.rglob("*.md"):
        for i, value in enumerate(re.findall(rf"{cfg.LANDING_URI}=(s3://[\w./-]+)", doc.read_text())):
            found[f"{doc.relative_to(ROOT)}#{i}"] = value
    return found


def resolved_landing_zones(env: dict[str, str]) -> dict[str, str]:
    """The landing zone of every table of the demo spec, resolved by the code (Settings, as the CLI and profiles do)."""
    settings = cfg.Settings.from_env({**env, cfg.PROFILE: "k8s"})
    spec = load_spec(demo_spec_path())
    return {table.name: settings.landing_uri_for(table) for table in spec.tables}


def landing_problems(uri: str) -> list[str]:
    env = {**code_location_env(), cfg.LANDING_URI: uri}
    problems = []
    for table, zone in resolved_landing_zones(env).items():
        key = zone.removeprefix("s3://aiflow-lake/")
        if key != f"landing/{table}":
            problems.append(f"{cfg.LANDING_URI}={uri} puts {table}'s landing zone at {zone}, not s3://aiflow-lake/landing/{table}")
    return problems


def test_every_landing_uri_in_deploy_resolves_the_demo_zones_once_under_landing():
    uris = landing_uris_in_deploy_files()
    assert {"values.yaml", "serving.yaml"} < set(uris) and any(k.startswith("deploy/README.md") for k in uris)
    for where, uri in uris.items():
        assert landing_problems(uri) == [], where


def test_the_landing_check_names_the_doubled_prefix():
    (problem, *_) = landing_problems("s3://aiflow-lake/landing")
    assert "s3://aiflow-lake/landing/landing/" in problem


# --- Secrets: every name read anywhere is created in the guide -----------------------------------------------------------


def created_secrets() -> set[str]:
    """Secrets deploy/README.md creates (`kubectl ... create secret generic|tls NAME`)."""
    return set(re.findall(r"create secret (?:generic|tls|docker-registry) ([a-z0-9-]+)", GUIDE.read_text()))


def referenced_secrets() -> dict[str, set[str]]:
    """Secret names each deploy file refers to (envFrom, volumes, chart settings, the run launcher)."""
    v = values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    refs = {
        "values.yaml": {s["name"] for s in deployment.get("envSecrets", []) + launcher.get("envSecrets", [])}
        | {v["global"]["postgresqlSecretName"]},
    }
    instance = yaml.safe_load((K8S / "dagster.yaml").read_text())["run_launcher"]["config"]
    refs["dagster.yaml"] = set(instance.get("env_secrets", [])) | {instance["postgres_password_secret"]}
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if "secretName" in node:
                found.add(node["secretName"])
            if "secretRef" in node:
                found.add(node["secretRef"]["name"])
            if "secretKeyRef" in node:
                found.add(node["secretKeyRef"]["name"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(v)  # volumes of the values (the PostgreSQL CA)
    refs["values.yaml"] |= found
    for name in sorted(K8S.glob("*.yaml")):
        if name.name in ("values.yaml", "dagster.yaml"):
            continue
        found = set()
        for doc in yaml.safe_load_all(name.read_text()):
            walk(doc)
        refs[name.name] = found
    return refs


def test_every_secret_a_deploy_file_reads_is_created_in_the_guide():
    created = created_secrets()
    assert {"aiflow-aws", "dagster-postgresql-secret"} <= created
    for where, names in referenced_secrets().items():
        assert names <= created, f"{where} reads {sorted(names - created)}, which deploy/README.md never creates"


@pytest.fixture
def k8s_env(monkeypatch):
    """The code location's environment from values.yaml (secrets aside: dummies), as the k8s profile reads it."""
    for name, value in {**code_location_env(), "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_training_pods_read_a_secret_the_guide_creates(k8s_env):
    assert resources_for("k8s")["trainer"].env_from_secrets == [code_location_env()[TRAINING_SECRET_ENV]]
    assert set(resources_for("k8s")["trainer"].env_from_secrets) <= created_secrets()
    k8s_env.delenv(TRAINING_SECRET_ENV)  # the code's default is one the guide creates too
    assert resources_for("k8s")["trainer"].env_from_secrets[0] in created_secrets()
    k8s_env.setenv(TRAINING_SECRET_ENV, "")  # per-pod cloud identity: no key Secret at all
    assert resources_for("k8s")["trainer"].env_from_secrets == []


# --- PostgreSQL: the guide's set-up, run with psql against a real server ------------------------------------------------


def test_the_postgres_setup_creates_a_role_that_owns_its_database(postgres_server):
    from tests.fixtures.postgres import postgres_bin_dir

    setup = DEPLOY / "postgres" / "setup.sql"
    assert f"-f {setup.relative_to(ROOT)}" in GUIDE.read_text()
    password = "s3cret-Pw"
    admin = postgres_server
    env = {"PGPASSWORD": admin.password, "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [str(postgres_bin_dir() / "psql"), "-h", admin.host, "-p", str(admin.port), "-U", admin.user, "-d", "postgres",
         "-v", f"dagster_password={password}", "-f", str(setup)],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    try:
        assert run.returncode == 0, run.stderr
        import psycopg2

        conn = psycopg2.connect(host=admin.host, port=admin.port, user="dagster", password=password, dbname="dagster")
        with conn, conn.cursor() as cur:  # what `dagster instance migrate` needs: tables in public
            cur.execute("CREATE TABLE probe (id int)")
            cur.execute("SELECT current_user, current_database()")
            assert cur.fetchone() == ("dagster", "dagster")
        conn.close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host=admin.host, port=admin.port, user="dagster", password="wrong", dbname="dagster")
        with admin.connect("postgres") as conn, conn.cursor() as cur:
            cur.execute("CREATE ROLE aiflow_other LOGIN PASSWORD 'other'")
        with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):  # CONNECT revoked from PUBLIC
            psycopg2.connect(host=admin.host, port=admin.port, user="aiflow_other", password="other", dbname="dagster")
    finally:
        conn = admin.connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS dagster WITH (FORCE)")
            cur.execute("DROP ROLE IF EXISTS dagster")
            cur.execute("DROP ROLE IF EXISTS aiflow_other")
        conn.close()
