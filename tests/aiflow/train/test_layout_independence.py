"""Scope: what a training run sees (batches, validation, samples, max_train_rows, target stats, the model) depends on
the split's row set, the seed and the epoch, not on how the pinned Delta table is laid out in files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from deltalake import CommitProperties, write_deltalake

from aiflow.data.encoding import FeatureState
from aiflow.models.bundle import load_bundle
from aiflow.spec import DatasetSpec
from aiflow.storage.artifacts import ArtifactStore
from aiflow.storage.lake import META, Lake, Tables
from aiflow.train.contract import TrainParams
from aiflow.train.data import Arrays, FeatureData, canonical_order, row_identity
from aiflow.train.loop import train
from aiflow.train.request import pinned_request
from tests.aiflow.train.tiny_features import event_times, features_frame, regression_spec

ROWS = 1500


@pytest.fixture(params=["classification", "regression"])
def spec(request, tiny_spec) -> DatasetSpec:
    return tiny_spec if request.param == "classification" else regression_spec()


def features(spec: DatasetSpec, seed: int = 0) -> pl.DataFrame:
    """Features rows of the tiny spec's shape, with a learnable target and some rows repeated (equal model inputs)."""
    rng = np.random.default_rng(seed)
    ts = event_times(rng, ROWS)
    distance = rng.normal(size=ROWS)
    score = 2.0 * distance + rng.normal(size=ROWS)
    target = (score > 0).astype(np.int8) if spec.problem_type == "classification" else 20.0 + 10.0 * score
    frame = features_frame(spec, rng, ts, target, carrier=rng.integers(1, 5, ROWS), distance=distance)
    repeated = frame.slice(0, 40).with_columns(pl.col("trip_id") + 100_000)  # same model inputs, other keys
    return pl.concat([frame, repeated, frame.slice(100, 10)])  # and exact duplicates


def lay_out(root: Path, spec: DatasetSpec, frame: pl.DataFrame, chunks: list[np.ndarray], *, by_month: bool) -> Lake:
    """A lake whose features table holds ``frame``'s rows, written chunk by chunk (one file per chunk and partition)."""
    lake = Lake(root)
    state = FeatureState(vocab={"carrier": ["AA", "UA", "DL", "B6"], "origin": ["JFK", "EWR", "LGA"]},
                         stats={"distance": (0.0, 1.0), "seats": (0.0, 1.0), "weather_temp": (0.0, 1.0)}, rows=ROWS)  # fmt: skip
    lake.overwrite(Tables.feature_state(spec.name), state.to_frame())
    props = CommitProperties(custom_metadata={META + "state_version": str(lake.version(Tables.feature_state(spec.name)))})
    if by_month:
        frame = frame.with_columns(event_month=pl.col("event_date").dt.strftime("%Y-%m"))
    for index in chunks:
        write_deltalake(lake.uri(Tables.features(spec.name)), frame[index].to_arrow(), mode="append",
                        partition_by=["event_month"] if by_month else None, commit_properties=props)  # fmt: skip
    return lake


def two_layouts(tmp_path: Path, spec: DatasetSpec) -> tuple[Lake, Lake]:
    """The same rows: one file, ordered; and several files per month partition, rows permuted inside each."""
    frame = features(spec)
    rng = np.random.default_rng(7)
    one = lay_out(tmp_path / "one", spec, frame, [np.arange(frame.height)], by_month=False)
    many = lay_out(tmp_path / "many", spec, frame, np.array_split(rng.permutation(frame.height), 5), by_month=True)
    return one, many


def files_of(lake: Lake, spec: DatasetSpec) -> list[str]:
    return pl.DataFrame(lake.table(Tables.features(spec.name)).get_add_actions(flatten=True))["path"].to_list()


def data_of(lake: Lake, spec: DatasetSpec, buffer_rows: int | None = None, **params) -> FeatureData:
    request = pinned_request(lake, spec, TrainParams(**params), str(lake.uri("artifacts")), "layout", "test")
    return FeatureData(request, spec) if buffer_rows is None else FeatureData(request, spec, buffer_rows=buffer_rows)


def stacked(batches) -> list[np.ndarray]:
    """Batches as (sizes, codes, numerics, targets), for exact comparisons."""
    batches = list(batches)
    return [np.array([len(b) for b in batches]), *(np.concatenate(part) for part in zip(*batches, strict=True))]


def assert_same(a: list[np.ndarray] | Arrays, b: list[np.ndarray] | Arrays) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def as_rows(arrays) -> np.ndarray:
    """Rows as one sorted matrix: the multiset of rows, whatever their order."""
    cat, num, y = arrays[-3:]
    matrix = np.hstack([cat.astype(np.float64), num.astype(np.float64), y.astype(np.float64)[:, None]])
    return matrix[np.lexsort(matrix.T[::-1])]


# ------------------------------------------------------------------------------------------- tests
def test_row_identity_is_a_fixed_function_of_the_model_inputs():
    rows = Arrays(np.array([[1, 2], [1, 2], [1, 3]], dtype=np.int64), np.array([[0.5], [0.5], [0.5]], dtype=np.float32),
                  np.array([1.0, 1.0, 1.0], dtype=np.float32))  # fmt: skip
    identity = row_identity(rows)
    assert identity.dtype == np.uint64 and identity[0] == identity[1] != identity[2]
    # pinned: integer arithmetic, so the same in every process and on every version (a change reorders and resamples every run)
    assert identity.tolist() == [5937834818532072529, 5937834818532072529, 11934415671319374973]


def test_different_rows_with_one_identity_are_ordered_by_content():
    """A 64-bit collision (forced here) still gives one order whatever order the rows came in."""
    rng = np.random.default_rng(0)
    rows = Arrays(rng.integers(0, 3, (60, 2)), rng.integers(0, 2, (60, 1)).astype(np.float32), rng.integers(0, 2, 60).astype(np.float32))
    identity = np.arange(60, dtype=np.uint64) % np.uint64(4)  # 4 identities shared by different rows
    orders = []
    for permutation in (np.arange(60), rng.permutation(60)):
        shuffled = rows.take(permutation)
        orders.append(shuffled.take(canonical_order(shuffled, identity[permutation])))
    assert_same(orders[0], orders[1])


def test_same_rows_in_other_files_give_the_same_batches_samples_and_stats(tmp_path, spec):
    one, many = two_layouts(tmp_path, spec)
    assert len(files_of(many, spec)) >= 10  # 5 writes x 3 months
    a, b = data_of(one, spec, seed=3), data_of(many, spec, seed=3)
    assert (a.rows_train, a.rows_valid) == (b.rows_train, b.rows_valid) and a.rows_train > 300
    for epoch in (0, 1):
        assert_same(stacked(a.batches("train", 64, epoch=epoch)), stacked(b.batches("train", 64, epoch=epoch)))
    assert not np.array_equal(stacked(a.batches("train", 64, epoch=0))[3], stacked(a.batches("train", 64, epoch=1))[3])
    assert_same(stacked(a.batches("valid", 100)), stacked(b.batches("valid", 100)))
    assert_same(stacked(a.batches("train", 100)), stacked(b.batches("train", 100)))
    assert_same(a.sample("train", 150, seed=5), b.sample("train", 150, seed=5))
    assert_same(a.sample("valid", 150, seed=5), b.sample("valid", 150, seed=5))
    assert a.target_stats() == b.target_stats()

    other = data_of(many, spec, seed=4)  # the seed does choose the order (so the equalities above can fail)
    first, moved = stacked(a.batches("train", 64, epoch=1)), stacked(other.batches("train", 64, epoch=1))
    assert not np.array_equal(first[3], moved[3])
    np.testing.assert_array_equal(as_rows(first), as_rows(moved))  # the same rows
    assert not np.array_equal(a.sample("train", 150, seed=5)[2], a.sample("train", 150, seed=6)[2])


@pytest.mark.parametrize("buffer_rows", [None, 100])  # the sample held in memory, or streamed with a small buffer
def test_max_train_rows_keeps_the_same_rows_whatever_the_layout(tmp_path, spec, buffer_rows):
    one, many = two_layouts(tmp_path, spec)
    a, b = data_of(one, spec, buffer_rows, seed=3, max_train_rows=200), data_of(many, spec, buffer_rows, seed=3, max_train_rows=200)
    assert a.rows_train == b.rows_train == 200 < a.rows_train_available
    kept = as_rows(stacked(a.batches("train", 64, epoch=1)))
    assert len(kept) == 200
    np.testing.assert_array_equal(as_rows(stacked(b.batches("train", 64, epoch=1))), kept)
    np.testing.assert_array_equal(as_rows(stacked(b.batches("train", 64, epoch=2))), kept)  # the same rows every epoch
    assert_same(a.sample("train", 80, seed=9), b.sample("train", 80, seed=9))
    assert a.target_stats() == pytest.approx(b.target_stats(), rel=1e-12)
    held = data_of(many, spec, seed=3, max_train_rows=200)  # streamed or held: one sample
    np.testing.assert_array_equal(as_rows(stacked(held.batches("train", 64, epoch=1))), kept)
    reseeded = data_of(one, spec, buffer_rows, seed=4, max_train_rows=200)  # the seed does choose the rows
    assert not np.array_equal(as_rows(stacked(reseeded.batches("train", 64))), kept)


def test_streamed_split_depends_on_which_rows_share_a_file_only(tmp_path, tiny_spec):
    """Beyond the buffer the stream goes file by file: the same files under other (random) names, their rows in
    another order, give the same batches."""
    frame = features(tiny_spec)
    rng = np.random.default_rng(1)
    chunks = np.array_split(rng.permutation(frame.height), 6)
    left = lay_out(tmp_path / "left", tiny_spec, frame, chunks, by_month=True)
    right = lay_out(tmp_path / "right", tiny_spec, frame, [rng.permutation(c) for c in chunks], by_month=True)
    names = [set(files_of(lake, tiny_spec)) for lake in (left, right)]
    assert len(names[0]) >= 12 and not names[0] & names[1]
    a, b = data_of(left, tiny_spec, 120, seed=3), data_of(right, tiny_spec, 120, seed=3)
    assert a.held("train") is None and a.held("valid") is None  # both splits streamed
    for epoch in (1, 2):
        assert_same(stacked(a.batches("train", 50, epoch=epoch)), stacked(b.batches("train", 50, epoch=epoch)))
    assert_same(stacked(a.batches("valid", 50)), stacked(b.batches("valid", 50)))


def test_training_on_either_layout_gives_the_same_models(tmp_path, tiny_spec):
    """Both families, to the last bit of every metric; the candidate's bundle predicts the same."""
    one, many = two_layouts(tmp_path, tiny_spec)
    params = TrainParams(epochs=2, batch_size=128, hidden=[16], embedding_dim=3, patience=2, baseline_max_rows=500,
                         families=["pytorch", "sklearn"], sklearn_max_iter=20)  # fmt: skip
    results, predictions = [], []
    for lake in (one, many):
        request = pinned_request(lake, tiny_spec, params, str(lake.uri("artifacts")), "layout", "test")
        result = train(request, log=lambda _: None)
        results.append(result)
        predictions.append(
            load_bundle(ArtifactStore(request.artifact_root), result.artifact_uri, result.artifact_sha256).predict(features(tiny_spec))
        )
    a, b = results
    assert set(a.family_metrics) == {"pytorch", "sklearn"} and a.family == b.family
    assert a.family_metrics == b.family_metrics and a.naive_metrics == b.naive_metrics
    np.testing.assert_array_equal(predictions[0], predictions[1])  # the skops file itself is not byte-reproducible
