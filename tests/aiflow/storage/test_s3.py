"""The engine end to end against a real S3 server (SeaweedFS): landing zone, ingestion, silver, features, concurrent commits."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from aiflow.data.demo import write_landing
from aiflow.data.ingest import DUPLICATE, INGESTED, REJECTED, ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.spec import EVENT_DATE, DatasetSpec
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import REJECTED_DIR, LocalLandingZone, S3LandingZone

pytestmark = pytest.mark.s3

DAYS = 3
START = dt.date(2013, 1, 1)
#: Columns that differ between two runs of the same data (ids and clocks), left out of content comparisons.
RUN_COLUMNS = ["_batch_id", "_ingested_at"]


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def landing_files(tmp_path_factory) -> Path:
    """Three days of demo flights and their weather, written once locally: ``<root>/<table>/<file>``."""
    root = tmp_path_factory.mktemp("s3_landing")
    write_landing(root, days=DAYS, start=START)
    return root


def upload(client, local_dir: Path, uri: str) -> list[str]:
    """Upload every file of ``local_dir`` under the s3:// prefix ``uri``; return the names uploaded."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    names = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
    for name in names:
        client.upload_file(str(local_dir / name), bucket, f"{prefix}/{name}")
    return names


def zones(client, prefix: str, spec: DatasetSpec) -> dict[str, S3LandingZone]:
    return {t.name: S3LandingZone(client, f"{prefix}/landing/{t.name}") for t in spec.tables}


def run_pipeline(lake: Lake, landing: dict, spec: DatasetSpec) -> dict:
    """Ingest every table, refresh silver for each, then features; return the reports."""
    ingested = {t.name: ingest(lake, landing[t.name], t) for t in spec.tables}
    silver = {t.name: refresh_silver(lake, t) for t in spec.tables}
    features = refresh_features(lake, spec)
    return {"ingest": ingested, "silver": silver, "features": features}


def count(lake: Lake, table: str) -> int:
    return lake.scan(table).select(pl.len()).collect().item()


def content(lake: Lake, table: str, key: list[str]) -> pl.DataFrame:
    frame = lake.scan(table).collect()
    return frame.drop([c for c in RUN_COLUMNS if c in frame.columns]).sort(key)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, landing_files: Path, spec: DatasetSpec) -> Lake:
    """The same files through the same engine on a local lake: the reference the S3 run must match."""
    lake = Lake(tmp_path_factory.mktemp("s3_reference") / "lake")
    run_pipeline(lake, {t.name: LocalLandingZone(landing_files / t.name) for t in spec.tables}, spec)
    return lake


@pytest.fixture
def s3_pipeline(s3_server, s3_prefix: str, landing_files: Path, spec: DatasetSpec):
    """Demo files uploaded under this test's prefix and a lake beside them; nothing run yet."""
    client = s3_server.client()
    for table in spec.tables:
        upload(client, landing_files / table.name, f"{s3_prefix}/landing/{table.name}")
    lake = Lake(f"{s3_prefix}/lake", s3_server.storage_options)
    return lake, zones(client, s3_prefix, spec), client


# -------------------------------------------------------------------------------------------- tests
def test_lake_root_on_s3_is_kept_as_uri(s3_server, s3_prefix):
    lake = Lake(f"{s3_prefix}/lake/", s3_server.storage_options)
    assert lake.root == f"{s3_prefix}/lake"
    assert lake.uri(Tables.bronze("flights")) == f"{s3_prefix}/lake/bronze/flights"
    assert not lake.exists(Tables.bronze("flights"))
    assert lake.version(Tables.bronze("flights")) is None
    assert not Path(s3_prefix).exists() and not Path("s3:").exists()  # no stray local folder


def test_landing_zone_lists_uploaded_files(s3_pipeline, landing_files, spec):
    _, landing, _ = s3_pipeline
    flights = landing["flights"].list()
    assert [f.name for f in flights] == sorted(p.name for p in (landing_files / "flights").iterdir())
    local = {p.name: p for p in (landing_files / "flights").iterdir()}
    for file in flights:
        assert file.uri == f"{landing['flights'].uri}/{file.name}"
        assert file.size == local[file.name].stat().st_size
        assert file.modified.tzinfo is not None
        assert landing["flights"].read_bytes(file.name) == local[file.name].read_bytes()


def test_landing_zone_lists_past_one_page(s3_server, s3_prefix):
    """ListObjectsV2 returns at most 1,000 keys a page: the zone must follow continuation tokens."""
    client = s3_server.client()
    zone = S3LandingZone(client, f"{s3_prefix}/many")
    names = [f"d{i // 100:02d}/f{i:04d}.csv" for i in range(1_001)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: client.put_object(Bucket=s3_server.bucket, Key=f"{zone.prefix}{n}", Body=b"a\n1\n"), names))
    client.put_object(Bucket=s3_server.bucket, Key=f"{zone.prefix}{REJECTED_DIR}/b1/x.csv", Body=b"a\n")
    client.put_object(Bucket=s3_server.bucket, Key=f"{zone.prefix}.hidden.csv", Body=b"a\n")
    assert [f.name for f in zone.list()] == sorted(names)


def test_pipeline_on_s3_matches_local_run(s3_pipeline, local_run, landing_files, spec):
    lake, landing, _ = s3_pipeline
    reports = run_pipeline(lake, landing, spec)

    for table in spec.tables:
        raw_rows = sum(pl.read_csv(p, infer_schema=False).height for p in (landing_files / table.name).iterdir())
        report = reports["ingest"][table.name]
        assert report.count(INGESTED) == len(list((landing_files / table.name).iterdir()))
        assert report.rows_ingested + report.rows_quarantined == raw_rows
        assert count(lake, Tables.bronze(table.name)) == report.rows_ingested
        for stage in (Tables.bronze, Tables.silver, Tables.ledger):
            assert count(lake, stage(table.name)) == count(local_run, stage(table.name)), stage(table.name)
        silver = Tables.silver(table.name)
        assert content(lake, silver, table.key).equals(content(local_run, silver, table.key))
        assert reports["silver"][table.name].rows_out == count(lake, silver) > 0

    features = Tables.features(spec.name)
    assert count(lake, features) == count(local_run, features) == reports["features"].rows_out > 0
    assert content(lake, features, spec.key).equals(content(local_run, features, spec.key))
    dates = lake.scan(features).select(pl.col(EVENT_DATE).unique().sort()).collect().to_series().to_list()
    assert dates[:DAYS] == [START + dt.timedelta(days=i) for i in range(DAYS)]  # + the UTC day after the last evening
    assert lake.exists(Tables.feature_state(spec.name))


def test_reingest_is_idempotent(s3_pipeline, spec):
    lake, landing, client = s3_pipeline
    run_pipeline(lake, landing, spec)
    bronze = {t.name: (count(lake, Tables.bronze(t.name)), lake.version(Tables.bronze(t.name))) for t in spec.tables}
    ledger_rows = {t.name: count(lake, Tables.ledger(t.name)) for t in spec.tables}
    silver_version = lake.version(Tables.silver(spec.name))

    for table in spec.tables:
        zone, names = landing[table.name], [f.name for f in landing[table.name].list()]
        # unchanged files (same name, size and S3 LastModified) are not even read again
        again = ingest(lake, zone, table)
        assert again.files == [] and again.rows_ingested == 0
        assert count(lake, Tables.ledger(table.name)) == ledger_rows[table.name]
        # asked for by name, the content hash decides: every file is a duplicate
        forced = ingest(lake, zone, table, files=names)
        assert forced.count(DUPLICATE) == len(names) > 0
        assert forced.rows_ingested == 0 and forced.bronze_version is None
        ledger = lake.scan(Tables.ledger(table.name)).filter(pl.col("batch_id").str.starts_with(forced.batch_id)).collect()
        assert ledger["outcome"].to_list() == [DUPLICATE] * len(names)
        assert sorted(ledger["duplicate_of"]) == sorted(names)
        assert (count(lake, Tables.bronze(table.name)), lake.version(Tables.bronze(table.name))) == bronze[table.name]

    # the same content dropped again under another name
    zone = landing[spec.name]
    first = zone.list()[0].name
    client.copy_object(Bucket=zone.bucket, Key=f"{zone.prefix}again/{first}", CopySource={"Bucket": zone.bucket, "Key": zone.prefix + first})
    redropped = ingest(lake, zone, spec)
    assert [(f.file, f.outcome, f.duplicate_of) for f in redropped.files] == [(f"again/{first}", DUPLICATE, first)]
    assert (count(lake, Tables.bronze(spec.name)), lake.version(Tables.bronze(spec.name))) == bronze[spec.name]

    assert refresh_silver(lake, spec).skipped
    assert lake.version(Tables.silver(spec.name)) == silver_version


def test_rejected_file_is_copied_to_rejected_area_in_s3(s3_pipeline, spec):
    lake, landing, client = s3_pipeline
    zone = landing["flights"]
    bad = b"carrier,flight\nUA,1\n"  # lacks required columns
    client.put_object(Bucket=zone.bucket, Key=f"{zone.prefix}broken.csv", Body=bad)

    report = ingest(lake, zone, spec)
    rejected = [f for f in report.files if f.outcome == REJECTED]
    assert [f.file for f in rejected] == ["broken.csv"]
    assert report.count(INGESTED) == len(zone.list()) - 1
    where = rejected[0].rejected_to
    assert where.startswith(f"{zone.uri}/{REJECTED_DIR}/{report.batch_id}") and where.endswith("/broken.csv")
    key = where.removeprefix(f"s3://{zone.bucket}/")
    assert client.get_object(Bucket=zone.bucket, Key=key)["Body"].read() == bad
    reason = client.get_object(Bucket=zone.bucket, Key=key + ".reason.txt")["Body"].read().decode()
    assert reason.strip() == rejected[0].error and "missing required column" in reason
    listed = {f.name for f in zone.list()}
    assert "broken.csv" in listed  # the original stays where it landed; the copies are not listed
    assert not any(name.startswith(REJECTED_DIR) for name in listed)

    ledger = lake.scan(Tables.ledger(spec.name)).filter(pl.col("file") == "broken.csv").collect()
    assert ledger["outcome"].to_list() == [REJECTED] and ledger["rejected_to"].to_list() == [where]
    assert ingest(lake, zone, spec).files == []  # unchanged, it is not looked at again
    again = ingest(lake, zone, spec, files=["broken.csv"])  # named again, it is parsed again (spec may be fixed)
    assert [(f.file, f.outcome) for f in again.files] == [("broken.csv", REJECTED)]


def _frame(writer: str, dates: list[dt.date], rows_per_date: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "writer": [writer] * (len(dates) * rows_per_date),
            "i": [i for _ in dates for i in range(rows_per_date)],
            EVENT_DATE: [d for d in dates for _ in range(rows_per_date)],
        }
    )


def _race(*calls) -> list:
    """Run the calls in threads released together; return results (or the exceptions raised)."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _writers(lake: Lake, table: str, after: int) -> dict[str, int]:
    """writer tag → version of each commit after version ``after`` (from the commit metadata)."""
    return {writer: version for version, writer in lake.commit_metadata(table, "writer") if version > after}


@pytest.mark.parametrize("operation", ["replace_dates", "overwrite"])
def test_concurrent_writes_to_one_table_commit_or_retry(s3_server, s3_prefix, operation):
    lake = Lake(f"{s3_prefix}/lake", s3_server.storage_options)
    table = Tables.silver("race")
    dates = [dt.date(2013, 1, 1), dt.date(2013, 1, 2)]
    untouched = dt.date(2013, 1, 3)
    lake.replace_dates(table, _frame("seed", [*dates, untouched], 50), [*dates, untouched])
    frames = {w: _frame(w, dates, 100 + 10 * n) for n, w in enumerate("AB")}

    for round_ in range(4):
        start = lake.version(table)
        tag = {w: f"{w}{round_}" for w in frames}
        if operation == "replace_dates":
            calls = [lambda w=w, f=f, tag=tag: lake.replace_dates(table, f, dates, metadata={"writer": tag[w]}) for w, f in frames.items()]
        else:
            calls = [lambda w=w, f=f, tag=tag: lake.overwrite(table, f, metadata={"writer": tag[w]}) for w, f in frames.items()]
        results = _race(*calls)
        assert not [r for r in results if isinstance(r, BaseException)], results

        # both committed (one of them possibly after a retry), each exactly once, one after the other
        committed = _writers(lake, table, start)
        assert sorted(committed) == sorted(tag.values()), f"round {round_}: {committed}"
        assert sorted(committed.values()) == [start + 1, start + 2]
        assert lake.version(table) == start + 2

        # the table holds exactly the rows of the write committed last: no mix, nothing lost
        last = max(committed, key=committed.get)[0]
        final = lake.scan(table).collect()
        replaced = final.filter(pl.col(EVENT_DATE).is_in(dates))
        assert replaced["writer"].unique().to_list() == [last]
        assert replaced.sort(EVENT_DATE, "i").equals(frames[last].select(final.columns).sort(EVENT_DATE, "i"))
        kept = final.filter(pl.col(EVENT_DATE) == untouched)
        assert kept.height == (50 if operation == "replace_dates" else 0)


def test_concurrent_appends_all_land(s3_server, s3_prefix):
    """Appends never conflict; with the server's conditional put, no writer overwrites another's commit."""
    lake = Lake(f"{s3_prefix}/lake", s3_server.storage_options)
    table = Tables.bronze("appends")
    lake.append(table, _frame("seed", [START], 1), partition_by=[EVENT_DATE])
    writers = [f"w{i}" for i in range(6)]
    results = _race(*[lambda w=w: lake.append(table, _frame(w, [START], 25), metadata={"writer": w}) for w in writers])
    assert not [r for r in results if isinstance(r, BaseException)], results
    committed = _writers(lake, table, 0)
    assert sorted(committed) == writers and sorted(committed.values()) == list(range(1, len(writers) + 1))
    counts = lake.scan(table).group_by("writer").len().collect()
    assert dict(zip(counts["writer"], counts["len"], strict=True)) == {"seed": 1, **dict.fromkeys(writers, 25)}


def test_s3_server_binds_loopback_only(s3_server):
    psutil = pytest.importorskip("psutil")
    listening = [c.laddr for c in psutil.Process(s3_server.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and {a.ip for a in listening} == {"127.0.0.1"}
    assert s3_server.ports["s3.port"] in {a.port for a in listening}
