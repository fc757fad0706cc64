"""Unit tests of the prep building blocks: config checks, registry order, windows, splits, the
streaming loudness meter, audio fingerprints, downmix, cache invalidation, licence policies, executors."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from test_prep_helpers import music, write

from tunekit.prep.config import PrepConfig, SplitConfig
from tunekit.prep.registry import ORDER, STAGES, stage_problems
from tunekit.prep.rows import OK, Rejection, StageContext, TrackRow, WindowRow

# -- config and registry ---------------------------------------------------------------------------


def test_default_config_has_no_problems():
    assert PrepConfig.problems(PrepConfig()) == []


def test_every_bad_option_is_reported_at_once_with_its_key():
    cfg = PrepConfig(license_policy="closed", workers=-1)
    cfg.loudness.policy = "squash"
    cfg.window.align = "bars"
    cfg.window.min_seconds = 40.0
    cfg.split.valid_fraction = 0.6
    cfg.split.test_fraction = 0.5
    cfg.decode.channels = 6
    problems = PrepConfig.problems(cfg)
    for key in (
        "license_policy",
        "workers",
        "loudness.policy",
        "window.align",
        "window.min_seconds",
        "split.valid_fraction",
        "decode.channels",
    ):
        assert any(p.startswith(key) or f"'{key}'" in p or key in p for p in problems), (key, problems)


def test_stage_names_order_and_required_stages_are_checked():
    base = list(PrepConfig().stages)
    assert stage_problems(base) == []
    assert any("unknown stage" in p and "'bogus'" in p for p in stage_problems([*base, "bogus"]))
    swapped = ["ingest", "license", "quality", "decode", "loudness", "window", "split"]
    assert any("out of order" in p for p in stage_problems(swapped))
    assert any("must include" in p and "loudness" in p for p in stage_problems([s for s in base if s != "loudness"]))


def test_registry_slots_for_model_stages_are_in_place():
    # Duplicates are resolved after quality; separation before loudness; tagging, captions and tokens after windows.
    assert ORDER.index("quality") < ORDER.index("dedupe") < ORDER.index("separate") < ORDER.index("loudness")
    assert ORDER.index("split") < ORDER.index("tag") < ORDER.index("caption") < ORDER.index("tokens")
    assert STAGES["separate"].produces_audio and STAGES["loudness"].produces_audio
    assert all(STAGES[n].kind == "window" for n in ("tag", "caption", "tokens"))


def test_prep_yaml_and_musicgen_pipeline_compose_with_overrides():
    from tunekit.config.compose import load_config

    cfg = load_config(
        "prep",
        ["corpus=/c", "out=/o", "pipeline=musicgen", "window.seconds=20", "loudness.target_lufs=-16"],
        PrepConfig,
    )
    assert cfg.window.seconds == 20.0 and cfg.loudness.target_lufs == -16.0
    assert cfg.pipeline_name == "musicgen" and list(cfg.stages) == PrepConfig().stages
    assert cfg.decode.sample_rate == 44100 and cfg.decode.channels == 2


def test_default_pipeline_is_the_schema_defaults():
    """`tunekit prep` without pipeline= composes pipelines/musicgen.yaml over the schema: the default pipeline
    must be exactly the schema's defaults, or the schema would document values no default run uses."""
    from omegaconf import OmegaConf

    from tunekit.config.compose import load_config

    composed = OmegaConf.to_container(load_config("prep", [], PrepConfig, allow_missing=True), resolve=True)
    defaults = OmegaConf.to_container(OmegaConf.structured(PrepConfig()), resolve=True)
    differ = {k: (composed[k], defaults[k]) for k in defaults if composed[k] != defaults[k]}
    assert not differ, f"pipelines/musicgen.yaml differs from tunekit.prep.config.PrepConfig: {differ}"


def test_shipped_stage_lists_are_the_registry_order(repo_root):
    """The registry's ORDER is the one stage list; the YAML files state it as data and must not drift. Each
    pipeline ends with its generator's encoding: EnCodec tokens (MusicGen) or VAE latents (ACE-Step)."""
    from omegaconf import OmegaConf

    from tunekit.prep.config import DEFAULT_STAGES

    for name, tail in (("musicgen", "tokens"), ("acestep", "latents")):
        expected = [s for s in ORDER if s not in {"tokens", "latents"} - {tail}]
        stages = list(OmegaConf.load(repo_root / f"pipelines/{name}.yaml").stages)
        assert stages == expected, f"pipelines/{name}.yaml: stages {stages} differ from the registry's {expected}"
        if name == "musicgen":
            assert DEFAULT_STAGES == expected


# -- windows ----------------------------------------------------------------------------------------


def test_exact_lengths_give_full_windows():
    from tunekit.prep.window import window_starts

    rate = 44100
    win, mn = 30 * rate, 10 * rate
    assert window_starts(60 * rate, win, win, mn) == [0, win]  # 60.000 s -> exactly 2 full windows
    assert window_starts(30 * rate, win, win, mn) == [0]  # 30.000 s -> 1
    assert window_starts(70 * rate, win, win, mn) == [0, win, 2 * win]  # final 10.000 s partial kept
    assert window_starts(70 * rate - 1, win, win, mn) == [0, win]  # 9.99998 s partial dropped
    assert window_starts(9 * rate, win, win, mn) == []
    assert window_starts(60 * rate, win, win // 2, mn) == [0, win // 2, win, 3 * win // 2]


def test_aligned_starts_follow_beats():
    from tunekit.prep.window import aligned_starts

    beats = np.array([100, 500, 900, 1300, 1700, 2100, 2500])
    assert aligned_starts(3000, hop=1000, min_frames=400, beats=beats) == [100, 1300, 2500]
    assert aligned_starts(3000, hop=1000, min_frames=1000, beats=beats) == [100, 1300]


# -- splits -----------------------------------------------------------------------------------------


def _kept(n: int) -> list[TrackRow]:
    rows = []
    for i in range(n):
        w = WindowRow(f"t{i}_0000", f"t{i}", 0, f"audio/t{i}.flac", 0.0, 30.0, 0.0, 0, 30, 1, license="CC0-1.0")
        rows.append(TrackRow(track_id=f"t{i}", source_path=f"{i:03d}.wav", content_hash=f"{i:064x}", windows=[w]))
    return rows


def test_splits_are_deterministic_by_track_and_shared_by_windows():
    from tunekit.prep.split import assign_splits

    ctx = StageContext("/c", "/o", "/o/.cache")
    rows = _kept(200)
    a = assign_splits(rows, SplitConfig(), ctx)
    b = assign_splits(list(reversed(rows)), SplitConfig(), ctx)
    assert {r.track_id: r.split for r in a} == {r.track_id: r.split for r in b}
    counts = {s: sum(r.split == s for r in a) for s in ("train", "valid", "test")}
    assert 10 <= counts["valid"] <= 30 and 10 <= counts["test"] <= 30, counts  # ~10% each of 200
    assert all(w.split == r.split for r in a for w in r.windows)
    other = assign_splits(rows, SplitConfig(seed=1), ctx)
    assert [r.split for r in other] != [r.split for r in a]


def test_three_tracks_always_have_a_train_a_valid_and_a_test_track():
    from tunekit.prep.split import assign_splits

    ctx = StageContext("/c", "/o", "/o/.cache")
    for n in (3, 4, 5, 7):
        for offset in range(40):
            rows = _kept(n + offset)[offset:]
            out = assign_splits(rows, SplitConfig(), ctx)
            splits = [r.split for r in out]
            assert {"train", "valid", "test"} <= set(splits), (n, offset, splits)
            # row order does not change the assignment
            back = assign_splits(list(reversed(rows)), SplitConfig(), ctx)
            assert {r.track_id: r.split for r in back} == {r.track_id: r.split for r in out}


def test_a_split_with_zero_fraction_stays_empty_and_two_tracks_get_no_guarantee():
    from tunekit.prep.split import assign_splits

    ctx = StageContext("/c", "/o", "/o/.cache")
    for offset in range(20):
        out = assign_splits(_kept(5 + offset)[offset:], SplitConfig(test_fraction=0.0), ctx)
        splits = [r.split for r in out]
        assert "test" not in splits and {"train", "valid"} <= set(splits), splits
    two = assign_splits(_kept(2), SplitConfig(valid_fraction=0.0, test_fraction=0.0), ctx)
    assert [r.split for r in two] == ["train", "train"]



def test_a_datasets_own_held_out_splits_are_kept():
    """Rows of a dataset's validation/test splits stay held out (never trained on); when the dataset holds out
    both, its other rows train; a held-out split it lacks is drawn from its train rows; a dataset with a train
    split only, or split.keep_source=false, is bucketed like files."""
    from tunekit.prep.split import assign_splits

    ctx = StageContext("/c", "/o", "/o/.cache")
    names = ["train"] * 20 + ["validation", "dev", "test", "TEST"] + ["unlabeled"] * 40
    rows = _kept(len(names))
    for row, name in zip(rows, names):
        row.extra["hf_split"] = name
    out = assign_splits(rows, SplitConfig(), ctx)
    assert [r.split for r in out] == ["train"] * 20 + ["valid", "valid", "test", "test"] + ["train"] * 40
    assert all(w.split == r.split for r in out for w in r.windows)

    for held in ("test", "eval"):  # train + test (or eval): test stays, valid comes from the train rows
        two = _kept(30)
        for i, row in enumerate(two):
            row.extra["hf_split"] = held if i < 4 else "train"
        got = [r.split for r in assign_splits(two, SplitConfig(), ctx)]
        assert got[:4] == ["test"] * 4 and "test" not in got[4:] and 1 <= got.count("valid") <= 8, (held, got)
    small = _kept(4)  # three train rows and a test row still give a valid track
    for i, row in enumerate(small):
        row.extra["hf_split"] = "test" if i == 0 else "train"
    assert sorted(r.split for r in assign_splits(small, SplitConfig(), ctx)) == ["test", "train", "train", "valid"]
    ignored = assign_splits(rows, SplitConfig(keep_source=False), ctx)
    plain = assign_splits(_kept(len(names)), SplitConfig(), ctx)
    assert [r.split for r in ignored] == [r.split for r in plain]
    only_train = _kept(30)
    for row in only_train:
        row.extra["hf_split"] = "train"
    assert [r.split for r in assign_splits(only_train, SplitConfig(), ctx)] == [
        r.split for r in assign_splits(_kept(30), SplitConfig(), ctx)]

# -- loudness meter ---------------------------------------------------------------------------------


def test_streaming_meter_matches_whole_array_measures():
    from tunekit.audio.loudness import integrated_lufs, true_peak_dbtp
    from tunekit.prep.normalize import StreamingMeter

    rng = np.random.default_rng(3)
    rate = 44100
    x = music(4.3, rate, seed=4)
    x[:, : rate // 2] = 0.0  # leading silence exercises the gates
    x[:, 3 * rate : 3 * rate + 5] += rng.standard_normal((2, 5)).astype(np.float32)  # an inter-sample peak
    for block in (4410, 12345, 1_000_000):
        meter = StreamingMeter(rate, 2)
        for s in range(0, x.shape[1], block):
            meter.feed(x[:, s : s + block])
        assert meter.integrated() == pytest.approx(integrated_lufs(x, rate), abs=1e-6)
        assert meter.true_peak_dbtp() == pytest.approx(true_peak_dbtp(x, rate), abs=1e-6)


def test_streaming_meter_reference_signal():
    from tunekit.prep.normalize import StreamingMeter

    # EBU Tech 3341: stereo 1 kHz sine at -23 dBFS peak per channel -> -23.0 LUFS.
    rate = 48000
    t = np.arange(20 * rate) / rate
    x = np.tile(10 ** (-23 / 20) * np.sin(2 * np.pi * 1000 * t), (2, 1))
    meter = StreamingMeter(rate, 2)
    for s in range(0, x.shape[1], 48000):
        meter.feed(x[:, s : s + 48000])
    assert meter.integrated() == pytest.approx(-23.0, abs=0.1)
    assert meter.true_peak_dbtp() == pytest.approx(-23.0, abs=0.2)


# -- audio fingerprints and downmix -----------------------------------------------------------------


def test_audio_fingerprint_matches_reencodings_and_separates_tracks(tmp_path):
    import soundfile as sf

    from tunekit.prep.audio_fingerprint import bit_error_rate, compute

    a = music(20, 44100, seed=10)
    write(tmp_path / "a.mp3", a, 44100, format="MP3", bitrate_mode="CONSTANT", compression_level=0.3)
    mp3, rate = sf.read(str(tmp_path / "a.mp3"), dtype="float32", always_2d=True)
    import soxr

    fa = compute(a, 44100)
    assert bit_error_rate(fa, compute(a * 0.3, 44100)) == 0.0  # gain
    assert bit_error_rate(fa, compute(soxr.resample(a.T, 44100, 48000).T, 48000)) < 0.1  # resampled copy
    assert bit_error_rate(fa, compute(mp3.T, rate)) < 0.2  # lossy copy
    assert bit_error_rate(fa, compute(music(20, 44100, seed=11), 44100)) > 0.35  # another track
    silence = np.zeros((2, 20 * 44100), np.float32)
    assert bit_error_rate(compute(silence, 44100), compute(silence, 44100)) == 1.0  # silence never matches
    from tunekit.prep.audio_fingerprint import candidate_pairs

    others = [compute(music(20, 44100, seed=s), 44100) for s in range(12, 18)]
    prints = [fa, compute(mp3.T, rate), None, compute(soxr.resample(a.T, 44100, 32000).T, 32000), *others]
    assert candidate_pairs(prints) == {(0, 1), (0, 3), (1, 3)}  # the index finds the copies and nothing else


def test_bs775_downmix():
    from tunekit.prep.decode import to_working_channels

    n = 10
    x = np.zeros((6, n), np.float32)  # 5.1: L R C LFE Ls Rs
    x[2] = 1.0  # centre
    x[3] = 1.0  # LFE is dropped
    y = to_working_channels(x, 2)
    assert np.allclose(y, np.sqrt(0.5))
    x = np.zeros((6, n), np.float32)
    x[4] = 1.0  # left surround goes left only
    y = to_working_channels(x, 2)
    assert np.allclose(y[0], np.sqrt(0.5)) and np.allclose(y[1], 0.0)
    mono = np.ones((1, n), np.float32)
    assert to_working_channels(mono, 2).shape == (2, n)


# -- cache ------------------------------------------------------------------------------------------


def test_cache_entry_is_a_miss_once_its_artifact_changes(tmp_path):
    from tunekit.prep.cache import StageCache, cached_sha256, stage_key

    cache = StageCache(tmp_path / ".cache", tmp_path)
    (tmp_path / "audio").mkdir()
    art = tmp_path / "audio" / "t.flac"
    art.write_bytes(b"one")
    key = stage_key("loudness", 1, {"target": -14}, "abc")
    assert key != stage_key("loudness", 1, {"target": -16}, "abc")
    assert key != stage_key("loudness", 2, {"target": -14}, "abc")
    cache.put("loudness", key, {"audio_path": "audio/t.flac", "gain_db": 1.0}, None, 0.1)
    assert cache.get("loudness", key)["update"]["gain_db"] == 1.0
    art.write_bytes(b"three")
    assert cache.get("loudness", key) is None
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    import hashlib

    assert cached_sha256(f, tmp_path / ".cache") == hashlib.sha256(b"hello").hexdigest()
    assert cached_sha256(f, tmp_path / ".cache", compute=False) is not None
    f.write_bytes(b"hello!")
    os.utime(f, ns=(1, 1))
    assert cached_sha256(f, tmp_path / ".cache", compute=False) is None


# -- licence policies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "policy", "allow_unknown", "kept"),
    [
        ("CC0-1.0", "commercial", False, True),
        ("https://creativecommons.org/licenses/by-sa/4.0/", "commercial", False, True),
        ("Attribution-NonCommercial-ShareAlike 3.0 International", "commercial", False, False),
        ("Attribution-NonCommercial-ShareAlike 3.0 International", "open", False, True),
        ("CC BY-ND 4.0", "open", False, False),
        ("CC BY-ND 4.0", "any", False, True),
        ("All rights reserved", "any", False, True),
        ("All rights reserved", "open", False, False),
        (None, "any", False, False),
        (None, "open", True, True),
    ],
)
def test_licence_stage_applies_each_policy(raw, policy, allow_unknown, kept):
    from tunekit.corpus.license import normalize_license
    from tunekit.prep.licensing import check_license

    info = normalize_license(raw)
    row = TrackRow("t", "t.wav", license=info.spdx, license_raw=raw, license_family=info.family)
    out = check_license(
        row, {"license_policy": policy, "allow_unknown_license": allow_unknown}, StageContext("/", "/", "/")
    )
    assert isinstance(out, TrackRow) == kept, out
    if raw is None and not kept:
        assert out.reason == "license_unknown"


# -- executors --------------------------------------------------------------------------------------


def _square_or_die(x: int) -> int:
    if x == 3:
        os._exit(1)  # a decoder crash takes the whole worker process down
    return x * x


def test_local_executor_survives_a_crashing_worker():
    from tunekit.prep.executors import LocalExecutor, WorkerCrash

    with LocalExecutor(2) as ex:
        results = dict(ex.imap_unordered(_square_or_die, list(range(8))))
    assert sorted(results) == list(range(8))
    assert isinstance(results[3], WorkerCrash)
    assert all(results[i] == i * i for i in range(8) if i != 3)


def test_stage_errors_become_failed_rows_not_exceptions(tmp_path):
    from tunekit.prep.engine import Engine
    from tunekit.prep.executors import SerialExecutor
    from tunekit.prep.registry import StageSpec

    registry = {"boom": StageSpec("boom", "test_prep_units:_boom_stage", ("window",), cache=False)}
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
    engine = Engine(PrepConfig(), ctx, SerialExecutor, registry=registry)
    rows = [TrackRow("a", "a.wav"), TrackRow("b", "b.wav"), TrackRow("c", "c.wav")]
    out = engine.run(rows, ["boom"])
    assert [r.status for r in out] == [OK, "failed", "rejected"]
    assert out[1].reason == "error:ValueError" and "bad file b.wav" in (out[1].reason_detail or "")
    assert out[2].reason == "too_quiet"
    assert engine.stats["boom"].failed == 1 and engine.stats["boom"].rejected == 1


def _boom_stage(row: TrackRow, section, ctx) -> TrackRow | Rejection:
    if row.source_path == "b.wav":
        raise ValueError("bad file b.wav")
    if row.source_path == "c.wav":
        return Rejection("too_quiet", "")
    return dataclasses.replace(row, title="seen")


_seen: list[str] = []


def _note_order(row: TrackRow, section, ctx) -> TrackRow:
    _seen.append(row.source_path)
    return dataclasses.replace(row, title=f"done {row.source_path}")


def test_longest_audio_runs_first_and_rows_keep_their_order(tmp_path):
    """A long track submitted last would run alone at the end of a stage; the engine starts it first."""
    from tunekit.prep.engine import Engine
    from tunekit.prep.executors import SerialExecutor
    from tunekit.prep.registry import StageSpec

    registry = {"note": StageSpec("note", "test_prep_units:_note_order", ("window",), cache=False)}
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
    rows = [TrackRow(t, f"{t}.wav", duration_s=d) for t, d in (("a", 10.0), ("b", 300.0), ("c", 45.0), ("d", 0.0))]
    _seen.clear()
    out = Engine(PrepConfig(), ctx, SerialExecutor, registry=registry).run(rows, ["note"])
    assert _seen == ["b.wav", "c.wav", "a.wav", "d.wav"]
    assert [r.title for r in out] == ["done a.wav", "done b.wav", "done c.wav", "done d.wav"]


def _label_windows(rows: list[WindowRow], section, ctx) -> list[WindowRow | Rejection]:
    out: list[WindowRow | Rejection] = []
    for w in rows:
        if w.window_index == 1:
            out.append(Rejection("unlabelled", "second window"))
        else:
            out.append(dataclasses.replace(w, extra={**w.extra, "label": f"{w.window_id}:{section.seconds:g}"}))
    return out


def test_batched_window_stage_runs_caches_and_drops_rejected_windows(tmp_path):
    """The contract model stages (tag, caption, tokens) plug into: batches of windows, cached by window."""
    from tunekit.prep.engine import Engine
    from tunekit.prep.executors import SerialExecutor
    from tunekit.prep.registry import StageSpec

    registry = {"label": StageSpec("label", "test_prep_units:_label_windows", ("window",), kind="window", batch_size=2)}
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))

    def rows() -> list[TrackRow]:
        out = []
        for t in range(2):
            ws = [
                WindowRow(
                    f"t{t}_{i:04d}", f"t{t}", i, "a.flac", i * 30.0, 30.0, i * 30.0, i, 1, 1, audio_key=f"t{t}w{i}"
                )
                for i in range(3)
            ]
            out.append(TrackRow(f"t{t}", f"t{t}.wav", windows=ws))
        return out

    for attempt in range(2):
        engine = Engine(PrepConfig(), ctx, SerialExecutor, registry=registry)
        out = engine.run(rows(), ["label"])
        stats = engine.stats["label"]
        assert [w.window_index for w in out[0].windows] == [0, 2]
        assert out[1].windows[1].extra["label"] == "t1_0002:30"
        assert stats.rejected == 2 and engine.window_rejects["label:unlabelled"] == 2
        assert (stats.computed, stats.cached) == ((6, 0) if attempt == 0 else (0, 6))


def _broken_windows(rows: list[WindowRow], section, ctx) -> list[WindowRow | Rejection]:
    """Raises for every window of track t0, rejects every window of t1, passes t2's."""
    if any(w.track_id == "t0" for w in rows):
        raise ValueError(f"codec exploded on {rows[0].window_id}")
    return [Rejection("unlabelled", "") if w.track_id == "t1" else w for w in rows]


def _three_tracks_of_windows() -> list[TrackRow]:
    return [
        TrackRow(
            f"t{t}",
            f"t{t}.wav",
            windows=[
                WindowRow(f"t{t}_{i:04d}", f"t{t}", i, "a.flac", i * 30.0, 30.0, i * 30.0, i, 1, 1, audio_key=f"{t}{i}")
                for i in range(3)
            ],
        )
        for t in range(3)
    ]


def test_a_track_that_loses_every_window_is_failed_or_rejected_never_ok(tmp_path):
    """A window stage that fails every window of a track fails the track (it must not stay `ok` with
    nothing to train on); one that rejects them all rejects it. Failures are counted per stage."""
    from tunekit.prep.engine import Engine
    from tunekit.prep.executors import SerialExecutor
    from tunekit.prep.registry import StageSpec

    spec = StageSpec("label", "test_prep_units:_broken_windows", ("window",), kind="window", batch_size=3)
    registry = {"label": spec}
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
    engine = Engine(PrepConfig(), ctx, SerialExecutor, registry=registry)
    out = engine.run(_three_tracks_of_windows(), ["label"])
    assert [(r.status, r.failed_stage, len(r.windows)) for r in out] == [
        ("failed", "label", 0),
        ("rejected", "label", 0),
        (OK, None, 3),
    ]
    assert out[0].reason == "error:ValueError" and "3 of 3 windows failed" in (out[0].reason_detail or "")
    assert out[1].reason == "no_windows" and "unlabelled" in (out[1].reason_detail or "")
    stats = engine.stats["label"]
    assert (stats.rows, stats.failed, stats.rejected) == (9, 3, 3)
    assert stats.first_error == "ValueError: codec exploded on t0_0000 (window t0_0000)"

    # 3 of 9 windows failed: within max_failed_fraction=0.5, beyond 0.3.
    assert engine.failures(0.5) == []
    assert engine.failures(0.3) == [
        "stage label failed for 3 of 9 windows (more than max_failed_fraction=0.3); "
        "first error: ValueError: codec exploded on t0_0000 (window t0_0000)"
    ]


def test_a_stage_that_fails_every_row_fails_whatever_the_threshold(tmp_path):
    from tunekit.prep.engine import Engine
    from tunekit.prep.executors import SerialExecutor
    from tunekit.prep.registry import StageSpec

    registry = {"boom": StageSpec("boom", "test_prep_units:_boom_stage", ("window",), cache=False)}
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
    engine = Engine(PrepConfig(), ctx, SerialExecutor, registry=registry)
    engine.run([TrackRow("b", "b.wav")], ["boom"])
    (line,) = engine.failures(1.0)
    assert line == "stage boom failed for 1 of 1 tracks (all of them); first error: ValueError: bad file b.wav (b.wav)"


_ran: list[str] = []


def _record_run(row: TrackRow, section, ctx) -> TrackRow:
    _ran.append(row.source_path)
    return row


def _two_problems(section, models) -> list[str]:
    return ["window.seconds=30 is longer than the model's 10 s", "window.align: the model has no beats"]


def _raises_config_error(section, models) -> list[str]:
    from tunekit.errors import ConfigError

    raise ConfigError("window.min_seconds: the model needs at least 1 s")


def test_model_checks_report_every_problem_before_any_stage_runs(tmp_path):
    from tunekit.errors import ConfigErrors
    from tunekit.prep.engine import Engine
    from tunekit.prep.executors import SerialExecutor
    from tunekit.prep.registry import StageSpec

    fn = "test_prep_units:_record_run"
    registry = {
        "first": StageSpec("first", fn, ("window",), cache=False),
        "a": StageSpec("a", fn, ("window",), cache=False, preflight="test_prep_units:_two_problems"),
        "b": StageSpec("b", fn, ("window",), cache=False, preflight="test_prep_units:_raises_config_error"),
    }
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
    _ran.clear()
    with pytest.raises(ConfigErrors) as err:
        Engine(PrepConfig(), ctx, SerialExecutor, registry=registry).run([TrackRow("a", "a.wav")], ["first", "a", "b"])
    assert err.value.problems == [*_two_problems(None, None), "window.min_seconds: the model needs at least 1 s"]
    assert _ran == []  # not even the first stage ran


def _kick_track(seconds: float, rate: int, first: float, period: float, accent_every: int = 4) -> np.ndarray:
    """Decaying low thumps every `period` s from `first`; every `accent_every`-th one twice as loud."""
    x = np.zeros(int(seconds * rate), np.float32)
    t = np.arange(int(0.15 * rate)) / rate
    kick = (np.sin(2 * np.pi * 60 * t) + 0.3 * np.random.default_rng(0).standard_normal(t.size)) * np.exp(-t * 30)
    for i, start in enumerate(np.arange(first, seconds - 0.2, period)):
        s = int(round(start * rate))
        x[s : s + kick.size] += (1.0 if i % accent_every == 0 else 0.4) * kick
    return np.tile(0.5 * x / np.abs(x).max(), (2, 1))


@pytest.mark.parametrize("align", ["beats", "downbeats"])
def test_windows_start_on_detected_beats(tmp_path, align):
    from tunekit.prep.config import WindowConfig
    from tunekit.prep.window import window_track

    rate, first, period = 44100, 0.37, 0.5  # 120 BPM, accents (downbeats) every 2 s from 0.37 s
    write(tmp_path / "audio" / "t.flac", _kick_track(30.0, rate, first, period), rate, "PCM_24")
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
    row = TrackRow("t", "t.wav", audio_path="audio/t.flac", audio_key="k", license="CC0-1.0")
    cfg = WindowConfig(seconds=5.0, min_seconds=2.0, align=align)
    out = window_track(row, cfg, ctx)
    starts = [w.offset_s for w in out.windows]
    assert len(starts) >= 4 and abs(out.extra["tempo_bpm"] - 120) < 3
    grid = 4 * period if align == "downbeats" else period
    for a, b in zip(starts, starts[1:]):
        assert b - a >= cfg.seconds - 1e-9  # one hop at least
    for s in starts:
        phase = (s - first) % grid
        assert min(phase, grid - phase) < 0.05, (align, s)  # within two onset frames (46 ms) of a (down)beat


def test_formats_without_a_decoder_are_reported_as_undecodable(tmp_path, monkeypatch):
    from test_prep_helpers import ffmpeg_convert

    from tunekit.prep import sources
    from tunekit.prep.config import IngestConfig
    from tunekit.prep.ingest import ingest_track

    src = write(tmp_path / "src.wav", music(2.0, 44100, seed=1), 44100, "PCM_16")
    ffmpeg_convert(src, tmp_path / "corpus" / "song.m4a", "-c:a", "aac")
    ctx = StageContext(str(tmp_path / "corpus"), str(tmp_path / "out"), str(tmp_path / "cache"))
    row = TrackRow("t", "song.m4a")
    monkeypatch.setattr(sources, "ffmpeg_exe", lambda: None)
    out = ingest_track(row, IngestConfig(), ctx)
    assert isinstance(out, Rejection) and out.reason == "undecodable" and "ffmpeg" in out.detail
    monkeypatch.undo()
    ok = ingest_track(row, IngestConfig(), ctx)  # not cached: once a decoder exists the file is read
    assert isinstance(ok, TrackRow) and ok.decoder == "ffmpeg" and ok.sample_rate_in == 44100


def test_silent_windows_are_dropped_and_counted(tmp_path):
    from tunekit.prep.config import WindowConfig
    from tunekit.prep.window import window_track

    rate = 44100
    gap = np.zeros((2, 12 * rate), np.float32)
    audio = np.concatenate([music(12.0, rate, seed=1), gap, music(12.0, rate, seed=2)], axis=1)
    write(tmp_path / "audio" / "t.flac", audio, rate, "PCM_24")
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
    row = TrackRow("t", "t.wav", audio_path="audio/t.flac", audio_key="k")
    out = window_track(row, WindowConfig(seconds=12.0, min_seconds=5.0), ctx)
    assert [w.window_index for w in out.windows] == [0, 2] and out.windows_silent == 1
    assert [w.offset_frames for w in out.windows] == [0, 24 * rate]
    assert len({w.audio_key for w in out.windows}) == 2


def test_a_model_loaded_from_one_cache_is_not_reused_for_another(tmp_path, monkeypatch):
    """The in-process model caches of the model stages key on the cache folder the settings resolve to now, so
    a codec loaded while $TUNEKIT_CACHE named one folder is not served once it names another."""
    import tunekit.prep.tokens as tok
    from tunekit.models.config import ModelsConfig
    from tunekit.prep.rows import models_root
    from tunekit.prep.tokens import TokensConfig

    loads: list[str] = []
    monkeypatch.setattr(tok, "_loaded", {})
    monkeypatch.setattr("tunekit.models.encodec.load_encodec",
                        lambda name, *, tiny, cache_dir, device: loads.append(os.environ["TUNEKIT_CACHE"]) or loads[-1])
    models, cfg = ModelsConfig(tiny=True), TokensConfig()
    for folder in ("a", "a", "b"):
        monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / folder))
        assert tok._codec(cfg, models) == str(tmp_path / folder)
    assert loads == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert models_root(ModelsConfig(tiny=True, cache_dir=str(tmp_path / "c"))) == str((tmp_path / "c").resolve())
