"""The one encoder: the same rows give identical model inputs through every path (features table → training
batches, LoadedModel inputs for evaluation and batch scoring, raw records → arrays by the Polars path and by the
compiled fast path, one record at a time too), demo and tiny specs; the fast path against the Polars path on
1,000 seeded random records per spec shape; the same errors for values that do not parse."""

from __future__ import annotations

import copy
import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
import yaml

from aiflow.data.demo import write_landing
from aiflow.data.encoding import FAST_PATH_MAX_RECORDS, Encoder, FeatureState, model_inputs, polars_raw_to_arrays, raw_to_arrays, to_arrays
from aiflow.data.ingest import ingest
from aiflow.data.refine import refresh_features, refresh_silver
from aiflow.models.bundle import LoadedModel, load_bundle, save_bundle
from aiflow.models.network import ModelConfig, TabularModel
from aiflow.serving.batch import SCORE, score_new_partitions
from aiflow.spec import EVENT_DATE, DatasetSpec, demo_spec_path, parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.storage.landing import LocalLandingZone
from aiflow.train.contract import TrainParams
from aiflow.train.data import FeatureData
from aiflow.train.request import pinned_request
from tests.aiflow.tiny import TINY

# indexes of the special rows (one per rule); TAMPERED is added to the features table after the features stage
NORMAL, UNSEEN, NULL_CAT, NULL_NUM, NAN_INF, NO_SIDE, CLIPPED, TAMPERED = range(8)
OUT_OF_RANGE = 10_000  # a code beyond every cardinality (a vocabulary newer than the model)


@dataclass
class Case:
    """A lake whose validation split is exactly the special rows, and those rows as raw records."""

    name: str
    spec: DatasetSpec
    lake: Lake
    root: Path
    id_column: str  # distinct per special row; the frame and the records are compared in its order
    records: list[dict]  # raw records as serving receives them, ordered by id_column
    day: dt.date
    nan_inf: dict[str, float]  # side column (features name) → the NaN/inf value it received
    null_numeric: str  # feature column that is null in the NULL_NUM row
    null_categorical: str  # categorical spec column that is null in the NULL_CAT row
    tampered: dict[str, int]  # cat_ columns given an out-of-range code in the TAMPERED row


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    pl.DataFrame([{c: r.get(c) for c in columns} for r in rows], schema=dict.fromkeys(columns, pl.String)).write_csv(path, null_value="NA")


def run_data_plane(lake: Lake, landing: Path, spec: DatasetSpec) -> None:
    for table in spec.tables:
        ingest(lake, LocalLandingZone(landing / table.name), table)
    for table in spec.tables:
        refresh_silver(lake, table)
    refresh_features(lake, spec)


def tamper(lake: Lake, spec: DatasetSpec, id_column: str, source_id: int, new_id: int, codes: dict[str, int]) -> None:
    """Append a copy of one features row with out-of-range codes (as if encoded with a larger vocabulary)."""
    features = Tables.features(spec.name)
    row = lake.scan(features).filter(pl.col(id_column) == source_id).collect()
    assert row.height == 1
    row = row.with_columns(pl.lit(new_id, row.schema[id_column]).alias(id_column), *(pl.lit(v, pl.Int32).alias(c) for c, v in codes.items()))
    lake.append(features, row.select(lake.scan(features).collect_schema().names()))


def side_values(weather: dict | None, columns: list[str], table: str = "weather") -> dict:
    """What the as-of join brings for a record: the side row's values, or nothing when there is no side row."""
    if weather is None:
        return {}
    return {f"{table}_{c}": (None if weather.get(c) is None else float(weather[c])) for c in columns}


# -------------------------------------------------------------------------------------- the demo
def demo_case(root: Path) -> Case:
    data = yaml.safe_load(demo_spec_path().read_text())
    day = dt.date(2013, 1, 12)  # after the ten demo days (UTC dates up to 11 January): validation is the special rows
    data["split"] = {"kind": "time", "valid_from": day.isoformat(), "test_from": (day + dt.timedelta(days=1)).isoformat()}
    spec = parse_spec(data, "flights (encoding test)")
    landing = root / "landing"
    write_landing(landing, days=10, start=dt.date(2013, 1, 1))
    side_cols = spec.joins[0].columns

    def flight(k: int, **over) -> dict:
        hour = 12 + k  # UTC; each special row its own hour
        row = {
            "year": "2013", "month": "1", "day": "12", "dep_time": None, "sched_dep_time": f"{hour - 5:02d}00", "dep_delay": None,
            "arr_time": None, "sched_arr_time": f"{hour - 2:02d}30", "arr_delay": str(10 * k), "carrier": "UA", "flight": str(9000 + k),
            "tailnum": "N14228", "origin": "EWR", "dest": "ORD", "air_time": None, "distance": str(700 + 11 * k),
            "hour": str(hour - 5), "minute": "0", "time_hour": f"2013-01-12T{hour:02d}:00:00Z",
        }  # fmt: skip
        return row | over

    def weather(k: int, origin: str, **over) -> dict:
        hour = 12 + k
        values = {"temp": "40.1", "dewp": "20.5", "humid": "45.2", "wind_speed": "10.3", "wind_gust": None, "precip": "0",
                  "pressure": "1012.3", "visib": "10"}  # fmt: skip
        return {"origin": origin, "year": "2013", "month": "1", "day": "12", "hour": str(hour - 1),
                "time_hour": f"2013-01-12T{hour - 1:02d}:30:00Z"} | values | over  # fmt: skip

    flights = [
        flight(NORMAL),
        flight(UNSEEN, carrier="ZZ", dest="XYZ", tailnum="N0NEW"),
        flight(NULL_CAT, tailnum=None),
        flight(NULL_NUM, sched_arr_time=None),
        flight(NAN_INF, origin="JFK"),
        flight(NO_SIDE, origin="LGA"),  # no LGA weather that day: every side value is null
        flight(CLIPPED, distance="6000"),  # clipped to 5000 by the spec, before scaling
    ]
    weathers = {
        NORMAL: weather(NORMAL, "EWR"), UNSEEN: weather(UNSEEN, "EWR"), NULL_CAT: weather(NULL_CAT, "EWR"),
        NULL_NUM: weather(NULL_NUM, "EWR", humid=None), NAN_INF: weather(NAN_INF, "JFK", temp="NaN", dewp="inf", pressure="-inf"),
        CLIPPED: weather(CLIPPED, "EWR"),
    }  # fmt: skip
    write_csv(landing / "flights" / "special.csv", flights)
    write_csv(landing / "weather" / "special.csv", list(weathers.values()))
    lake = Lake(root / "lake")
    run_data_plane(lake, landing, spec)
    tampered = {"cat_carrier": OUT_OF_RANGE, "cat_dest": -5}
    tamper(lake, spec, "flight", 9000 + NORMAL, 9000 + TAMPERED, tampered)

    records = [f | side_values(weathers.get(k), side_cols) for k, f in enumerate(flights)]
    # the tampered row's raw equivalent: categories the model's vocabulary does not know
    records.append(records[NORMAL] | {"flight": str(9000 + TAMPERED), "carrier": "NEWCO", "dest": "NEW"})
    return Case("demo", spec, lake, root, "flight", records, day,
                {"num_weather_temp": math.nan, "num_weather_dewp": math.inf, "num_weather_pressure": -math.inf},
                "num_sched_arr_time", "tailnum", tampered)  # fmt: skip


# -------------------------------------------------------------------------------------- the tiny spec
def tiny_case(root: Path) -> Case:
    data = copy.deepcopy(TINY)
    data["timezone"] = "Asia/Kolkata"  # another zone, half an hour off UTC
    day = dt.date(2013, 1, 6)
    data["split"] = {"valid_from": day.isoformat(), "test_from": (day + dt.timedelta(days=1)).isoformat()}
    spec = parse_spec(data, "tiny (encoding test)")
    landing = root / "landing"
    rng = np.random.default_rng(7)
    origins, carriers = ["JFK", "EWR", "LGA"], ["AA", "UA", "DL", "B6"]
    start = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
    history = [
        {"trip_id": str(i + 1), "carrier": carriers[i % 4 if i % 7 else 0], "origin": origins[i % 3],
         "distance": f"{rng.uniform(50, 3000):.1f}", "seats": str(int(rng.integers(50, 300))), "refundable": "yes",
         "booked": "2012-12-01", "delay": f"{rng.normal(10, 20):.1f}",
         "ts": (start + dt.timedelta(minutes=30 * i)).isoformat().replace("+00:00", "Z")}
        for i in range(200)
    ]  # fmt: skip
    side_history = [
        {"origin": o, "temp": f"{rng.normal(5, 8):.1f}", "ts": (start + dt.timedelta(hours=h)).isoformat().replace("+00:00", "Z")}
        for h in range(24 * 5) for o in origins
    ]  # fmt: skip

    def trip(k: int, **over) -> dict:
        ts = dt.datetime(2013, 1, 6, 3 + 2 * k, 15, tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")
        return {"trip_id": str(9000 + k), "carrier": "AA", "origin": "JFK", "distance": str(400 + 13 * k), "seats": "150",
                "refundable": "no", "booked": None, "delay": "3", "ts": ts} | over  # fmt: skip

    def weather(k: int, origin: str, temp: str | None) -> dict:
        return {"origin": origin, "temp": temp, "ts": dt.datetime(2013, 1, 6, 2 + 2 * k, 50, tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")}

    trips = [
        trip(NORMAL),
        trip(UNSEEN, carrier="ZZ", origin="SFO"),  # SFO: unseen, and no weather there either
        trip(NULL_CAT, origin=None),  # a null origin also joins no weather
        trip(NULL_NUM, seats=None),
        trip(NAN_INF, origin="EWR"),
        trip(NO_SIDE, origin="LGA"),
        trip(CLIPPED, distance="7000"),
    ]
    weathers = {NORMAL: weather(NORMAL, "JFK", "4.5"), NULL_NUM: weather(NULL_NUM, "JFK", "2.0"),
                NAN_INF: weather(NAN_INF, "EWR", "inf"), CLIPPED: weather(CLIPPED, "JFK", "-1.5")}  # fmt: skip
    write_csv(landing / "trips" / "history.csv", history)
    write_csv(landing / "trips" / "special.csv", trips)
    write_csv(landing / "weather" / "history.csv", side_history)
    write_csv(landing / "weather" / "special.csv", list(weathers.values()))
    lake = Lake(root / "lake")
    run_data_plane(lake, landing, spec)
    tampered = {"cat_carrier": OUT_OF_RANGE, "cat_origin": -1}
    tamper(lake, spec, "trip_id", 9000 + NORMAL, 9000 + TAMPERED, tampered)

    records = [t | side_values(weathers.get(k), ["temp"]) for k, t in enumerate(trips)]
    records.append(records[NORMAL] | {"trip_id": str(9000 + TAMPERED), "carrier": "NEWCO", "origin": "NEW"})
    # serving sends typed JSON values as well as text: give one record real numbers
    records[NORMAL] = records[NORMAL] | {"trip_id": 9000 + NORMAL, "distance": 400, "seats": 150}
    records[UNSEEN] = records[UNSEEN] | {"trip_id": 9000 + UNSEEN}
    return Case("tiny", spec, lake, root, "trip_id", records, day, {"num_weather_temp": math.inf}, "num_seats", "origin", tampered)


@pytest.fixture(scope="module", params=["demo", "tiny"])
def case(request, tmp_path_factory) -> Case:
    root = tmp_path_factory.mktemp(f"encoding_{request.param}")
    return demo_case(root) if request.param == "demo" else tiny_case(root)


@dataclass
class Paths:
    """Model inputs of the special rows through every path, plus what they were built from."""

    frame: pl.DataFrame  # the features table's validation rows, ordered by id
    state: FeatureState
    model: LoadedModel
    training: tuple[np.ndarray, np.ndarray]  # FeatureData's validation stream (file order)
    predict: tuple[np.ndarray, np.ndarray]  # LoadedModel.inputs (what predict() scores: evaluation, batch scoring)
    raw: tuple[np.ndarray, np.ndarray]  # raw_to_arrays on the raw records
    bundle_raw: tuple[np.ndarray, np.ndarray]  # LoadedModel.raw_inputs (online serving)
    polars: tuple[np.ndarray, np.ndarray]  # the Polars path of raw_to_arrays
    fast: tuple[np.ndarray, np.ndarray]  # the compiled fast path (asserted to have taken the batch)
    fast_one_by_one: tuple[np.ndarray, np.ndarray]  # the fast path, one record per call (single-record serving)


@pytest.fixture(scope="module")
def paths(case: Case) -> Paths:
    spec, lake = case.spec, case.lake
    request = pinned_request(lake, spec, TrainParams(), str(case.root / "artifacts"), "enc", "test")
    data = FeatureData(request, spec)
    assert data.rows_valid == len(case.records)
    pieces = list(data.batches("valid", 3))  # several batches: the stream, not one call
    training = (np.concatenate([p.cat for p in pieces]), np.concatenate([p.num for p in pieces]))

    torch.manual_seed(0)
    inputs = data.inputs
    config = ModelConfig(spec.problem_type, inputs.categorical, inputs.cardinalities, inputs.numeric, hidden=[8],
                         embedding_dim=3, dropout=0.0, target=inputs.target)  # fmt: skip
    store = ArtifactStore(case.root / "artifacts")
    uri, sha = save_bundle(store, "enc/bundle", model=TabularModel(config), config=config, params={}, state=data.state,
                           spec=spec, spec_dict=spec.model_dump(mode="json"), lineage={})  # fmt: skip
    model = load_bundle(store, uri, sha)

    frame = lake.scan(Tables.features(spec.name)).filter(pl.col(EVENT_DATE) == case.day).collect().sort(pl.col(case.id_column).cast(pl.Int64))
    fast = model.encoder.fast_arrays(case.records)
    singles = [model.encoder.fast_arrays([r]) for r in case.records]
    assert fast is not None and all(s is not None for s in singles), "the fast path must take these records itself"
    one_by_one = (np.concatenate([s[0] for s in singles]), np.concatenate([s[1] for s in singles]))
    polars = polars_raw_to_arrays(case.records, data.state, spec, model.model_inputs)
    return Paths(frame, data.state, model, training, model.inputs(frame), raw_to_arrays(case.records, data.state, spec),
                 model.raw_inputs(case.records), polars, fast, one_by_one)  # fmt: skip


def canonical(cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    """Rows as one matrix in lexicographic order (the training stream reads files in its own order)."""
    matrix = np.hstack([cat.astype(np.float64), num.astype(np.float64)])
    return matrix[np.lexsort(matrix.T[::-1])]


# ------------------------------------------------------------------------------------------- tests
def test_every_path_gives_identical_model_inputs(case, paths):
    cat, num = paths.predict
    assert cat.dtype == np.int64 and num.dtype == np.float32 and cat.shape[0] == num.shape[0] == len(case.records)
    others = {"raw_to_arrays": paths.raw, "LoadedModel.raw_inputs": paths.bundle_raw, "Polars path": paths.polars,
              "fast path": paths.fast, "fast path, one record a call": paths.fast_one_by_one}  # fmt: skip
    for name, (c, n) in others.items():
        assert np.array_equal(c, cat), f"{name}: categorical codes differ from the features-table path"
        assert np.array_equal(n, num), f"{name}: numerics differ from the features-table path"
    assert len(np.unique(canonical(cat, num), axis=0)) == len(case.records)  # distinct rows: the multiset check below is exact
    assert np.array_equal(canonical(*paths.training), canonical(cat, num)), "training batches differ from the predict path"


def test_predictions_agree_across_paths(case, paths):
    """The same inputs give the same scores: predict (evaluation), predict_records (serving) and batch scoring."""
    on_frame = paths.model.predict(paths.frame)
    assert np.array_equal(on_frame, paths.model.predict_records(case.records))
    assert np.array_equal(on_frame, paths.model.predict_arrays(*paths.raw))
    report = score_new_partitions(case.lake, case.spec, paths.model, case.spec.name, 1)
    assert case.day in report.dates
    scored = (
        case.lake.scan(Tables.predictions(case.spec.name)).filter(pl.col(EVENT_DATE) == case.day).collect()
        .sort(pl.col(case.id_column).cast(pl.Int64))
    )  # fmt: skip
    # batch scoring runs these rows inside one large batch of every date: float32 matrix products of another
    # shape round differently (~1e-8); an encoding difference moves a score by orders of magnitude more
    np.testing.assert_allclose(scored[SCORE].to_numpy(), on_frame, rtol=1e-6, atol=1e-7)


def column(paths: Paths, name: str) -> np.ndarray:
    config = paths.model.config
    if name in config.categorical:
        return paths.predict[0][:, config.categorical.index(name)]
    return paths.predict[1][:, config.numeric.index(name)]


def test_each_rule_gives_the_expected_value(case, paths):
    spec, state, frame = case.spec, paths.state, paths.frame
    vocab = state.vocab["carrier"]
    carriers = column(paths, "cat_carrier")
    assert carriers[NORMAL] == vocab.index(case.records[NORMAL]["carrier"]) + 1 > 0  # a known category: its code
    assert carriers[UNSEEN] == 0  # unseen: unknown
    assert column(paths, "cat_" + case.null_categorical)[NULL_CAT] == 0  # null: unknown
    assert frame["cat_" + case.null_categorical][NULL_CAT] == 0
    assert column(paths, case.null_numeric)[NULL_NUM] == 0.0  # null: the mean
    for name, value in case.nan_inf.items():
        assert column(paths, name)[NAN_INF] == 0.0  # NaN and ±inf: the mean
        if math.isinf(value):  # an infinite side value survives scaling into the table; the arrays drop it
            assert frame[name][NAN_INF] == value
    for name in [c for c in paths.model.config.numeric if c.startswith("num_weather_")]:
        assert column(paths, name)[NO_SIDE] == 0.0  # no side row within the tolerance
    mean, std = state.stats["distance"]
    assert column(paths, "num_distance")[CLIPPED] == np.float32((spec.quality.clip["distance"].max - mean) / std)
    for name, code in case.tampered.items():
        assert frame[name][TAMPERED] == code  # the table holds an out-of-range code ...
        assert column(paths, name)[TAMPERED] == 0  # ... the model sees unknown
    zone = zoneinfo.ZoneInfo(spec.timezone)
    local = [t.astimezone(zone) for t in frame[spec.event_time]]
    assert column(paths, "cal_hour").tolist() == [t.hour for t in local]
    assert column(paths, "cal_weekday").tolist() == [t.isoweekday() for t in local]


def test_to_arrays_reads_polars_and_arrow_alike():
    frame = pl.DataFrame(
        {"cat_a": [1, None, 7, -2, 3], "cal_h": [0, 23, 24, 5, None], "num_x": [0.5, None, float("nan"), float("inf"), -float("inf")],
         "num_y": [1.0, 2.0, 3.0, 4.0, 5.0]},
        schema={"cat_a": pl.Int32, "cal_h": pl.Int16, "num_x": pl.Float32, "num_y": pl.Float64},
    )  # fmt: skip
    args = (["cal_h", "cat_a"], [24, 4], ["num_y", "num_x"])  # not the frame's order: the arrays follow the model's
    cat, num = to_arrays(frame, *args)
    assert cat.tolist() == [[0, 1], [23, 0], [0, 0], [5, 0], [0, 3]]
    assert num.tolist() == [[1.0, 0.5], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [5.0, 0.0]]
    assert cat.flags.c_contiguous and num.flags.c_contiguous
    table = pa.concat_tables([frame.head(2).to_arrow(), frame.tail(3).to_arrow()])  # chunked columns
    for other in (table, table.combine_chunks().to_batches()[0]):
        c, n = to_arrays(other, *args)
        assert np.array_equal(c, cat) and np.array_equal(n, num)
    with pytest.raises(ValueError, match="num_z"):
        to_arrays(frame, ["cat_a"], [4], ["num_z"])


def test_raw_records_are_typed_like_ingestion_and_bad_values_are_refused(tiny_spec):
    state = FeatureState(vocab={"carrier": ["AA"], "origin": ["JFK"]}, stats={"distance": (100.0, 10.0), "seats": (0.0, 1.0)})
    inputs = model_inputs(tiny_spec, state)
    texts = [{"carrier": "AA", "origin": "JFK", "distance": "110", "ts": "2013-01-01T10:00:00Z"}]
    typed = [{"carrier": "AA", "origin": "JFK", "distance": 110.0, "ts": dt.datetime(2013, 1, 1, 10, tzinfo=dt.UTC)}]
    cat, num = raw_to_arrays(texts, state, tiny_spec)
    assert np.array_equal(cat, raw_to_arrays(typed, state, tiny_spec)[0]) and np.array_equal(num, raw_to_arrays(typed, state, tiny_spec)[1])
    assert cat[0, :2].tolist() == [1, 1] and num[0, inputs.numeric.index("num_distance")] == 1.0
    assert cat[0, inputs.categorical.index("cal_hour")] == 5  # 10:00 UTC is 05:00 in New York
    with pytest.raises(ValueError, match="distance"):
        raw_to_arrays([texts[0] | {"distance": "far"}], state, tiny_spec)
    with pytest.raises(ValueError, match="event time"):
        raw_to_arrays([{"carrier": "AA", "distance": "1"}], state, tiny_spec)


def test_explicit_model_inputs_choose_and_order_the_columns_of_the_arrays(tiny_spec):
    """A model trained on a subset or another order of the columns (its bundle's ``ModelInputs``) gets exactly those
    columns in that order, on the fast path and the Polars path alike (mutation testing found no test passing inputs)."""
    from aiflow.data.encoding import ModelInputs

    state = FeatureState(vocab={"carrier": ["AA", "UA"], "origin": ["JFK"]}, stats={"distance": (100.0, 10.0), "seats": (0.0, 1.0)})
    full = model_inputs(tiny_spec, state)
    records = [{"carrier": "UA", "origin": "JFK", "distance": "130", "ts": "2013-01-01T10:00:00Z"}]
    cat_all, num_all = raw_to_arrays(records, state, tiny_spec)
    picked = ModelInputs([full.categorical[1], full.categorical[0]], [full.cardinalities[1], full.cardinalities[0]], full.numeric[:1])
    cat, num = raw_to_arrays(records, state, tiny_spec, picked)
    assert cat.shape == (1, 2) and num.shape == (1, 1)
    assert cat[0].tolist() == [cat_all[0, 1], cat_all[0, 0]] and num[0].tolist() == [num_all[0, 0]]
    assert cat[0, 1] == 2  # UA: the second vocabulary entry (0 is unknown)
    for a, b in zip((cat, num), polars_raw_to_arrays(records, state, tiny_spec, picked), strict=True):
        assert np.array_equal(a, b)


# ------------------------------------------------------------------ the fast path against the Polars path
SHAPES = ["demo", "tiny-kolkata", "tiny-lord-howe"]


def shape_spec(shape: str) -> DatasetSpec:
    """The demo spec (New York), the tiny spec in Kolkata, and a tiny variant in Lord Howe (half-hour DST) with other
    column types (float32 distance, a bool category, an int category) and a minimum clip bound."""
    if shape == "demo":
        return parse_spec(yaml.safe_load(demo_spec_path().read_text()), "demo")
    data = copy.deepcopy(TINY)
    if shape == "tiny-kolkata":
        data["timezone"] = "Asia/Kolkata"
    else:
        data["timezone"] = "Australia/Lord_Howe"
        data["columns"]["distance"]["type"] = "float32"
        data["features"]["categorical"] = ["carrier", "origin", "refundable", "seats"]
        data["features"]["numeric"] = ["distance"]
        data["quality"]["clip"] = {"distance": {"min": 10, "max": 5000}}
    return parse_spec(data, shape)


def shape_state(spec: DatasetSpec) -> FeatureState:
    vocab = {c: [f"{c[:2].upper()}{i}" for i in range(5)] for c in spec.features.categorical}
    if "refundable" in vocab:
        vocab["refundable"] = ["true"]
        vocab["seats"] = ["150", "7", "-3"]
    stats = {c: (1.5 + i, 0.5 + i) for i, c in enumerate(model_inputs(spec, FeatureState()).numeric)}
    stats = {c.removeprefix("num_"): v for c, v in stats.items()}
    return FeatureState(vocab=vocab, stats=stats, rows=100)


# DST edges: New York (2013-03-10 07:00Z, 2013-11-03 06:00Z), Lord Howe (half-hour shifts), plus year ends
EDGES = [dt.datetime(2013, 3, 10, 7, tzinfo=dt.UTC), dt.datetime(2013, 11, 3, 6, tzinfo=dt.UTC), dt.datetime(2013, 4, 6, 15, tzinfo=dt.UTC),
         dt.datetime(2013, 10, 5, 15, 30, tzinfo=dt.UTC), dt.datetime(2012, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
         dt.datetime(2016, 2, 29, 18, 30, tzinfo=dt.UTC)]  # fmt: skip
# (values both paths type, values the fast path leaves to the Polars path: it types or refuses them)
NUMBER_TEXTS = (["12", " 7 ", "+3.5", "-0", ".5", "5.", "1e3", "1E-3", "1e400", "-1e400", "nan", "NaN", "inf", "-inf", "+Infinity",
                 "6000", "-20", "4999.9999999", "0.1", "99999999999999999999"],
                ["1_0", "x", "\u00a012", "", "+nan", "0x10"])  # fmt: skip
INT_TEXTS = (["12", "+7", "012", "-3", " 150 ", "150", "7"], ["12.0", "12.5", "2147483648", "x", ""])
TIME_TEXTS = ["2013-02-30T10:00:00Z", "yesterday", "2013-01-01T10:00Z", " 2013-01-01T10:00:00Z ", "2013-01-01T10:00:00-0500"]
UNSAFE = 0.004  # share of values drawn from the second list: about one batch in five holds one


def pick(rng: np.random.Generator, values: tuple[list, list]) -> object:
    safe, unsafe = values
    return unsafe[rng.integers(len(unsafe))] if rng.random() < UNSAFE else safe[rng.integers(len(safe))]


def random_time(rng: np.random.Generator, style: str, zone: str | None) -> object:
    moment = EDGES[rng.integers(len(EDGES))] + dt.timedelta(minutes=int(rng.integers(-90, 91)), seconds=int(rng.integers(0, 60)),
                                                            microseconds=int(rng.integers(0, 1_000_000)) * int(rng.integers(0, 2)))  # fmt: skip
    if style == "typed":
        return moment.replace(tzinfo=None) if zone is None else moment.astimezone(zoneinfo.ZoneInfo(zone))
    if rng.random() < UNSAFE:
        return TIME_TEXTS[rng.integers(len(TIME_TEXTS))]
    pick = rng.integers(6)
    if pick == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if pick == 1:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if pick == 2:
        return moment.isoformat().replace("+00:00", "Z")
    if pick == 3:
        return moment.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).isoformat()
    if pick == 4:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # nanoseconds: truncated to microseconds
    return moment.strftime("%Y-%m-%d")


def random_value(rng: np.random.Generator, kind: str, style: str, vocab: list[str]) -> object:
    if rng.random() < 0.1:
        return None
    if kind == "string":
        if style == "typed" and rng.random() < UNSAFE:
            return 5  # a number in a text column: Polars gives it a supertype, the fast path leaves it to Polars
        return [*vocab, "UNSEEN", "", " " + (vocab[0] if vocab else "A")][rng.integers(len(vocab) + 3)]
    if kind in ("int32", "int64"):
        return pick(rng, ([0, 7, 150, -3, -(2**31)], [2**31, 2**40, 12.5, 12.0])) if style == "typed" else pick(rng, INT_TEXTS)
    if kind in ("float64", "float32"):
        typed = ([float(rng.normal(0, 1e3)), int(rng.integers(-10, 7000)), math.nan, math.inf, -math.inf, 1e300, 6000.0, 2**63 - 1], [2**63])
        return pick(rng, typed) if style == "typed" else pick(rng, NUMBER_TEXTS)
    if kind == "bool":
        return pick(rng, ([True, False], [1, 0])) if style == "typed" else pick(rng, (["yes", " No ", "TRUE", "f", "1"], ["maybe", "2"]))
    if kind == "date":
        return dt.date(2012, 12, int(rng.integers(1, 32))) if style == "typed" else pick(rng, (["2012-12-01", "2013-01-31"], ["2013-02-30", "2012-1-1"]))
    raise AssertionError(kind)


def random_batches(spec: DatasetSpec, state: FeatureState, seed: int, records: int = 1000) -> list[list[dict]]:
    """Seeded random batches (1-8 records, each batch all text or all typed values): nulls, unseen, extremes, DST edges."""
    rng = np.random.default_rng(seed)
    sides = [c for c in model_inputs(spec, state).numeric if c.removeprefix("num_") not in spec.columns]
    batches, made = [], 0
    while made < records:
        size, style = int(rng.integers(1, 9)), ["text", "typed"][rng.integers(2)]
        zone = [None, "America/New_York", "Asia/Kolkata", "UTC"][rng.integers(4)]  # one per batch: Polars refuses a mix
        batch = []
        for _ in range(size):
            record = {}
            for name, column in spec.columns.items():
                if column.type == "datetime":
                    record[name] = random_time(rng, style, zone) if rng.random() > 0.002 else None
                else:
                    record[name] = random_value(rng, column.type, style, state.vocab.get(name, []))
            for side in sides:
                record[side.removeprefix("num_")] = [None, 4.5, -1e300, math.nan, math.inf, 3][rng.integers(6)]
            batch.append(record)
        batches.append(batch)
        made += size
    return batches


@pytest.mark.parametrize("shape", SHAPES)
def test_fast_path_matches_the_polars_path_on_random_records(shape):
    spec = shape_spec(shape)
    state = shape_state(spec)
    encoder = Encoder.compile(spec, state)
    assert encoder.fast
    fast_batches = refused = 0
    for batch in random_batches(spec, state, seed=SHAPES.index(shape)):
        fast = encoder.fast_arrays(batch)
        try:
            expected = polars_raw_to_arrays(batch, state, spec, encoder.inputs)
        except ValueError:
            refused += 1
            assert fast is None, f"the fast path accepted a batch the Polars path refuses: {batch}"
            continue
        if fast is not None:
            fast_batches += 1
            assert np.array_equal(fast[0], expected[0]), f"categorical codes differ for {batch}:\n{fast[0]}\n{expected[0]}"
            assert np.array_equal(fast[1], expected[1]), f"numerics differ for {batch}:\n{fast[1]}\n{expected[1]}"
            assert fast[0].dtype == expected[0].dtype and fast[1].dtype == expected[1].dtype
        assert all(np.array_equal(a, b) for a, b in zip(encoder.arrays(batch), expected, strict=True))
    # the comparison means something only if both kinds of batch occurred often enough
    # (since datetimes are parsed value by value, a batch mixing zones is accepted: fewer refusals than before)
    assert fast_batches >= 40 and refused >= 10, (fast_batches, refused)


def test_a_value_that_does_not_parse_raises_the_same_error_on_every_path(tiny_spec):
    state = shape_state(tiny_spec)
    encoder = Encoder.compile(tiny_spec, state)
    good = {"trip_id": "1", "carrier": "CA0", "origin": "OR1", "distance": "110", "ts": "2013-01-01T10:00:00Z"}
    fast, expected = encoder.fast_arrays([good]), polars_raw_to_arrays([good], state, tiny_spec, encoder.inputs)
    assert fast is not None and all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(fast, expected, strict=True))
    bad = [{"distance": "far"}, {"seats": "12.5"}, {"refundable": "maybe"}, {"booked": "2013-02-30"}, {"seats": 2**40}, {"seats": 12.5},
           {"ts": None}, {"ts": "soon"}, {"delay": "1,5"}]  # fmt: skip
    for change in bad:
        records = [good, good | change]
        with pytest.raises(ValueError) as polars_error:
            polars_raw_to_arrays(records, state, tiny_spec, encoder.inputs)
        with pytest.raises(ValueError) as fast_error:
            encoder.arrays(records)
        assert str(fast_error.value) == str(polars_error.value)
        field = next(iter(change))
        assert "record 1" in str(fast_error.value) and f"'{field}'" in str(fast_error.value)


def test_large_batches_and_frames_take_the_polars_path(tiny_spec):
    state = shape_state(tiny_spec)
    encoder = Encoder.compile(tiny_spec, state)
    record = {"trip_id": "1", "carrier": "CA0", "origin": "OR1", "distance": "6000", "ts": "2013-01-01T10:00:00Z"}
    most = encoder.fast_arrays([record] * FAST_PATH_MAX_RECORDS)
    expected = polars_raw_to_arrays([record] * FAST_PATH_MAX_RECORDS, state, tiny_spec, encoder.inputs)
    assert most is not None and all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(most, expected, strict=True))
    assert encoder.fast_arrays([record] * (FAST_PATH_MAX_RECORDS + 1)) is None
    assert encoder.fast_arrays(pl.DataFrame([record])) is None
    big = encoder.arrays([record] * (FAST_PATH_MAX_RECORDS + 1))
    assert np.array_equal(big[0][:1], encoder.fast_arrays([record])[0]) and np.array_equal(big[1][:1], encoder.fast_arrays([record])[1])


def test_a_fitted_state_survives_its_delta_table(tmp_path):
    """The fitted state is stored as a Delta table (``feature_state``) and read back by training and serving: the same
    vocabularies in code order (code = position + 1, 0 stays unknown), statistics and row count come back, columns in
    any order, each vocabulary's codes in any row order; an empty table gives an empty state."""
    from aiflow.data.encoding import STATE_SCHEMA
    from aiflow.storage.lake import Lake

    state = FeatureState(vocab={"origin": ["JFK", "EWR", "LGA"], "carrier": ["UA", "AA"]},
                         stats={"distance": (812.5, 410.25), "seats": (150.0, 0.0)}, rows=1234)  # fmt: skip
    frame = state.to_frame()
    assert dict(frame.schema) == STATE_SCHEMA
    assert frame.filter(pl.col("kind") == "vocab").select("column", "value", "index", "mean", "std", "count").rows() == [
        ("origin", "JFK", 1, None, None, 1234), ("origin", "EWR", 2, None, None, 1234), ("origin", "LGA", 3, None, None, 1234),
        ("carrier", "UA", 1, None, None, 1234), ("carrier", "AA", 2, None, None, 1234)]  # fmt: skip
    assert frame.filter(pl.col("kind") == "stats").select("column", "value", "index", "mean", "std", "count").rows() == [
        ("distance", None, None, 812.5, 410.25, 1234), ("seats", None, None, 150.0, 0.0, 1234)]  # fmt: skip
    lake = Lake(tmp_path / "lake")
    lake.append("feature_state/x", frame.reverse())  # stored, rows in another order
    back = FeatureState.from_frame(lake.scan("feature_state/x").collect())
    assert (back.vocab, back.stats, back.rows) == (state.vocab, state.stats, 1234)
    assert list(back.vocab) in (["origin", "carrier"], ["carrier", "origin"])
    empty = FeatureState.from_frame(FeatureState().to_frame())
    assert (empty.vocab, empty.stats, empty.rows) == ({}, {}, 0)


def test_a_calendar_day_event_time_gives_the_codes_of_that_day(tiny_dict):
    """An event time of type ``date`` is a calendar day, not an instant: its codes are those of that day, in any time
    zone (no conversion shifts it to the day before or after)."""
    from aiflow.data.encoding import add_calendar

    tiny_dict["columns"]["ts"]["type"] = "date"
    tiny_dict["features"]["calendar"] = ["weekday", "month", "day_of_year"]  # a day has no hour
    tiny_dict["timezone"] = "Pacific/Honolulu"  # UTC-10: a conversion from UTC midnight would give the day before
    spec = parse_spec(tiny_dict, "tiny (date event)")
    days = [dt.date(2013, 1, 1), dt.date(2013, 3, 10), dt.date(2016, 12, 31)]
    coded = add_calendar(pl.DataFrame({"ts": days}).lazy(), spec).collect()
    assert coded.select("cal_weekday", "cal_month", "cal_day_of_year").rows() == [(2, 1, 1), (7, 3, 69), (6, 12, 366)]
    assert coded.schema["cal_day_of_year"] == pl.Int16
