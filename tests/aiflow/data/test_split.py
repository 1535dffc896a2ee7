"""Scope: the split policy made concrete (aiflow/data/split.py) — fixed and relative windows, spec validation, and a
relative split on the tiny spec (New York time zone, other columns) that moves with appended data: the training request
records the new windows, training reads them, the weights change, evaluation holds out the newest days, and the feature
state keeps its first fit."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.data.split import Windows, pinned_windows, split_windows
from aiflow.evaluation.validation import held_out_rows
from aiflow.models.bundle import MODEL_FILE
from aiflow.spec import EVENT_DATE, DatasetSpec, SpecError, Split, parse_spec
from aiflow.storage.artifacts import sha256_bytes
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from aiflow.train.contract import TrainParams
from aiflow.train.data import FeatureData
from aiflow.train.loop import train
from aiflow.train.request import pinned_request, request_windows
from tests.aiflow.tiny import TINY, csv_bytes, write_file

D = dt.date
RELATIVE = {"kind": "relative", "train_days": 20, "valid_days": 7, "test_days": 5}
FAST = TrainParams(epochs=2, batch_size=64, hidden=[8], embedding_dim=2, patience=1, baseline_max_rows=500)


# ------------------------------------------------------------------------------------------- windows
def test_relative_windows_count_back_from_the_newest_date_in_time_order():
    w = split_windows(Split(**RELATIVE), [D(2013, 2, 1), D(2013, 3, 31), D(2013, 1, 5)])
    assert w == Windows("relative", D(2013, 2, 28), D(2013, 3, 20), D(2013, 3, 27), D(2013, 3, 31))
    assert (w.valid_from - w.train_from).days == 20 and (w.test_from - w.valid_from).days == 7
    assert (w.test_until - w.test_from).days + 1 == 5


def test_relative_without_train_days_trains_on_all_history_and_moves_with_the_data():
    split = Split(kind="relative", valid_days=10, test_days=3)
    before, after = split_windows(split, [D(2013, 1, 31)]), split_windows(split, [D(2013, 3, 2)])
    assert before.train_from is None and before.valid_from == D(2013, 1, 19) and before.test_from == D(2013, 1, 29)
    assert after.valid_from - before.valid_from == dt.timedelta(days=30)
    frame = pl.DataFrame({EVENT_DATE: [D(2013, 1, 1), D(2013, 1, 18), D(2013, 1, 19), D(2013, 1, 28), D(2013, 1, 29), D(2013, 1, 31)]})
    assert frame.filter(before.train())[EVENT_DATE].to_list() == [D(2013, 1, 1), D(2013, 1, 18)]
    assert frame.filter(before.valid())[EVENT_DATE].to_list() == [D(2013, 1, 19), D(2013, 1, 28)]
    assert frame.filter(before.test())[EVENT_DATE].to_list() == [D(2013, 1, 29), D(2013, 1, 31)]


def test_fixed_windows_ignore_the_data_and_old_specs_still_load():
    old = parse_spec({**copy.deepcopy(TINY), "split": {"kind": "time", "valid_from": "2013-10-01", "test_from": "2013-11-15"}})
    w = split_windows(old.split, [D(2014, 6, 1)])
    assert (w.policy, w.train_from, w.valid_from, w.test_from, w.test_until) == ("fixed", None, D(2013, 10, 1), D(2013, 11, 15), None)
    bounded = split_windows(Split(train_from=D(2013, 9, 1), valid_from=D(2013, 10, 1), test_from=D(2013, 11, 15)), [])
    frame = pl.DataFrame({EVENT_DATE: [D(2013, 8, 31), D(2013, 9, 1)]})
    assert frame.filter(bounded.train())[EVENT_DATE].to_list() == [D(2013, 9, 1)]
    assert Split.model_validate(w.as_split().model_dump(mode="json")) == w.as_split()


def test_relative_split_over_no_data_is_refused():
    with pytest.raises(ValueError, match="newest event date.*no rows"):
        split_windows(Split(**RELATIVE), [])


@pytest.mark.parametrize(
    "split, message",
    [
        ({"kind": "relative", "valid_days": 7}, "split: a relative split needs test_days"),
        ({"kind": "relative", "valid_days": 7, "test_days": 7, "valid_from": "2013-01-01"}, "split: valid_from: dates belong to kind 'fixed'"),
        ({"kind": "fixed", "valid_from": "2013-01-01", "test_from": "2013-02-01", "test_days": 3}, "split: test_days: day counts belong to kind 'relative'"),
        ({"kind": "fixed", "valid_from": "2013-01-01"}, "split: a fixed split needs valid_from and test_from"),
        ({"kind": "relative", "valid_days": 0, "test_days": 7}, "split.valid_days: Input should be greater than or equal to 1"),
        ({"valid_from": "2013-01-01", "test_from": "2013-02-01", "train_from": "2013-01-01"}, "split: train_from must be before valid_from"),
    ],
)
def test_bad_split_names_the_field(split, message):
    with pytest.raises(SpecError) as err:
        parse_spec({**copy.deepcopy(TINY), "split": split}, "tiny.yaml")
    assert "tiny.yaml" in str(err.value) and message in str(err.value)


# ------------------------------------------------------------------------------ moving with the data
def _landing(root: Path, start: D, days: int, seed: int) -> None:
    """Tiny-spec landing files: one trips and one weather CSV per day (40 trips a day, a learnable signal)."""
    rng = np.random.default_rng(seed)
    for i in range(days):
        day = start + dt.timedelta(days=i)
        rows = []
        for j in range(40):
            trip = (day - D(2013, 1, 1)).days * 100 + j
            carrier, origin = rng.choice(["AA", "UA", "DL"]), rng.choice(["JFK", "EWR", "LGA"])
            distance = float(rng.uniform(100, 3000))
            delay = float(rng.normal(30 if carrier == "UA" else 0, 20) + distance / 300)
            ts = dt.datetime.combine(day, dt.time(int(rng.integers(0, 24)), int(rng.integers(0, 60))))
            rows.append(f"{trip},{carrier},{origin},{distance:.1f},{int(rng.integers(50, 300))},,,{delay:.1f},{ts.isoformat()}Z")
        write_file(root / "trips", f"{day}.csv", csv_bytes(rows))
        weather = [f"{o},{rng.normal(10, 5):.1f},{day}T{h:02d}:00:00Z" for o in ("JFK", "EWR", "LGA") for h in range(0, 24, 3)]
        write_file(root / "weather", f"{day}.csv", csv_bytes(weather, header="origin,temp,ts"))


def _data_plane(lake: Lake, landing: Path, spec: DatasetSpec) -> int:
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    for table in spec.tables:
        refresh_silver(lake, table)
    refresh_features(lake, spec)
    return lake.version(Tables.features(spec.name))


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """Two trainings on the tiny spec with a relative split: on 40 days, then after a month more was appended."""
    root = tmp_path_factory.mktemp("moving")
    spec = parse_spec({**copy.deepcopy(TINY), "split": RELATIVE}, "tiny relative")
    lake, landing = Lake(root / "lake"), root / "landing"
    _landing(landing, D(2013, 1, 1), 40, seed=1)
    v1 = _data_plane(lake, landing, spec)
    state_v1 = lake.version(Tables.feature_state(spec.name))
    first = pinned_request(lake, spec, FAST, str(root / "artifacts"), "first", "test")
    r1 = train(first, log=lambda _: None)
    _landing(landing, D(2013, 2, 10), 30, seed=2)
    v2 = _data_plane(lake, landing, spec)
    second = pinned_request(lake, spec, FAST, str(root / "artifacts"), "second", "test")
    r2 = train(second, log=lambda _: None)
    return dict(spec=spec, lake=lake, v1=v1, v2=v2, state_v1=state_v1, first=first, second=second, r1=r1, r2=r2)


def test_request_records_the_concrete_windows_and_they_move_with_appended_data(moved):
    w1, w2 = request_windows(moved["first"]), request_windows(moved["second"])
    # 40 days to 9 February, then 30 more to 11 March: every window moves by those 30 days
    assert (w1.train_from, w1.valid_from, w1.test_from) == (D(2013, 1, 9), D(2013, 1, 29), D(2013, 2, 5))
    assert (w2.train_from, w2.valid_from, w2.test_from) == (D(2013, 2, 8), D(2013, 2, 28), D(2013, 3, 7))
    assert moved["first"].spec["split"]["kind"] == "fixed" and moved["second"].spec["split"]["valid_from"] == "2013-02-28"
    spec_json = json.loads(Path(moved["r2"].artifact_uri, "spec.json").read_text())
    assert spec_json["split"]["train_from"] == "2013-02-08"


def test_retraining_after_an_append_trains_on_the_new_window_and_the_weights_differ(moved):
    r1, r2 = moved["r1"], moved["r2"]
    assert r2.data_version > r1.data_version
    data = FeatureData(moved["second"], parse_spec(moved["second"].spec))  # as the entrypoint reads it
    assert data.windows == request_windows(moved["second"])
    assert data.rows_train == FeatureData(moved["second"], moved["spec"]).rows_train  # the policy itself gives the same rows
    train_dates = {b for b in pl.scan_delta(moved["second"].features_uri, version=r2.data_version).filter(data.windows.train())
                   .select(EVENT_DATE).unique().collect().to_series()}  # fmt: skip
    assert min(train_dates) == D(2013, 2, 8) and max(train_dates) == D(2013, 2, 27)
    assert r1.rows_train == r2.rows_train == 20 * 40 and r1.rows_valid == r2.rows_valid == 7 * 40
    # the model file of the winning family (network weights or the scikit-learn model), not the manifest's lineage
    w1 = Path(r1.artifact_uri, MODEL_FILE[r1.family]).read_bytes()
    w2 = Path(r2.artifact_uri, MODEL_FILE[r2.family]).read_bytes()
    assert sha256_bytes(w1) != sha256_bytes(w2)


def test_evaluation_holds_out_the_newest_days_of_the_pinned_version(moved):
    spec, lake = moved["spec"], moved["lake"]
    uri = lake.uri(Tables.features(spec.name))
    old = held_out_rows(uri, moved["v1"], spec)
    new = held_out_rows(uri, moved["v2"], spec)
    assert old[EVENT_DATE].min() == D(2013, 2, 5) and old[EVENT_DATE].max() == D(2013, 2, 9) and old.height == 5 * 40
    assert new[EVENT_DATE].min() == D(2013, 3, 7) and new[EVENT_DATE].max() == D(2013, 3, 11) and new.height == 5 * 40
    assert pinned_windows(uri, moved["v1"], spec.split).test_from == request_windows(moved["first"]).test_from


def test_feature_state_keeps_its_first_fit_on_the_training_window(moved):
    spec, lake = moved["spec"], moved["lake"]
    state = Tables.feature_state(spec.name)
    assert lake.version(state) == moved["state_v1"]
    fit = json.loads(lake.last_metadata(state, "fit_window"))
    assert fit == {"policy": "relative", "train_from": "2013-01-09", "valid_from": "2013-01-29", "test_from": "2013-02-05", "test_until": "2013-02-09"}
    assert moved["second"].state_version == moved["first"].state_version
