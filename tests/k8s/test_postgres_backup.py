"""The guide's backup and restore of Dagster's PostgreSQL, run as written (pg_dump / pg_restore from the pgserver binaries)
against a real server holding a Dagster instance: the restored copy, owned by the dagster role, answers with the same event."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "deploy" / "README.md"


def guide_command(program: str) -> list[str]:
    """The one ``program ...`` line of the guide, split as a shell would."""
    (line,) = [line for line in GUIDE.read_text().splitlines() if re.match(rf"{program} ", line)]
    return shlex.split(line)


def conninfo(server, db: str, user: str, password: str) -> str:
    return f"host={server.host} port={server.port} dbname={db} user={user} password={password}"


def instance_on(tmp_path: Path, server, db: str, password: str):
    from dagster import DagsterInstance

    home = tmp_path / db
    home.mkdir()
    storage = {"hostname": server.host, "port": server.port, "db_name": db, "username": "dagster", "password": password,
               "scheme": "postgresql+psycopg2"}  # fmt: skip
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_db": storage}}, "telemetry": {"enabled": False}}))
    return DagsterInstance.from_config(str(home))


def test_the_guides_dump_restores_a_dagster_instance_into_a_fresh_database(postgres_server, tmp_path):
    from dagster import AssetKey, AssetMaterialization

    from tests.fixtures.postgres import postgres_bin_dir

    admin, password, bin_dir = postgres_server, "drill-Pw1", postgres_bin_dir()
    env = {"PATH": "/usr/bin:/bin"}
    setup = (ROOT / "deploy" / "postgres" / "setup.sql").read_text()
    try:
        for db in ("dagster", "dagster_restore"):  # the guide's setup.sql, the second time under another name
            sql = setup if db == "dagster" else setup.replace("CREATE ROLE", "-- CREATE ROLE").replace("DATABASE dagster", f"DATABASE {db}")
            run = subprocess.run([str(bin_dir / "psql"), conninfo(admin, "postgres", admin.user, admin.password), "-v",
                                  f"dagster_password={password}"], input=sql, env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
            assert run.returncode == 0, run.stderr
        instance = instance_on(tmp_path, admin, "dagster", password)
        instance.report_runless_asset_event(AssetMaterialization("flights/features", metadata={"rows": 42}))
        instance.dispose()

        dump = guide_command("pg_dump")
        dump[0] = str(bin_dir / "pg_dump")
        dump = [a.replace("dagster.dump", str(tmp_path / "dagster.dump")) for a in dump]
        dump[-1] = conninfo(admin, "dagster", "dagster", password)  # "$DAGSTER_PG_URI"
        run = subprocess.run(dump, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr

        restore = [a for a in guide_command("pg_restore") if not a.startswith("--dbname=")]
        restore[0] = str(bin_dir / "pg_restore")
        restore[-1] = str(tmp_path / "dagster.dump")
        restore.insert(1, f"--dbname={conninfo(admin, 'dagster_restore', 'dagster', password)}")  # "$DAGSTER_PG_RESTORE_URI"
        run = subprocess.run(restore, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr

        restored = instance_on(tmp_path, admin, "dagster_restore", password)
        event = restored.get_latest_materialization_event(AssetKey(["flights", "features"]))
        assert event is not None and event.asset_materialization.metadata["rows"].value == 42
        restored.dispose()
    finally:
        conn = admin.connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in ("dagster", "dagster_restore"):
                cur.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            cur.execute("DROP ROLE IF EXISTS dagster")
        conn.close()
