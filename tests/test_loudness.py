"""Loudness, true peak and normalisation, checked against pyloudnorm, reference tones and ffmpeg's ebur128."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from _numerics import EPS32, assert_close, reorder_rtol
from scipy import signal

from tunekit.audio import loudness as L
from tunekit.audio.loudness import (
    integrated_lufs,
    normalize_loudness,
    reference_meter_ffmpeg,
    sample_peak_dbfs,
    true_peak_dbtp,
)
from tunekit.errors import ConfigError


def _sine(freq: float, rate: int, seconds: float, dbfs: float = 0.0, channels: int = 1, phase: float = 0.0,
          fade: float = 0.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)
    if fade:
        n = int(fade * rate)
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return np.tile(x, (channels, 1))


def _music(seconds: float, rate: int, seed: int, tone_level: float, drum_level: float,
           drum_lowpass_hz: float | None = None) -> np.ndarray:
    """Stereo chords plus kick and noise hits on every beat: a crest factor set by drum_level."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = np.zeros((2, n))
    for f in (110.0, 277.2, 330.0, 660.0, 1056.0):
        x += tone_level * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi, (2, 1))) * (
            1 + 0.3 * np.sin(2 * np.pi * 0.25 * t))
    hit = np.exp(-np.arange(int(0.2 * rate)) / (0.03 * rate))
    sos = signal.butter(4, drum_lowpass_hz, fs=rate, output="sos") if drum_lowpass_hz else None
    kick = np.sin(2 * np.pi * np.cumsum(np.linspace(150, 50, hit.size)) / rate) * hit
    for start in range(0, n - hit.size, int(0.5 * rate)):
        noise = rng.standard_normal(hit.size) * hit * 0.3
        if sos is not None:
            noise = signal.sosfilt(sos, noise)
        x[:, start:start + hit.size] += drum_level * (noise + kick)
    return x


# ---------------------------------------------------------------- integrated loudness


def test_integrated_lufs_equals_pyloudnorm() -> None:
    rng = np.random.default_rng(0)
    for rate, x in [
        (44100, rng.standard_normal((2, 44100 * 6)) * np.linspace(0.01, 0.3, 44100 * 6)),  # gating matters
        (48000, _music(5.0, 48000, 1, 0.02, 0.2)),
        (32000, rng.standard_normal((1, int(32000 * 0.45))) * 0.1),  # barely one gating block
        (22050, np.concatenate([np.zeros((2, 22050)), rng.standard_normal((2, 22050 * 3)) * 0.05], axis=1)),
    ]:
        expected = pyloudnorm.Meter(rate).integrated_loudness(x.T.copy())
        # float64 throughout: other filters and summation orders move the result by ~1e-10 LU, not 1e-6
        assert integrated_lufs(x, rate) == pytest.approx(expected, abs=1e-6)


def test_reference_tones() -> None:
    # pyloudnorm's "0 dBFS 1 kHz sine = -3.0523 LUFS" is the 997 Hz test tone at 44.1 kHz.
    assert integrated_lufs(_sine(997, 44100, 1.0), 44100) == pytest.approx(-3.0523, abs=5e-4)
    assert integrated_lufs(_sine(1000, 44100, 1.0), 44100) == pytest.approx(-3.0523, abs=0.01)
    # EBU Tech 3341: 1 kHz stereo sine at -23 / -33 dBFS reads -23.0 / -33.0 LUFS (+-0.1).
    assert integrated_lufs(_sine(1000, 48000, 20.0, -23.0, channels=2), 48000) == pytest.approx(-23.0, abs=0.1)
    assert integrated_lufs(_sine(1000, 48000, 20.0, -33.0, channels=2), 48000) == pytest.approx(-33.0, abs=0.1)


def test_silence_and_too_short() -> None:
    assert integrated_lufs(np.zeros((2, 48000)), 48000) == float("-inf")
    assert integrated_lufs(np.full((1, 48000), 1e-5), 48000) == float("-inf")  # under the -70 LUFS gate
    with pytest.raises(ValueError, match="400 ms"):
        integrated_lufs(np.ones((2, 19000)) * 0.1, 48000)
    y, result = normalize_loudness(np.zeros((2, 48000)), 48000, policy="limit")
    assert y.dtype == np.float32 and not y.any()
    assert result.lufs_in == result.lufs_out == float("-inf") and result.gain_db == 0.0


# ---------------------------------------------------------------- true peak


def test_inter_sample_peak() -> None:
    # A sine at fs/4 with 45 degree phase: every sample sits at 0.707 of the peak, which falls between samples.
    x = _sine(12000, 48000, 2.0, 0.0, phase=np.pi / 4, fade=0.05)
    assert sample_peak_dbfs(x) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_dbtp(x, 48000) == pytest.approx(0.0, abs=0.03)
    assert true_peak_dbtp(0.5 * x, 48000) == pytest.approx(-6.02, abs=0.03)
    assert true_peak_dbtp(x, 48000, oversample=1) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_dbtp(np.zeros((2, 100)), 48000) == float("-inf")


def test_true_peak_against_fine_interpolation() -> None:
    """Band-limited noise: our 4x/8x true peak against scipy's 32x polyphase resampling."""
    rng = np.random.default_rng(3)
    rate = 44100
    x = signal.sosfilt(signal.butter(8, 0.40 * rate, fs=rate, output="sos"), rng.standard_normal((2, rate * 2)))
    x *= 0.5 / np.abs(x).max()
    fine = 20 * np.log10(np.abs(signal.resample_poly(x, 32, 1, axis=1)).max())
    tp4, tp8 = true_peak_dbtp(x, rate), true_peak_dbtp(x, rate, oversample=8)
    assert sample_peak_dbfs(x) < tp4 <= tp8 <= fine + 0.02
    assert tp4 > fine - 0.3 and tp8 > fine - 0.08


def test_partial_envelope_matches_full() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 10_000)) * 0.3
    full = L.true_peak_envelope(x, 8)
    frames = np.zeros(-(-x.shape[1] // L._FRAME), dtype=bool)
    frames[[0, 3, 7, len(frames) - 1]] = True
    stale = full * 0.5
    part = L.true_peak_envelope(x, 8, frames, stale)
    mask = np.repeat(frames, L._FRAME)[: x.shape[1]]
    # Each interpolated value is one float32 sum of FRAME + 2K input samples times a filter column; the two
    # paths form it in matrix products of other sizes (other BLAS kernels), so they differ by at most
    # reorder_rtol(FRAME + 2K)·max|x|·‖column‖₁ (the max over phases and channels does not add to that).
    scale = np.abs(x).max() * np.abs(L._toeplitz(8)).sum(axis=0).max()
    rounding = reorder_rtol(L._FRAME + 2 * L.HALF_TAPS) * scale
    assert_close(part[:, mask], full[:, mask], atol=rounding, what="recomputed frames")
    np.testing.assert_array_equal(part[:, ~mask], stale[:, ~mask])
    # Row 1 (even phases of 8x) is the 4x measurement, up to the difference of the two interpolation filters
    # (‖h8 − h4‖₁·max|x|), their float32 coefficients (eps/2 each) and the rounding of the two products.
    design = np.abs(L._phase_filters(8)[1::2] - L._phase_filters(4)).sum(axis=1).max() * np.abs(x).max()
    assert_close(full[1], L.true_peak_envelope(x, 4)[0], atol=design + EPS32 * scale + rounding, what="8x vs 4x")


def test_limiter_gain_covers_every_sample() -> None:
    rng = np.random.default_rng(5)
    env = np.abs(rng.standard_normal(50_000)) * np.exp(rng.standard_normal(50_000))
    ceiling = 1.5
    gain = L._limiter_gain(env, ceiling, 44100, 2.0, 80.0)
    assert gain.max() <= 1.0 and (env * gain).max() <= ceiling * (1 + 1e-9)
    assert gain.min() < 0.2  # it did limit


# ---------------------------------------------------------------- normalisation against ffmpeg

# Drums are low-passed at 16 kHz like the MP3/AAC sources of real corpora. Full-band content up
# to Nyquist is the one case where meters disagree after heavy limiting (see the loudness module).
SIGNALS = {
    # name: (rate, audio, subtype written for ffmpeg)
    "quiet": lambda: (44100, _music(8.0, 44100, 10, 0.004, 0.003, 16000), "FLOAT"),
    "loud": lambda: (44100, np.tanh(3 * _music(8.0, 44100, 11, 0.15, 0.5, 16000)) * 0.95, "FLOAT"),
    "moderate_crest": lambda: (44100, _music(8.0, 44100, 14, 0.02, 0.15, 16000), "FLOAT"),
    "high_crest": lambda: (44100, _music(8.0, 44100, 12, 0.01, 0.3, 16000), "FLOAT"),
    "high_crest_48k_24bit": lambda: (48000, _music(8.0, 48000, 13, 0.01, 0.3, 14000), "PCM_24"),
}


@pytest.fixture(scope="module")
def normalized() -> Callable[[str, str], tuple[int, np.ndarray, str, np.ndarray, L.LoudnessResult]]:
    """(rate, input, subtype, output, result) of each signal normalised to -14 LUFS / -1 dBTP, computed once."""
    cache: dict[tuple[str, str], tuple] = {}
    made: dict[str, tuple[int, np.ndarray, str]] = {}

    def get(name: str, policy: str) -> tuple[int, np.ndarray, str, np.ndarray, L.LoudnessResult]:
        if name not in made:
            made[name] = SIGNALS[name]()
        if (name, policy) not in cache:
            rate, x, subtype = made[name]
            y, res = normalize_loudness(x.astype(np.float32), rate, -14.0, -1.0, policy=policy)
            cache[name, policy] = (rate, x, subtype, y, res)
        return cache[name, policy]

    return get


@pytest.mark.parametrize("policy", ["cap", "limit"])
@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_normalize_against_ffmpeg(normalized: Callable, name: str, policy: str, tmp_path: Path) -> None:
    target, ceiling = -14.0, -1.0
    rate, x, subtype, y, res = normalized(name, policy)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert res.loudness_policy == policy and res.lufs_in == pytest.approx(integrated_lufs(x, rate), abs=1e-3)

    # Our own meters agree with what the result records.
    assert integrated_lufs(y, rate) == pytest.approx(res.lufs_out, abs=0.01)
    assert true_peak_dbtp(y, rate) == pytest.approx(res.true_peak_dbtp, abs=0.01)
    assert res.true_peak_dbtp <= ceiling + 1e-6
    if res.capped:
        assert policy == "cap" and res.lufs_out < target
    elif res.limiter_gain_reduction_db > 0:
        assert policy == "limit" and res.lufs_out <= target + 0.05
    else:
        assert res.lufs_out == pytest.approx(target, abs=1e-6)

    # ffmpeg's ebur128, an independent meter, on the written file.
    path = tmp_path / f"{name}-{policy}.wav"
    sf.write(path, y.T, rate, subtype=subtype)
    ref = reference_meter_ffmpeg(path)
    assert ref["integrated_lufs"] == pytest.approx(res.lufs_out, abs=0.3)
    assert ref["true_peak_dbtp"] <= ceiling + 0.1


def test_cap_and_limit_on_a_high_crest_track(normalized: Callable) -> None:
    cap, lim = normalized("high_crest", "cap")[-1], normalized("high_crest", "limit")[-1]
    assert cap.capped and cap.gain_db == pytest.approx(-1.0 - cap.true_peak_in_dbtp)
    assert cap.lufs_out == pytest.approx(cap.lufs_in + cap.gain_db)
    assert not lim.capped and lim.limiter_gain_reduction_db > 3.0
    assert lim.limiter_gain_reduction_mean_db < lim.limiter_gain_reduction_db
    assert lim.lufs_out > cap.lufs_out + 3.0  # the limiter buys loudness the cap gives away
    assert lim.gain_db >= -14.0 - lim.lufs_in  # the loss to limiting was made up (partly)


def test_light_limiting_reaches_the_target(normalized: Callable) -> None:
    cap, lim = normalized("moderate_crest", "cap")[-1], normalized("moderate_crest", "limit")[-1]
    assert cap.capped and cap.lufs_out < -15.5  # the cap leaves it well under target
    assert 1.0 < lim.limiter_gain_reduction_db < 4.0
    assert lim.lufs_out == pytest.approx(-14.0, abs=0.2) and lim.true_peak_dbtp <= -1.0


def test_input_forms_and_bad_policy() -> None:
    rate = 16000
    x = _sine(440, rate, 1.0, -30.0)[0]
    y, res = normalize_loudness((x * 32767).astype(np.int16), rate, -20.0)  # integer PCM is scaled, not clipped
    assert y.dtype == np.float32 and y.shape == x.shape
    assert res.lufs_out == pytest.approx(-20.0, abs=1e-6)
    assert integrated_lufs(y, rate) == pytest.approx(-20.0, abs=0.01)
    with pytest.raises(ConfigError) as e:
        normalize_loudness(x, rate, policy="clip")
    assert e.value.key == "loudness.policy" and "cap, limit" in str(e.value)
    with pytest.raises(ConfigError, match="loudness.target_lufs"):
        normalize_loudness(x, rate, target_lufs=math.nan)


def test_reference_meter_reads_tones(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    sf.write(path, _sine(1000, 48000, 10.0, -23.0, channels=2).T, 48000, subtype="FLOAT")
    ref = reference_meter_ffmpeg(path)
    assert ref["integrated_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert ref["true_peak_dbtp"] == pytest.approx(-23.0, abs=0.15)
    assert ref["lra"] == pytest.approx(0.0, abs=0.1)
    sf.write(path, np.zeros((48000, 2)), 48000, subtype="FLOAT")
    silent = reference_meter_ffmpeg(path)
    assert silent["integrated_lufs"] == float("-inf") and silent["true_peak_dbtp"] == float("-inf")
    with pytest.raises(RuntimeError, match="ffmpeg"):
        reference_meter_ffmpeg(tmp_path / "missing.wav")
