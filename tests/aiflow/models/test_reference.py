"""The reference profile saved with every model version: built by real training runs (both families, the tiny
classification spec and a regression spec) on real Delta tables, covered by the bundle digest, bounded and
seeded sampling, permutation importance, column statistics, and older bundles without one."""

from __future__ import annotations

import os

# as tests/aiflow/train/conftest.py does: idle OpenMP workers sleep instead of spinning (scikit-learn was ~10x slower)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime as dt
import io
import json
import shutil

import numpy as np
import polars as pl
import pytest

from aiflow.data.encoding import FeatureState, ModelInputs
from aiflow.models.bundle import BundleIntegrityError, load_bundle, save_bundle
from aiflow.models.network import ModelConfig, TabularModel
from aiflow.models.reference import (
    JSON,
    PARQUET,
    build_reference,
    column_stats,
    load_reference,
    permutation_importance,
    read_reference,
    reference_rows,
)
from aiflow.spec import parse_spec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import Lake, Tables
from aiflow.train.contract import TrainParams
from aiflow.train.loop import train
from aiflow.train.request import pinned_request
from tests.aiflow.tiny import TINY
from tests.aiflow.train.test_baseline import regression_spec, write_features

FAST = dict(epochs=1, batch_size=512, hidden=[4], embedding_dim=2, baseline_max_rows=2000)


def _train(root, spec, families, key="ref"):
    lake = Lake(root / "lake")
    if not lake.exists(Tables.features(spec.name)):
        write_features(root, spec, "numeric")
    request = pinned_request(lake, spec, TrainParams(**FAST, families=families), str(root / "artifacts"), key, "test")
    return lake, train(request, log=lambda _: None), ArtifactStore(root / "artifacts")


@pytest.fixture(
    params=[("classification", "pytorch"), ("classification", "sklearn"), ("regression", "pytorch"), ("regression", "sklearn")],
    ids=lambda p: "-".join(p),
    scope="module",
)
def trained(request, tmp_path_factory):
    """One training run per problem type and family (read-only: copy the bundle to change it)."""
    problem, family = request.param
    spec = parse_spec(TINY, "tiny") if problem == "classification" else regression_spec()
    lake, result, store = _train(tmp_path_factory.mktemp(f"{problem}-{family}"), spec, [family])
    return spec, lake, result, store


def test_a_trained_bundle_holds_the_reference_of_its_model(trained):
    spec, lake, result, store = trained
    assert {PARQUET, JSON} <= set(result.bundle_files)
    ref = load_reference(store, result.artifact_uri, result.artifact_sha256, result.bundle_files)
    model = load_bundle(store, result.artifact_uri, result.artifact_sha256, result.bundle_files)
    inputs = model.input_columns
    assert ref.sample.columns == ["event_date", "split", *inputs, "label", "prediction"]
    assert ref.sample.schema["event_date"] == pl.Date and ref.sample.schema["label"] == pl.Float64
    assert ref.problem_type == spec.problem_type
    assert ref.threshold == (0.5 if spec.problem_type == "classification" else None)
    assert ref.columns == {c: "categorical" if c.startswith(("cat_", "cal_")) else "numeric" for c in inputs}
    # the prediction column is the model's own prediction; the label is the target of the same row
    np.testing.assert_allclose(ref.sample["prediction"].to_numpy(), model.predict(ref.sample), rtol=1e-5, atol=1e-6)
    features = lake.scan(Tables.features(spec.name)).collect()
    joined = ref.sample.join(features, on=["event_date", *inputs], how="inner")
    assert joined.height == ref.sample.height
    np.testing.assert_array_equal(joined["label"].to_numpy(), joined[spec.target.name].cast(pl.Float64).to_numpy())
    # the windows of the split: train before valid_from, valid in [valid_from, test_from)
    valid_from, test_from = spec.split.valid_from, spec.split.test_from
    assert ref.train().height == ref.meta["rows"]["train"] > 0 and ref.train()["event_date"].max() < valid_from
    assert ref.valid().height == ref.meta["rows"]["valid"] > 0
    assert ref.valid()["event_date"].min() >= valid_from and ref.valid()["event_date"].max() < test_from
    assert ref.meta["windows"]["valid"] == {"from": valid_from.isoformat(), "until": test_from.isoformat()}
    assert set(ref.importance) == set(inputs) and sum(ref.importance.values()) == pytest.approx(1.0)
    assert min(ref.importance.values()) >= 0
    assert max(ref.importance, key=ref.importance.get) == "num_distance"  # the planted signal
    assert set(ref.meta["stats"]) == set(inputs)


def test_the_digest_covers_the_reference(trained, tmp_path):
    _, _, result, original = trained
    shutil.copytree(original.root, tmp_path / "artifacts")
    store = ArtifactStore(tmp_path / "artifacts")
    bundle = result.artifact_uri.removeprefix(original.root + "/")
    copied = load_reference(store, bundle, result.artifact_sha256, result.bundle_files)  # the untouched copy reads as the original
    source = load_reference(original, result.artifact_uri, result.artifact_sha256, result.bundle_files)
    assert copied.sample.height > 0 and copied.sample.equals(source.sample) and copied.meta == source.meta
    path = f"{bundle}/{PARQUET}"
    data = bytearray(store.get_bytes(path))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(path, bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"reference\.parquet"):
        load_reference(store, bundle, result.artifact_sha256, result.bundle_files)
    with pytest.raises(BundleIntegrityError, match=r"reference\.parquet"):  # without the registry's per-file hashes too
        load_reference(store, bundle, result.artifact_sha256)


def test_an_edited_reference_json_is_refused_naming_it(tmp_path):
    _, result, store = _train(tmp_path, parse_spec(TINY, "tiny"), ["pytorch"])
    path = f"{result.artifact_uri.removeprefix(store.root + '/')}/{JSON}"
    meta = json.loads(store.get_bytes(path))
    meta["importance"] = {c: 1.0 / len(meta["importance"]) for c in meta["importance"]}
    store.put_bytes(path, json.dumps(meta).encode())
    with pytest.raises(BundleIntegrityError, match=r"reference\.json"):
        load_reference(store, result.artifact_uri, result.artifact_sha256, result.bundle_files)


def test_training_twice_gives_byte_identical_reference_files(tmp_path):
    spec = regression_spec()
    _, first, store = _train(tmp_path, spec, ["pytorch"], key="one")
    _, second, _ = _train(tmp_path, spec, ["pytorch"], key="two")
    for name in (PARQUET, JSON):
        assert first.bundle_files[name] == second.bundle_files[name]
        stored = [store.get_bytes(f"{r.artifact_uri.removeprefix(store.root + '/')}/{name}") for r in (first, second)]
        assert stored[0] == stored[1] and len(stored[0]) > 1000


# ------------------------------------------------------------------------- sampling, on its own
def _rows(n_train: int, n_valid: int, seed: int = 0) -> pl.DataFrame:
    """Features-shaped rows (other column names, a Float64 target) split into train and valid."""
    rng = np.random.default_rng(seed)
    n = n_train + n_valid
    days = np.concatenate([rng.integers(0, 60, n_train), rng.integers(60, 90, n_valid)])
    return pl.DataFrame(
        {
            "event_date": [dt.date(2024, 3, 1) + dt.timedelta(days=int(d)) for d in days],
            "cat_shop": rng.integers(0, 6, n).astype(np.int32),
            "cal_weekday": rng.integers(1, 8, n).astype(np.int32),
            "num_price": rng.normal(size=n).astype(np.float32),
            "num_noise": rng.normal(size=n).astype(np.float32),
            "amount": rng.normal(10, 2, n),
            "split": ["train"] * n_train + ["valid"] * n_valid,
        }
    )


SHOP = ModelInputs(["cat_shop", "cal_weekday"], [6, 8], ["num_price", "num_noise"])
SHOP_SPEC = regression_spec()


def _predict(cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    return 10.0 + 2.0 * num[:, 0] + 0.1 * cat[:, 0]


def _build(rows: pl.DataFrame, seed: int = 7, **limits) -> dict[str, bytes]:
    return build_reference(rows, _predict, SHOP, SHOP_SPEC, problem_type="regression", target="amount", seed=seed, **limits)


def test_the_sample_is_bounded_seeded_and_independent_of_row_order():
    rows = _rows(3000, 1500)
    files = _build(rows, max_train_rows=200, max_valid_rows=100, importance_rows=150)
    ref = read_reference(files)
    assert (ref.train().height, ref.valid().height) == (200, 100)
    assert ref.sample["split"].to_list() == ["train"] * 200 + ["valid"] * 100 and ref.train()["event_date"].is_sorted()
    first, last = ref.valid()["event_date"].min(), ref.valid()["event_date"].max()
    assert ref.meta["windows"]["valid"] == {"from": first.isoformat(), "until": (last + dt.timedelta(days=1)).isoformat()}
    assert ref.meta["rows"] == {"train": 200, "valid": 100, "importance": 150}
    assert ref.sample.join(rows, on=["event_date", "cat_shop", "cal_weekday", "num_price", "num_noise"]).height == 300
    assert files == _build(rows.sample(fraction=1.0, shuffle=True, seed=3), max_train_rows=200, max_valid_rows=100, importance_rows=150)
    other = read_reference(_build(rows, seed=8, max_train_rows=200, max_valid_rows=100, importance_rows=150))
    assert not other.sample.equals(ref.sample)  # another seed, another sample
    np.testing.assert_allclose(ref.sample["prediction"].to_numpy(), _predict(*_arrays(ref.sample)))


def _arrays(frame: pl.DataFrame):
    return frame.select(SHOP.categorical).to_numpy().astype(np.int64), frame.select(SHOP.numeric).to_numpy().astype(np.float32)


def test_rows_read_from_delta_with_a_key_threshold_give_the_sample_of_a_full_read(tmp_path):
    rows = _rows(4000, 2000, seed=1)
    lake = Lake(tmp_path / "lake")
    lake.overwrite("features/shop", rows.drop("split"))
    lf = lake.scan("features/shop")
    splits = {"train": pl.col("event_date") < dt.date(2024, 4, 30), "valid": pl.col("event_date") >= dt.date(2024, 4, 30)}
    limits = {"train": 300, "valid": 150}
    columns = [*SHOP.numeric, "event_date", *reversed(SHOP.categorical)]  # any order: the key hashes columns by name
    read = reference_rows(lf, splits, columns=columns, target="amount", seed=7, limits=limits)
    assert 300 < read.filter(pl.col("split") == "train").height < 1000  # a few more than the limit, not the window
    full = reference_rows(lf, splits, columns=columns, target="amount", seed=7, limits={"train": 10**9, "valid": 10**9})
    assert full.height == rows.height
    assert _build(read, max_train_rows=300, max_valid_rows=150) == _build(full, max_train_rows=300, max_valid_rows=150)


def test_rows_without_a_label_are_left_out_of_the_sample():
    rows = _rows(300, 200).with_columns(pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("amount")).alias("amount"))
    ref = read_reference(_build(rows))
    assert ref.sample.height == rows["amount"].count() and ref.sample["label"].null_count() == 0


def test_unreadable_reference_files_are_refused_naming_them():
    files = _build(_rows(100, 50))
    with pytest.raises(ValueError, match=r"reference\.parquet is not a readable"):
        read_reference({**files, PARQUET: b"PAR1 not parquet"})
    with pytest.raises(ValueError, match=r"reference\.json .*format 9"):
        read_reference({**files, JSON: json.dumps({**json.loads(files[JSON]), "format": 9}).encode()})
    with pytest.raises(ValueError, match=r"reference\.parquet lacks the column\(s\) \['num_price'\]"):
        read_reference({**files, PARQUET: _parquet(read_reference(files).sample.drop("num_price"))})


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def test_bad_rows_are_refused_naming_the_column():
    with pytest.raises(ValueError, match=r"num_price"):
        _build(_rows(50, 50).drop("num_price"))
    with pytest.raises(ValueError, match=r"'test'"):
        _build(_rows(50, 50).with_columns(pl.lit("test").alias("split")))


# ------------------------------------------------------------------------- importance and stats
@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_a_column_the_model_depends_on_outweighs_noise(problem):
    rng = np.random.default_rng(0)
    n = 2000
    cat = np.stack([rng.integers(0, 5, n), rng.integers(0, 5, n)], axis=1)
    num = rng.normal(size=(n, 2)).astype(np.float32)
    score = 2.0 * num[:, 0] + 0.5 * (cat[:, 0] == 3)  # depends on num_a (strongly) and cat_a (a little); not on the rest
    if problem == "classification":
        y = (score + rng.normal(size=n) > 0).astype(np.float64)

        def predictor(c, x):
            return 1 / (1 + np.exp(-(2.0 * x[:, 0] + 0.5 * (c[:, 0] == 3))))
    else:
        y = score + rng.normal(size=n)

        def predictor(c, x):
            return 2.0 * x[:, 0] + 0.5 * (c[:, 0] == 3)

    names = ["cat_a", "cat_noise", "num_a", "num_noise"]
    imp = permutation_importance(predictor, cat, num, y, names, problem_type=problem, seed=1)
    assert sum(imp.values()) == pytest.approx(1.0)
    assert imp["num_a"] > imp["cat_a"] > imp["cat_noise"] == imp["num_noise"] == 0.0
    flat = permutation_importance(lambda c, x: np.full(len(c), 0.4), cat, num, y, names, problem_type=problem, seed=1)
    assert flat == {n: 0.25 for n in names}  # no column matters: equal weights


def test_a_column_whose_shuffle_lowers_the_loss_gets_zero_weight_not_a_negative_one():
    rng = np.random.default_rng(2)
    x = rng.normal(size=2000)
    noise = rng.normal(size=2000)
    y = 2.0 * x + noise
    num = np.stack([x, -noise], axis=1).astype(np.float32)  # the model reads the second column the wrong way round

    def predictor(c, n):
        return 2.0 * n[:, 0] + 1.5 * n[:, 1]

    imp = permutation_importance(predictor, np.zeros((2000, 0), np.int64), num, y, ["num_x", "num_harm"], problem_type="regression", seed=0)
    assert imp == {"num_x": 1.0, "num_harm": 0.0}


def test_column_statistics():
    sample = pl.DataFrame(
        {"num_x": pl.Series([float(v) for v in range(101)] + [None, float("nan")], dtype=pl.Float32),
         "cat_y": pl.Series([1] * 60 + [2] * 30 + [0] * 11 + [None, None], dtype=pl.Int32)}
    )  # fmt: skip
    stats = column_stats(sample, {"num_x": "numeric", "cat_y": "categorical"})
    x, y = stats["num_x"], stats["cat_y"]
    assert x["count"] == 101 and x["null_share"] == pytest.approx(2 / 103)
    assert x["mean"] == pytest.approx(50.0) and x["std"] == pytest.approx(np.std(np.arange(101), ddof=1))
    assert x["quantiles"] == {"0.0": 0.0, "0.01": 1.0, "0.05": 5.0, "0.25": 25.0, "0.5": 50.0, "0.75": 75.0, "0.95": 95.0, "0.99": 99.0, "1.0": 100.0}
    assert y["count"] == 101 and y["distinct"] == 3 and y["null_share"] == pytest.approx(2 / 103)
    assert y["top"] == {"1": pytest.approx(60 / 103), "2": pytest.approx(30 / 103), "0": pytest.approx(11 / 103)}


# ------------------------------------------------------------------------- older bundles
def test_a_bundle_without_a_reference_reads_as_none(tmp_path):
    spec = parse_spec(TINY, "tiny")
    config = ModelConfig("classification", ["cat_carrier"], [5], ["num_distance"], [4], 2, 0.0, "late")
    store = ArtifactStore(tmp_path / "artifacts")
    state = FeatureState(vocab={"carrier": ["AA", "UA", "DL", "B6"]}, stats={"distance": (0.0, 1.0)}, rows=10)
    uri, digest = save_bundle(
        store, "trips/candidates/old", model=TabularModel(config), config=config, params={}, state=state, spec=spec,
        spec_dict=TINY, lineage={},
    )  # fmt: skip
    assert load_reference(store, uri, digest) is None
    with pytest.raises(ValueError, match=r"reference\.json"):  # half a reference is an error, not None
        read_reference({PARQUET: b"x"})
    with pytest.raises(ValueError, match="would replace"):
        save_bundle(
            store, "trips/candidates/bad", model=TabularModel(config), config=config, params={}, state=state, spec=spec,
            spec_dict=TINY, lineage={}, extra_files={"model.json": b"{}"},
        )  # fmt: skip
