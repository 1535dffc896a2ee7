"""Scope: data versions of the data-plane assets on a real instance: a no-op run (or maintenance) leaves downstream fresh, new data makes it stale."""

from __future__ import annotations

import shutil

from dagster import DagsterInstance, MaterializeResult, asset, materialize
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from aiflow.spec import demo_spec_path, load_spec
from aiflow.storage.lake import Lake, Tables
from assets.keys import bronze_key, candidate_key, features_key, op_name, silver_key
from tests.dagster_helpers import DATA_PLANE, local_defs, local_home

SPEC = load_spec(demo_spec_path())
CANDIDATE, FEATURES = candidate_key(SPEC), features_key(SPEC)
DATA_KEYS = [*(bronze_key(SPEC, t) for t in SPEC.tables), *(silver_key(SPEC, t) for t in SPEC.tables), FEATURES]


@asset(key=CANDIDATE, deps=[FEATURES])
def stand_in_candidate() -> MaterializeResult:
    """Stands in for the trained candidate: same key and dependency, no training (what is judged is its upstream)."""
    return MaterializeResult()


def _resolver(defs, instance) -> CachingStaleStatusResolver:
    """What the UI asks (a fresh one per question: it caches)."""
    return CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))


def _status(defs, instance, key):
    resolver = _resolver(defs, instance)
    return resolver.get_status(key), [(c.asset_key.to_user_string(), c.reason) for c in resolver.get_stale_root_causes(key)]


def _versions(defs, instance) -> dict:
    resolver = _resolver(defs, instance)
    return {key: resolver.get_current_data_version(key) for key in DATA_KEYS}


def test_no_op_runs_leave_downstream_fresh_and_new_data_makes_it_stale(tmp_path, demo_landing):
    home = local_home(tmp_path, demo_landing)
    held_back = home / "held" / "2013-01-05.csv"
    held_back.parent.mkdir()
    shutil.move(home / "landing" / "flights" / "2013-01-05.csv", held_back)
    defs = local_defs(home)
    instance = DagsterInstance.ephemeral()

    def data_plane(run_config=None):
        result = materialize(
            [*defs.assets, *defs.asset_checks], resources=defs.resources, instance=instance, selection=DATA_PLANE, run_config=run_config
        )
        assert result.success
        return result

    data_plane()
    assert materialize([stand_in_candidate], instance=instance).success
    assert _status(defs, instance, CANDIDATE) == (StaleStatus.FRESH, [])
    before = _versions(defs, instance)
    assert before[FEATURES].value.startswith("v")

    # nothing new in the landing zone: every asset materializes again, but no data version moves
    again = data_plane()
    assert _status(defs, instance, CANDIDATE) == (StaleStatus.FRESH, [])
    assert _versions(defs, instance) == before
    bronze = again.asset_materializations_for_node(op_name(bronze_key(SPEC, SPEC.tables[0])))[0].metadata
    assert bronze["run_files_ingested"].value == 0 and bronze["run_changed_table"].value is False
    assert bronze["dagster/row_count"].value > 0  # the table's total, not this run's zero

    # the sensor's way: every file named again, all duplicates (recorded in the ledger, bronze untouched)
    flights = sorted(p.name for p in (home / "landing" / "flights").glob("*.csv"))
    duplicates = data_plane({"ops": {op_name(bronze_key(SPEC, SPEC.tables[0])): {"config": {"files": flights}}}})
    bronze = duplicates.asset_materializations_for_node(op_name(bronze_key(SPEC, SPEC.tables[0])))[0].metadata
    assert bronze["run_files_duplicate"].value == len(flights)
    assert _versions(defs, instance) == before
    assert _status(defs, instance, CANDIDATE) == (StaleStatus.FRESH, [])

    # maintenance rewrites files, not rows: still the same data versions after the next run
    job = defs.resolve_job_def(f"{SPEC.name}_maintenance_job")
    # (default retention: a vacuum at 0 h removes the ledger version silver's watermark reads next time)
    ledger, ledger_version = Tables.ledger(SPEC.name), Lake(home / "lake").version(Tables.ledger(SPEC.name))
    assert job.execute_in_process(instance=instance).success
    assert Lake(home / "lake").version(ledger) > ledger_version  # the ledger's two appends were compacted
    data_plane()
    assert _versions(defs, instance) == before
    assert _status(defs, instance, CANDIDATE) == (StaleStatus.FRESH, [])

    # a new day lands: bronze, silver and features move, and the candidate is stale because of features
    shutil.move(held_back, home / "landing" / "flights" / "2013-01-05.csv")
    data_plane()
    after = _versions(defs, instance)
    assert after[FEATURES] != before[FEATURES]
    assert after[bronze_key(SPEC, SPEC.tables[0])] != before[bronze_key(SPEC, SPEC.tables[0])]
    assert after[bronze_key(SPEC, SPEC.tables[-1])] == before[bronze_key(SPEC, SPEC.tables[-1])]  # weather: nothing new
    status, causes = _status(defs, instance, CANDIDATE)
    assert status == StaleStatus.STALE
    assert causes == [("flights/features", "has a new data version")], causes
