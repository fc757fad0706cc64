"""Loudness stage: measure each whole track, gain it to the target under a true-peak ceiling, store it once.

Measurement streams: `StreamingMeter` takes the audio block by block and gives the same
integrated loudness (BS.1770-4 K-weighting and gating, pyloudnorm's filters) and 4x-oversampled
true peak as `tunekit.audio.loudness` does on the whole array, holding one block plus 0.1 s of
block energies per track. With `policy=cap` the gain is a scalar, so the whole stage streams.
With `policy=limit`, tracks that need limiting are processed whole by
`tunekit.audio.loudness.normalize_loudness` (measured: ~1.9 GB above the baseline for 10 minutes of
stereo 44.1 kHz audio, so about 11 GB for an hour); the others stream. The result is written as
24-bit FLAC (or float WAV) under `<out>/audio/<track_id>.flac`, after the gain: no integer audio is
written before it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tunekit.audio.loudness import CHANNEL_WEIGHTS, gated_loudness
from tunekit.prep.config import LoudnessConfig
from tunekit.prep.rows import Rejection, StageContext, TrackRow

BLOCK_SECONDS = 10.0
_GATE_BLOCK = 0.400
_STEP = 0.25
_PCM24_MAX = 1.0 - 2.0**-23
LIMIT_ITERATIONS = 4
LIMIT_TOLERANCE_LU = 0.05
LIMIT_TOLERANCE_DB = 0.02
CHECK_OVERSAMPLE = 8


def _envelope(x: np.ndarray, oversample: int) -> np.ndarray:
    """Per-sample true-peak envelope (N,) at `oversample`x from tunekit.audio.loudness (the same filter
    as `true_peak_dbtp`); its first row when it returns several resolutions."""
    from tunekit.audio.loudness import true_peak_envelope

    env = np.asarray(true_peak_envelope(x, oversample))
    return env[0] if env.ndim == 2 else env


class StreamingMeter:
    """Integrated loudness and true peak of (C, N) float audio fed in consecutive blocks.

    Block boundaries and gating follow `tunekit.audio.loudness.integrated_lufs` exactly (which
    follows pyloudnorm), so the two agree to floating-point rounding.
    """

    def __init__(self, rate: int, channels: int, true_peak: bool = True, oversample: int = 4) -> None:
        from tunekit.audio.loudness import HALF_TAPS, k_weighting_sos

        if channels > len(CHANNEL_WEIGHTS):
            raise ValueError(f"loudness supports up to {len(CHANNEL_WEIGHTS)} channels; got {channels}")
        self.rate = int(rate)
        self.channels = channels
        self.sos = k_weighting_sos(self.rate)
        self.zi = np.zeros((self.sos.shape[0], channels, 2))
        self.pos = 0
        self.total = np.zeros(channels)
        self.cum: dict[int, np.ndarray] = {0: np.zeros(channels)}
        self.next_j = 0  # smallest block index whose upper bound is not yet recorded
        self.oversample = oversample
        self.true_peak = true_peak
        self._k = HALF_TAPS
        self._hist = np.zeros((channels, 2 * self._k))
        self._peak = 0.0

    def _bounds(self, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lower = (_GATE_BLOCK * (j * _STEP) * self.rate).astype(np.int64)
        upper = (_GATE_BLOCK * (j * _STEP + 1) * self.rate).astype(np.int64)
        return lower, upper

    def feed(self, x: np.ndarray) -> None:
        """Add the next (C, m) block."""
        from scipy import signal

        x = np.asarray(x, dtype=np.float64)
        m = x.shape[1]
        if m == 0:
            return
        weighted, self.zi = signal.sosfilt(self.sos, x, axis=1, zi=self.zi)
        energy = weighted * weighted
        start, end = self.pos, self.pos + m
        # Record the cumulative energy at every block bound in (start, end].
        j_hi = int((end / self.rate) / (_GATE_BLOCK * _STEP)) + 2
        j = np.arange(self.next_j, max(self.next_j, j_hi), dtype=np.float64)
        bounds = np.zeros(0, dtype=np.int64)
        if j.size:
            lower, upper = self._bounds(j)
            bounds = np.unique(np.concatenate([lower, upper]))
            bounds = bounds[(bounds > start) & (bounds <= end)]
            done = upper <= end
            if done.any():
                self.next_j = int(j[done].max()) + 1
        # Energy summed between consecutive bounds (reduceat), then accumulated from the running total.
        cuts = np.concatenate([[0], bounds - start])
        cuts = cuts[cuts < m]
        sums = np.add.reduceat(energy, cuts, axis=1)  # segment k: [cuts[k], cuts[k+1]) ; last to m
        running = self.total[:, None] + np.cumsum(sums, axis=1)
        for k, b in enumerate(bounds):
            self.cum[int(b)] = running[:, k].copy()
        self.total = running[:, -1].copy()
        self.pos = end
        if self.true_peak:
            self._feed_peak(x)

    def _feed_peak(self, x: np.ndarray) -> None:
        k = self._k
        seg = np.concatenate([self._hist, x], axis=1)
        env = _envelope(seg, self.oversample)[k : seg.shape[1] - k]
        # env[i] is sample (pos - m - k + i); samples before 0 are padding.
        first = self.pos - x.shape[1] - k
        if first < 0:
            env = env[-first:]
        if env.size:
            self._peak = max(self._peak, float(env.max()))
        self._hist = seg[:, -2 * k :]

    def integrated(self) -> float:
        """Integrated loudness in LUFS (-inf for silence or audio shorter than one 400 ms block)."""
        n = self.pos
        block = _GATE_BLOCK * self.rate
        if n <= block:
            return float("-inf")
        n_blocks = int(np.round((n / self.rate - _GATE_BLOCK) / (_GATE_BLOCK * _STEP))) + 1
        lower, upper = self._bounds(np.arange(n_blocks, dtype=np.float64))
        upper = np.minimum(upper, n)
        cum = dict(self.cum)
        cum[n] = self.total
        lo = np.stack([cum[int(b)] for b in lower], axis=1)
        hi = np.stack([cum[int(b)] for b in upper], axis=1)
        return gated_loudness((hi - lo) / block)

    def true_peak_dbtp(self) -> float:
        """True peak (dBTP) of everything fed so far."""
        if not self.true_peak:
            raise ValueError("this meter was created with true_peak=False")
        k = self._k
        if self.pos:
            # Flush: the last k samples need k samples of (zero) padding after them.
            seg = np.concatenate([self._hist, np.zeros((self.channels, k))], axis=1)
            env = _envelope(seg, self.oversample)[k : k + k]
            first = self.pos - k
            if first < 0:
                env = env[-first:]
            peak = max(self._peak, float(env.max()) if env.size else 0.0)
        else:
            peak = self._peak
        return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def oversampled_peak_dbtp(audio: np.ndarray, rate: int, factor: int = CHECK_OVERSAMPLE) -> float:
    """Peak of (C, N) audio after `factor`x band-limited upsampling (soxr VHQ), in dBTP, block by block.

    A stricter second opinion on the BS.1770 4x true peak for limited audio, close to what a
    192 kHz meter such as ffmpeg's ebur128 reports.
    """
    from tunekit.audio.resample import resample_stream

    channels, n = audio.shape
    stream = resample_stream(rate, rate * factor, channels, quality="VHQ")
    peak = 0.0
    step = 1 << 18
    for start in range(0, n + 1, step):
        last = start + step >= n
        chunk = np.ascontiguousarray(audio[:, start : start + step].T, dtype=np.float32)
        up = stream.resample_chunk(chunk, last=last)
        if up.size:
            peak = max(peak, float(np.abs(up).max()))
        if last:
            break
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def iter_blocks(path: str | Path, block_frames: int) -> Iterator[np.ndarray]:
    """Yield (C, m) float32 blocks of an audio file."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        while True:
            data = f.read(block_frames, dtype="float32", always_2d=True)
            if data.shape[0] == 0:
                return
            yield np.ascontiguousarray(data.T)


def _writer(tmp: Path, rate: int, channels: int, fmt: str):
    import soundfile as sf

    if fmt == "flac":
        return sf.SoundFile(str(tmp), "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_24")
    return sf.SoundFile(str(tmp), "w", samplerate=rate, channels=channels, format="WAV", subtype="FLOAT")


def _prepare(block: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "flac":
        block = np.clip(block, -1.0, _PCM24_MAX)
    return np.ascontiguousarray(block.T)


def normalize_track(row: TrackRow, cfg: LoudnessConfig, ctx: StageContext) -> TrackRow | Rejection:
    """Measure the whole track, apply the gain (cap or limit) and write `<out>/audio/<track_id>` (stage function)."""
    import soundfile as sf

    from tunekit.atomic import atomic_path

    if not row.work_path:
        raise RuntimeError("no working audio: the decode stage must run before loudness")
    info = sf.info(row.work_path)
    rate, channels = int(info.samplerate), int(info.channels)
    block = int(BLOCK_SECONDS * rate)
    meter_in = StreamingMeter(rate, channels)
    for x in iter_blocks(row.work_path, block):
        meter_in.feed(x)
    lufs_in, tp_in = meter_in.integrated(), meter_in.true_peak_dbtp()
    if not math.isfinite(lufs_in):
        return Rejection("silent", "integrated loudness is -inf (nothing above the -70 LUFS gate)")

    gain_db = cfg.target_lufs - lufs_in
    needs_ceiling = tp_in + gain_db > cfg.ceiling_dbtp
    capped = False
    limiter_db = 0.0
    suffix = ".flac" if cfg.format == "flac" else ".wav"
    rel = f"audio/{row.track_id}{suffix}"
    target = ctx.out_path(rel)
    if needs_ceiling and cfg.policy == "cap":
        gain_db = cfg.ceiling_dbtp - tp_in
        capped = True
    meter_out = StreamingMeter(rate, channels)
    if needs_ceiling and cfg.policy == "limit":
        from tunekit.audio.loudness import normalize_loudness

        audio, _ = sf.read(row.work_path, dtype="float32", always_2d=True)
        # Limiting costs loudness that the gain must make up, and a limited signal is dense with
        # peaks at the ceiling, where the 4x meter reads up to a few tenths of a dB low: aim higher
        # and lower until both the target and an 8x check of the ceiling hold.
        goal, ceiling = cfg.target_lufs, cfg.ceiling_dbtp
        for _ in range(LIMIT_ITERATIONS):
            y, result = normalize_loudness(audio.T, rate, goal, ceiling, "limit")
            tp_check = max(result.true_peak_dbtp, oversampled_peak_dbtp(y, rate))
            miss = cfg.target_lufs - result.lufs_out
            over = tp_check - cfg.ceiling_dbtp
            if abs(miss) <= LIMIT_TOLERANCE_LU and over <= LIMIT_TOLERANCE_DB:
                break
            goal += miss
            ceiling -= max(over, 0.0)
        del audio
        gain_db, capped, limiter_db = result.gain_db, True, result.limiter_gain_reduction_db
        with atomic_path(target) as tmp, _writer(tmp, rate, channels, cfg.format) as out:
            for start in range(0, y.shape[1], block):
                chunk = y[:, start : start + block]
                meter_out.feed(chunk)
                out.write(_prepare(chunk, cfg.format))
        tp_out = max(meter_out.true_peak_dbtp(), tp_check)
    else:
        # A scalar gain scales the interpolated signal too: the true peak moves by exactly gain_db.
        meter_out = StreamingMeter(rate, channels, true_peak=False)
        g = np.float32(10.0 ** (gain_db / 20.0))
        with atomic_path(target) as tmp, _writer(tmp, rate, channels, cfg.format) as out:
            for x in iter_blocks(row.work_path, block):
                y = x * g
                meter_out.feed(y)
                out.write(_prepare(y, cfg.format))
        tp_out = tp_in + gain_db
    return dataclasses.replace(
        row,
        lufs_in=lufs_in,
        lufs_out=meter_out.integrated(),
        true_peak_in_dbtp=tp_in,
        true_peak_dbtp=tp_out,
        gain_db=gain_db,
        loudness_policy=cfg.policy,
        loudness_capped=capped,
        limiter_gain_reduction_db=limiter_db if cfg.policy == "limit" else None,
        audio_path=rel,
        audio_rate=rate,
    )
