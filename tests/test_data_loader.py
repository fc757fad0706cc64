"""The token loader: contract columns, exact token reads, per-track splits, deterministic resumable sampling,
crops/padding, caption variants, condition dropout and the melody chroma."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from _train_fixtures import make_dataset

from tunekit.data.tokens import EvalWindows, StepBatches, TokenSet, TrainWindows, collate
from tunekit.errors import ConfigError


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("prep"), window_seconds=2.0, last_partial=1.0)


def test_reads_exactly_the_stored_tokens_per_window(data):
    ts = TokenSet(data)
    table = pq.read_table(data / "windows.parquet").to_pylist()
    assert len(ts) == len(table) == 6 * 3
    assert ts.info.n_streams == 4 and ts.info.frame_rate == 50.0 and ts.info.codec == "facebook/encodec_32khz"
    for row in table:
        i = list(ts.window_id).index(row["window_id"])
        whole = np.load(data / row["tokens_path"])
        expected = whole[row["tokens_offset"] : row["tokens_offset"] + row["tokens_frames"]].T.astype(np.int64)
        got = ts.read(i)
        assert got.shape == (4, row["tokens_frames"]) and got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(ts.read(i, 10, 20), expected[:, 10:30])
    # the final partial window of a track is shorter (1 s = 50 frames), never padded on disk
    assert sorted(set(ts.frames.tolist())) == [50, 100]


def test_splits_are_by_track_and_disjoint(data):
    ts = TokenSet(data)
    train, valid, test = ts.tracks("train"), ts.tracks("valid"), ts.tracks("test")
    assert len(train) == 4 and len(valid) == 1 and len(test) == 1
    assert not (train & valid) and not (train & test) and not (valid & test)
    rows = ts.indices("valid")
    assert list(ts.window_id[rows]) == sorted(ts.window_id[rows])
    assert {ts.track_id[r] for r in rows} == valid


def test_a_track_in_two_splits_is_refused(tmp_path):
    import pyarrow as pa

    root = make_dataset(tmp_path / "leak")
    rows = pq.read_table(root / "windows.parquet").to_pylist()
    rows[1]["split"] = "valid"  # second window of the first (train) track
    pq.write_table(pa.Table.from_pylist(rows), root / "windows.parquet")
    with pytest.raises(ConfigError, match="several splits") as err:
        TokenSet(root)
    assert err.value.key == "data.path"


def test_data_without_tokens_says_run_prep(tmp_path):
    root = make_dataset(tmp_path / "notokens", with_tokens=False)
    with pytest.raises(ConfigError, match=r"run `tunekit prep`") as err:
        TokenSet(root)
    assert err.value.key == "data.path"
    with pytest.raises(ConfigError, match="no windows.parquet"):
        TokenSet(tmp_path)


def test_examples_are_a_pure_function_of_the_sample_index(data):
    ts = TokenSet(data)
    rows = ts.indices("train")
    ds = TrainWindows(ts, rows, crop_frames=60, seed=3, cond_dropout=0.3)
    again = TrainWindows(ts, rows, crop_frames=60, seed=3, cond_dropout=0.3)
    for g in [0, 5, 11, 12, 40, 7]:  # out of order, across epochs
        a, b = ds[g], again[g]
        np.testing.assert_array_equal(a.codes, b.codes)
        assert (a.caption, a.drop, a.window_id, a.n_frames) == (b.caption, b.drop, b.window_id, b.n_frames)
    # each epoch visits every training window exactly once, in a different order
    n = len(rows)
    epoch0 = [ds.row_of(g) for g in range(n)]
    epoch1 = [ds.row_of(g) for g in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) == sorted(rows.tolist())
    assert epoch0 != epoch1


def test_crops_lie_inside_the_window_and_short_windows_are_not_padded_here(data):
    ts = TokenSet(data)
    rows = ts.indices("train")
    ds = TrainWindows(ts, rows, crop_frames=60, seed=0)
    starts = set()
    for g in range(60):
        e = ds[g]
        row = ds.row_of(g)
        full = ts.read(row)
        assert e.n_frames == min(60, ts.frames[row])
        starts_here = range(full.shape[1] - e.n_frames + 1)
        hits = [s for s in starts_here if np.array_equal(full[:, s : s + e.n_frames], e.codes)]
        assert hits, "the crop must be a contiguous slice of its window"
        starts.add(hits[0])
    assert len(starts) > 5  # random crop positions, not always 0


def test_caption_variants_and_condition_dropout_rate(data):
    ts = TokenSet(data)
    ds = TrainWindows(ts, ts.indices("train"), crop_frames=50, seed=1, cond_dropout=0.3)
    n = 4000
    drops = sum(ds[g].drop for g in range(n))
    # binomial(4000, 0.3): sd ~29; 5 sd either side
    assert abs(drops - 0.3 * n) < 5 * np.sqrt(n * 0.3 * 0.7)
    variants = {ds[g].caption.rsplit(" ", 1)[-1] for g in range(60)}
    assert variants == {"0", "1", "2"}
    fixed = TrainWindows(ts, ts.indices("train"), crop_frames=50, seed=1, caption_variants=False)
    assert {fixed[g].caption.rsplit(" ", 1)[-1] for g in range(60)} == {"0"}


def test_collate_pads_to_the_longest_and_keeps_lengths(data):
    ts = TokenSet(data)
    ev = EvalWindows(ts, ts.indices("train"), crop_frames=100)
    items = [ev[i] for i in range(3)]  # 100, 100, 50 frames (the last is a partial window)
    batch = collate(items)
    assert batch["codes"].shape == (3, 4, 100)
    assert batch["n_frames"].tolist() == [e.n_frames for e in items] == [100, 100, 50]
    assert batch["codes"][2, :, 50:].abs().sum() == 0
    assert batch["captions"] == [e.caption for e in items]


def test_step_batches_resume_at_the_exact_position_and_shard_ranks():
    full = list(StepBatches(0, 5, micro_batch=2, accum=3))
    resumed = list(StepBatches(3, 5, micro_batch=2, accum=3))
    assert resumed == full[3 * 3 :]
    flat = [g for b in full for g in b]
    assert flat == list(range(5 * 6))
    ranks = [list(StepBatches(0, 2, micro_batch=2, accum=2, world=3, rank=r)) for r in range(3)]
    step0 = sorted(g for r in ranks for b in r[:2] for g in b)
    assert step0 == list(range(12))  # one optimiser step = every rank's micro-batches = the global batch


def test_summary_is_read(data):
    assert TokenSet(data).summary() == json.loads((data / "summary.json").read_text())
    assert TokenSet(data).pipeline() == "musicgen"  # prep records it as config.pipeline_name


def test_melody_chroma_finds_the_pitch_class():
    from tunekit.data.chroma import melody_chroma

    sr = 32000
    t = np.arange(3 * sr) / sr
    for freq, pitch_class in [(440.0, 9), (261.63, 0), (392.0, 7)]:  # A, C, G (C = 0)
        chroma = melody_chroma(np.sin(2 * np.pi * freq * t).astype(np.float32), sr)
        assert chroma.shape == (3 * sr // 4096 + 1, 12)
        assert set(chroma.sum(axis=1)) == {1.0}
        assert (chroma.argmax(axis=1) == pitch_class).all()


def test_melody_source_reads_the_window_audio(data):
    from tunekit.data.tokens import MelodySource

    ts = TokenSet(data)
    src = MelodySource(ts)
    row = int(ts.indices("train")[0])
    chroma = src.chroma(row, 0, 100)  # 2 s of the window's audio -> 16 chroma frames
    assert chroma.shape == (2 * 32000 // 4096 + 1, 12)
    # track 0 is a 110 Hz (A) chord with its fifth (E): the strongest class is A
    assert np.bincount(chroma.argmax(axis=1), minlength=12).argmax() == 9


def test_token_set_pickles_without_its_memory_maps(data):
    import pickle

    ts = TokenSet(data)
    assert not ts.check_files()  # opens every token file
    assert ts._maps
    clone = pickle.loads(pickle.dumps(ts))
    assert clone._maps == {}
    np.testing.assert_array_equal(clone.read(3), ts.read(3))
