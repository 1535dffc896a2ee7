"""Scope: no configured secret (S3 access and secret key, the serving token, the webhook URL) leaks anywhere the whole
S3 loop (tests/e2e/s3_loop.py, shared session run) leaves a trace: the Dagster event log (every event serialized,
metadata included), the run and compute logs and every other file of the Dagster home, the server's log, every Delta
table (read back with Polars), the raw bytes of every object under the run's S3 prefix (model cards, manifests,
drift reports), and the local files of the run."""

from __future__ import annotations

import pytest

from tests.e2e.s3_loop import LoopRun

pytestmark = [pytest.mark.s3, pytest.mark.slow]  # end to end: run by ./scripts/test after the default suite


def _secrets(run: LoopRun) -> dict[str, str]:
    found = {
        "AWS_SECRET_ACCESS_KEY": run.s3.secret_key,
        "AWS_ACCESS_KEY_ID": run.s3.access_key,
        "AIFLOW_SERVE_TOKEN": run.token,
        "AIFLOW_WEBHOOK_URL": run.webhook_url,
        "the webhook URL's secret path": run.webhook_url.rsplit("/", 1)[-1],
    }
    assert all(len(v) >= 16 for v in found.values())  # long and random: a hit cannot be a coincidence
    return found


def _leaks(where: str, data: bytes | str, secrets: dict[str, str]) -> list[str]:
    raw = data.encode(errors="replace") if isinstance(data, str) else data
    return [f"{name} in {where}" for name, value in secrets.items() if value.encode() in raw]


def test_the_dagster_event_log_and_every_file_of_the_instance_hold_no_secret(s3_loop_run: LoopRun):
    from dagster import DagsterInstance
    from dagster._serdes import serialize_value  # test code: the event log's own serialization

    run, secrets = s3_loop_run, _secrets(s3_loop_run)
    leaks, events = [], 0
    with DagsterInstance.from_config(str(run.dagster_home)) as instance:
        for run_id in run.run_ids:
            records = instance.all_logs(run_id)
            events += len(records)
            for record in records:
                leaks += _leaks(f"event {record.dagster_event_type} of run {run_id[:8]}", serialize_value(record), secrets)
            dagster_run = instance.get_run_by_id(run_id)
            leaks += _leaks(f"run {run_id[:8]} (config, tags)", serialize_value(dagster_run), secrets)
    # the run logs and compute logs (stdout/stderr of each step, the training subprocess's included), the sqlite
    # event log and run storage: every file under DAGSTER_HOME, byte for byte
    files = [p for p in run.dagster_home.rglob("*") if p.is_file()]
    for path in files:
        leaks += _leaks(str(path.relative_to(run.dagster_home)), path.read_bytes(), secrets)
    assert events > 100 and any(p.suffix in (".out", ".err", ".complete") or "compute_logs" in str(p) for p in files)
    assert leaks == [], leaks


def test_the_server_log_and_the_local_files_of_the_run_hold_no_secret(s3_loop_run: LoopRun):
    run, secrets = s3_loop_run, _secrets(s3_loop_run)
    assert "serving" in run.server_log  # the log the server wrote (startup line at least)
    leaks = _leaks("aiflow serve's log", run.server_log, secrets)
    for path in run.tmp.rglob("*"):
        if path.is_file() and run.dagster_home not in path.parents:
            leaks += _leaks(str(path), path.read_bytes(), secrets)
    assert leaks == [], leaks


def test_no_delta_table_and_no_object_in_the_bucket_holds_a_secret(s3_loop_run: LoopRun):
    from aiflow.storage.lake import Lake

    run, secrets = s3_loop_run, _secrets(s3_loop_run)
    client, keys = run.s3.client(), run.keys()
    leaks = []
    for key in keys:  # every object byte for byte: parquet files, Delta logs, bundles, model cards, drift reports
        leaks += _leaks(key, client.get_object(Bucket=run.s3.bucket, Key=f"{run.key_prefix}/{key}")["Body"].read(), secrets)
    # every Delta table read back (a compressed parquet page would hide a value from the byte scan)
    tables = sorted({k.split("/_delta_log/")[0].removeprefix("lake/") for k in keys if k.startswith("lake/") and "/_delta_log/" in k})
    lake = Lake(f"{run.prefix}/lake", run.s3.storage_options)
    for table in tables:
        frame = lake.scan(table).collect()
        text = frame.write_ndjson()  # every value, nested ones included, as text
        leaks += _leaks(f"Delta table {table}", text, secrets)
        leaks += _leaks(f"Delta history of {table}", str(lake.history(table)), secrets)
    assert {"inference_log/rides", "labels/rides", "registry/model_versions", "monitoring/rides/decisions"} <= set(tables), tables
    assert any(k.endswith(".html") for k in keys) and any("card" in k for k in keys), "no drift report or model card to scan"
    assert leaks == [], leaks


def test_the_webhook_was_really_called_with_its_secret_url(s3_loop_run: LoopRun):
    # the secret URL was in use (drift and retrain announced), so not finding it above means something
    assert {"drift", "retrain"} <= set(s3_loop_run.webhook_events), s3_loop_run.webhook_events
