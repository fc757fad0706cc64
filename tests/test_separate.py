"""Demucs separation: streamed segments equal the library's whole-track result; the prep stage."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunekit.prep import separate as sep
from tunekit.prep.separate import SeparateConfig, separate, separate_file, separate_track

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 44100
SEGMENT = Fraction(1)  # a 1 s Demucs segment keeps each forward pass of the tiny model cheap


@pytest.fixture(scope="module")
def model():
    """The tiny htdemucs bag (real HTDemucs class, random weights) with a 1 s segment, as `--segment 1` sets it."""
    from tunekit.models.demucs import load_demucs

    bag = load_demucs("htdemucs", tiny=True)
    for sub in bag.models:
        sub.segment = SEGMENT
    return bag


def _mix(seconds: float, seed: int = 0, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 331 * t) * (t % 0.5 < 0.25)
    x = np.stack([tone, 0.8 * tone])[:channels] + 0.05 * rng.standard_normal((channels, t.size))
    return x.astype(np.float32)


def _library_stems(model, mix: np.ndarray, overlap: float, shifts: int = 0) -> np.ndarray:
    """demucs's own whole-track path: standardise, apply_model(split=True), undo (as demucs.api does)."""
    import torch
    from demucs.apply import apply_model

    wav = torch.from_numpy(mix)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.no_grad():
        out = apply_model(model, ((wav - mean) / std)[None], shifts=shifts, split=True, overlap=overlap)[0]
    return (out * std + mean).numpy()


def test_streamed_segments_equal_whole_track_apply_model(model, tmp_path: Path) -> None:
    mix = _mix(4.3)
    stems = _library_stems(model, mix, overlap=0.25)
    vocals_ref = stems[model.sources.index("vocals")]
    others_ref = np.delete(stems, model.sources.index("vocals"), axis=0).sum(axis=0)
    assert np.abs(vocals_ref).max() > 1e-3  # the tiny model really outputs something

    # Batches of 1 and 3 segments flush the rolling buffer at different points; both equal the reference up to
    # the rounding of other kernels (batch sizes, overlap-add order). This network's float32 output lies within
    # 4e-8 of a float64 evaluation, also with MKL, oneDNN and ATen forced onto their generic code paths; two
    # evaluations differ by at most the sum of their errors, so 1e-6 (13·eps32 of the mix's 0.65 peak) leaves
    # a factor of ten for kernels that round worse, while a misplaced or misweighted segment shows at the
    # stems' own scale (~1e-2).
    one = separate(mix, model, SeparateConfig(batch_segments=1))
    three = separate(mix, model, SeparateConfig(batch_segments=3, instrumental="sum"))
    np.testing.assert_allclose(one.vocals, vocals_ref, atol=1e-6)
    np.testing.assert_allclose(three.vocals, vocals_ref, atol=1e-6)
    # subtract: instrumental + vocals is the mix; sum: the non-vocal stems added up.
    np.testing.assert_allclose(one.instrumental + one.vocals, mix, atol=1e-6)
    np.testing.assert_allclose(three.instrumental, others_ref, atol=1e-5)

    # The file-to-file stream writes the same instrumental as float WAV.
    src = tmp_path / "mix.wav"
    sf.write(src, mix.T, RATE, subtype="FLOAT")
    res = separate_file(src, tmp_path / "inst.wav", model, SeparateConfig(batch_segments=2),
                        vocals_path=tmp_path / "voc.wav")
    inst, rate = sf.read(tmp_path / "inst.wav", dtype="float32", always_2d=True)
    voc, _ = sf.read(tmp_path / "voc.wav", dtype="float32", always_2d=True)
    assert rate == RATE and inst.shape == mix.T.shape
    np.testing.assert_allclose(voc.T, vocals_ref, atol=1e-6)
    np.testing.assert_allclose(inst.T, mix - vocals_ref, atol=1e-6)

    # vocal_ratio_db is the vocal energy relative to the mix.
    expected = 10 * np.log10(np.sum(vocals_ref.astype(np.float64) ** 2) / np.sum(mix.astype(np.float64) ** 2))
    assert one.vocal_ratio_db == pytest.approx(expected, abs=1e-4)
    assert res.vocal_ratio_db == pytest.approx(expected, abs=1e-4)


def test_shifts_match_library_with_same_offsets_and_are_deterministic(model, monkeypatch) -> None:
    import demucs.apply

    mix = _mix(1.6, seed=1)
    cfg = SeparateConfig(shifts=2, overlap=0.25, batch_segments=4)
    # The library draws each shift with random.randint(0, max_shift); give it the offsets tunekit draws.
    monkeypatch.setattr(demucs.apply, "random", random.Random(sep._SHIFT_SEED))
    stems = _library_stems(model, mix, overlap=0.25, shifts=2)
    first = separate(mix, model, cfg)
    np.testing.assert_allclose(first.vocals, stems[model.sources.index("vocals")], atol=1e-6)
    assert np.array_equal(separate(mix, model, cfg).vocals, first.vocals)  # a rerun of the same code: bitwise


def test_deterministic_without_shifts_and_mono_keeps_its_shape(model) -> None:
    mix = _mix(2.0, seed=2)
    a = separate(mix, model, SeparateConfig(batch_segments=2))
    b = separate(mix, model, SeparateConfig(batch_segments=2))
    assert np.array_equal(a.vocals, b.vocals) and np.array_equal(a.instrumental, b.instrumental)
    # Another batch size only changes float rounding inside the batched convolutions (see the first test).
    np.testing.assert_allclose(separate(mix, model, SeparateConfig(batch_segments=1)).vocals, a.vocals, atol=1e-6)
    mono = separate(mix[:1], model, SeparateConfig(), keep_vocals=False)
    assert mono.instrumental.shape == (1, mix.shape[1]) and mono.vocals is None


def test_silence_and_bad_input(model) -> None:
    silent = separate(np.zeros((2, RATE), np.float32), model, SeparateConfig())
    assert silent.vocal_ratio_db is None and np.isfinite(silent.instrumental).all()
    with pytest.raises(ValueError, match="channels, samples"):
        separate(np.zeros(10, np.float32), model, SeparateConfig())
    with pytest.raises(ValueError, match="empty"):
        separate(np.zeros((2, 0), np.float32), model, SeparateConfig())


def test_config_problems_name_their_keys(model) -> None:
    bad = SeparateConfig(shifts=-1, overlap=1.0, batch_segments=-1, instrumental="mix", segment_seconds=0)
    problems = bad.problems("separate")
    for key in ("shifts", "overlap", "batch_segments", "instrumental", "segment_seconds"):
        assert any(p.startswith(f"separate.{key}") for p in problems), key
    assert SeparateConfig().problems() == []
    from tunekit.errors import ConfigError

    with pytest.raises(ConfigError, match="segment_seconds"):
        separate(_mix(1.0), model, SeparateConfig(segment_seconds=2.0))  # longer than the model's 1 s


# -- the prep stage -----------------------------------------------------------------------------


def _ctx(tmp_path: Path, key: str = "ab" * 20):
    from tunekit.models.config import ModelsConfig
    from tunekit.prep.rows import StageContext

    return StageContext(corpus_dir=str(tmp_path), out_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
                        stage="separate", key=key, models=ModelsConfig(tiny=True))


def _track(tmp_path: Path, mix: np.ndarray, rate: int = RATE, instrumental: bool | None = None):
    from tunekit.prep.rows import TrackRow

    path = tmp_path / f"work_{rate}.wav"
    sf.write(path, mix.T, rate, subtype="FLOAT")
    return TrackRow(track_id="trk_000000000001", source_path="a.wav", work_path=str(path), work_rate=rate,
                    work_frames=mix.shape[1], duration_s=mix.shape[1] / rate, instrumental=instrumental)


@pytest.fixture
def stage_model(model, monkeypatch):
    """The separator the stage loads for `models=tiny` is the module's tiny model (1 s segments)."""
    from tunekit.models.config import ModelsConfig
    from tunekit.prep.rows import models_root

    cfg = SeparateConfig()
    tiny = ModelsConfig(tiny=True)
    monkeypatch.setitem(sep._loaded, (cfg.model, cfg.repo, True, models_root(tiny), "cpu"), model)
    return model


def test_stage_separates_a_short_track_and_records_columns(stage_model, tmp_path: Path) -> None:
    mix = _mix(12.0, seed=3)  # no length-based shortcut: 12 s is separated like any other track
    row = _track(tmp_path, mix)
    out = separate_track(row, SeparateConfig(device="cpu"), _ctx(tmp_path))
    assert out.extra["separated"] is True and out.extra["separation_model"] == "htdemucs"
    assert out.work_path != row.work_path and Path(out.work_path).is_file()
    inst, rate = sf.read(out.work_path, dtype="float32", always_2d=True)
    assert rate == RATE and inst.shape == mix.T.shape
    vocals = mix - inst.T
    assert np.abs(vocals).max() > 1e-3  # the audio changed: vocals were removed
    expected = 10 * np.log10(np.sum(vocals.astype(np.float64) ** 2) / np.sum(mix.astype(np.float64) ** 2))
    assert out.extra["vocal_ratio_db"] == pytest.approx(expected, abs=1e-3)


def test_stage_off_skip_instrumental_and_vocal_policy(stage_model, tmp_path: Path) -> None:
    from tunekit.prep.rows import Rejection

    mix = _mix(3.0, seed=4)
    row = _track(tmp_path, mix, instrumental=True)
    for cfg in (SeparateConfig(enabled=False), SeparateConfig(skip_instrumental=True, device="cpu")):
        out = separate_track(row, cfg, _ctx(tmp_path))
        assert out.work_path == row.work_path
        assert out.extra == {"separated": False, "vocal_ratio_db": None, "separation_model": None}
    # Without skip_instrumental, metadata does not stop separation.
    out = separate_track(row, SeparateConfig(device="cpu"), _ctx(tmp_path, key="cd" * 20))
    assert out.extra["separated"] is True
    ratio = out.extra["vocal_ratio_db"]
    rejected = separate_track(row, SeparateConfig(device="cpu", max_vocal_ratio_db=ratio - 1.0),
                              _ctx(tmp_path, key="ef" * 20))
    assert isinstance(rejected, Rejection) and rejected.reason == "mostly_vocals"
    kept = separate_track(row, SeparateConfig(device="cpu", max_vocal_ratio_db=ratio + 1.0),
                          _ctx(tmp_path, key="01" * 20))
    assert kept.extra["separated"] is True


def test_stage_resamples_other_working_rates(stage_model, tmp_path: Path) -> None:
    import soxr

    rate = 32000
    mix44 = _mix(2.0, seed=5)
    mix = soxr.resample(mix44.T, RATE, rate).T.astype(np.float32)
    out = separate_track(_track(tmp_path, mix, rate=rate), SeparateConfig(device="cpu"), _ctx(tmp_path))
    inst, got_rate = sf.read(out.work_path, dtype="float32", always_2d=True)
    assert got_rate == rate and inst.shape == mix.T.shape
    # Same separation as at the model's rate, resampled back (away from the edges, where the resampler rings).
    ref = separate(soxr.resample(mix.T, rate, RATE).T.astype(np.float32), stage_model, SeparateConfig())
    ref_inst = soxr.resample(ref.instrumental.T, RATE, rate)
    np.testing.assert_allclose(inst[2000:-2000], ref_inst[2000:-2000], atol=1e-4)


def test_model_digest_follows_the_model_files(tmp_path: Path) -> None:
    from tunekit.models.config import ModelsConfig

    tiny = ModelsConfig(tiny=True)
    a = sep.separate_model_digest(SeparateConfig(), tiny)
    assert a and a == sep.separate_model_digest({"model": "htdemucs", "enabled": True}, tiny)
    assert sep.separate_model_digest(SeparateConfig(model="htdemucs_6s"), tiny) != a
    assert sep.separate_model_digest(SeparateConfig(enabled=False), tiny) == ""
