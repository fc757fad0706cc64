"""Decode stage: source file -> float32 WAV at the working rate and channel count, block by block.

Blocks of 10 s are read, checked (non-finite samples, samples at full scale, peak), downmixed
(mono -> dual-mono; more than two channels -> stereo with ITU-R BS.775 coefficients, LFE
dropped), resampled with soxr's streaming resampler and appended to a float WAV in the cache, while
the loudness (for the silence check) and the long-term spectrum (for the bandwidth check) are
accumulated. Memory is one block, whatever the track's length. Truncated and unreadable files
become rejections.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tunekit.audio.channels import to_mono
from tunekit.prep.config import DecodeConfig
from tunekit.prep.rows import Rejection, StageContext, TrackRow
from tunekit.prep.sources import transcoded_path, wav_declared_frames

BLOCK_SECONDS = 10.0
FULL_SCALE = 0.999  # |sample| at or above this counts as full scale (16-bit max is 0.99997)
SPECTRUM_FFT = 4096
SPECTRUM_BAND_HZ = 250.0
_SQRT_HALF = float(np.sqrt(0.5))
LOSSLESS_EXACT = {"WAV", "WAVEX", "FLAC", "AIFF", "RF64", "W64", "CAF"}


def bs775_matrix(channels: int) -> np.ndarray:
    """(2, channels) ITU-R BS.775 downmix to Lo/Ro for the WAVE channel order of common layouts.

    3: L R C | 4: L R Ls Rs | 5: L R C Ls Rs | 6 (5.1): L R C LFE Ls Rs | 7 (6.1): L R C LFE Cs Ls Rs |
    8 (7.1): L R C LFE Lb Rb Ls Rs. Centre and surrounds at -3 dB, a back centre at -6 dB to each
    side, LFE dropped. Other counts: every channel at equal power to both sides.
    """
    h = _SQRT_HALF
    layouts = {
        3: [[1, 0, h], [0, 1, h]],
        4: [[1, 0, h, 0], [0, 1, 0, h]],
        5: [[1, 0, h, h, 0], [0, 1, h, 0, h]],
        6: [[1, 0, h, 0, h, 0], [0, 1, h, 0, 0, h]],
        7: [[1, 0, h, 0, 0.5, h, 0], [0, 1, h, 0, 0.5, 0, h]],
        8: [[1, 0, h, 0, h, 0, h, 0], [0, 1, h, 0, 0, h, 0, h]],
    }
    if channels in layouts:
        return np.asarray(layouts[channels], dtype=np.float32)
    return np.full((2, channels), 1.0 / np.sqrt(channels), dtype=np.float32)


def to_working_channels(x: np.ndarray, out_channels: int) -> np.ndarray:
    """(C, m) -> (out_channels, m): mono duplicated, stereo kept, more channels downmixed."""
    c = x.shape[0]
    if c > 2:
        x = bs775_matrix(c) @ x
        c = 2
    if out_channels == 2:
        return np.repeat(x, 2, axis=0) if c == 1 else x
    return x if c == 1 else to_mono(x, keepdims=True)


class SpectrumAccumulator:
    """Long-term average power spectrum of mono audio in 250 Hz bands (non-overlapping Hann frames)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.power = np.zeros(SPECTRUM_FFT // 2 + 1)
        self.frames = 0
        self._rest = np.zeros(0, dtype=np.float32)
        self._window = np.hanning(SPECTRUM_FFT).astype(np.float32)

    def feed(self, x: np.ndarray) -> None:
        """Add a (C, m) block."""
        mono = np.concatenate([self._rest, to_mono(x)])
        n = mono.size // SPECTRUM_FFT
        if n:
            frames = mono[: n * SPECTRUM_FFT].reshape(n, SPECTRUM_FFT) * self._window
            self.power += (np.abs(np.fft.rfft(frames, axis=1)) ** 2).sum(axis=0)
            self.frames += n
        self._rest = mono[n * SPECTRUM_FFT :]

    def bands(self) -> list[float]:
        """Mean power per 250 Hz band from 0 Hz to Nyquist (linear units)."""
        freqs = np.fft.rfftfreq(SPECTRUM_FFT, 1.0 / self.rate)
        idx = np.minimum((freqs // SPECTRUM_BAND_HZ).astype(int), int(self.rate / 2 // SPECTRUM_BAND_HZ))
        out = np.bincount(idx, weights=self.power / max(self.frames, 1))
        return [float(v) for v in out]


def _readable(row: TrackRow, ctx: StageContext) -> Path:
    if row.decoder == "ffmpeg":
        path = transcoded_path(ctx.cache_dir, row.content_hash or "")
        if not path.is_file():
            from tunekit.prep.sources import transcode

            path = transcode(ctx.source(row), ctx.cache_dir, row.content_hash or "")
        return path
    return ctx.source(row)


def _readable_frames(path: Path, start: int, limit: int) -> int:
    """How many frames from `start` decode before the error (a fresh decoder, small steps)."""
    import soundfile as sf

    n = 0
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(start)
            while n < limit:
                got = f.read(4096, dtype="float32", always_2d=True).shape[0]
                if got == 0:
                    break
                n += got
    except (sf.LibsndfileError, RuntimeError):
        pass
    return n


def decode_track(row: TrackRow, cfg: DecodeConfig, ctx: StageContext) -> TrackRow | Rejection:
    """Decode, check and resample one file into the cache (stage function)."""
    import soundfile as sf

    from tunekit.atomic import atomic_path
    from tunekit.audio.resample import resample_stream
    from tunekit.prep.normalize import StreamingMeter

    source = _readable(row, ctx)
    try:
        f = sf.SoundFile(str(source))
    except sf.LibsndfileError as exc:
        return Rejection("unreadable", f"cannot open {row.source_path}: {exc}")
    with f:
        rate_in, ch_in, header_frames = int(f.samplerate), int(f.channels), int(f.frames)
        declared = wav_declared_frames(source) if f.format in ("WAV", "WAVEX") else None
        exact = f.format in LOSSLESS_EXACT
        out_rate, out_ch = cfg.sample_rate, cfg.channels
        resampler = None
        if rate_in != out_rate:
            resampler = resample_stream(rate_in, out_rate, out_ch, quality=cfg.resampler)
        meter = StreamingMeter(out_rate, out_ch, true_peak=False)
        spectrum = SpectrumAccumulator(out_rate)
        est_bytes = header_frames * out_rate / max(rate_in, 1) * out_ch * 4
        target = ctx.artifact(".wav")
        fmt = "RF64" if est_bytes > 3.5e9 else "WAV"
        frames_read = nonfinite = clipped = 0
        peak = 0.0
        written = 0
        read_error = None
        with (
            atomic_path(target) as tmp,
            sf.SoundFile(str(tmp), "w", samplerate=out_rate, channels=out_ch, format=fmt, subtype="FLOAT") as out,
        ):

            def emit(y: np.ndarray) -> None:
                nonlocal written
                if y.shape[0]:
                    out.write(y)
                    meter.feed(y.T)
                    spectrum.feed(y.T)
                    written += y.shape[0]

            block = int(BLOCK_SECONDS * rate_in)
            while True:
                try:
                    data = f.read(block, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as exc:
                    read_error = str(exc)
                    frames_read += _readable_frames(source, frames_read, block)
                    break
                if data.shape[0] == 0:
                    break
                frames_read += data.shape[0]
                finite = np.isfinite(data)
                if not finite.all():
                    nonfinite += int((~finite).sum())
                    data = np.where(finite, data, np.float32(0.0))
                mag = np.abs(data)
                clipped += int((mag >= FULL_SCALE).sum())
                peak = max(peak, float(mag.max()))
                x = to_working_channels(np.ascontiguousarray(data.T), out_ch)
                y = x.T if resampler is None else resampler.resample_chunk(np.ascontiguousarray(x.T))
                emit(np.ascontiguousarray(y, dtype=np.float32))
            if resampler is not None:
                emit(resampler.resample_chunk(np.zeros((0, out_ch), dtype=np.float32), last=True))
    expected = declared if declared is not None else header_frames
    if read_error is not None:
        target.unlink(missing_ok=True)
        if frames_read == 0:
            return Rejection("unreadable", f"decoder error before any audio: {read_error}")
        return Rejection(
            "truncated",
            f"decoder error after {frames_read / rate_in:.2f} s of {expected / rate_in:.2f} s: {read_error}",
        )
    shortfall = expected - frames_read
    tolerance = 0 if exact else max(int(0.5 * rate_in), int(0.01 * expected))
    if expected > 0 and shortfall > tolerance:
        target.unlink(missing_ok=True)
        return Rejection(
            "truncated",
            f"the header promises {expected / rate_in:.2f} s but the file holds {frames_read / rate_in:.2f} s",
        )
    total_samples = frames_read * ch_in
    return dataclasses.replace(
        row,
        work_path=str(target),
        work_rate=out_rate,
        work_frames=written,
        duration_s=frames_read / rate_in if rate_in else 0.0,
        nan_count=nonfinite,
        clip_ratio=clipped / total_samples if total_samples else 0.0,
        peak_dbfs=20.0 * float(np.log10(peak)) if peak > 0 else float("-inf"),
        lufs_decoded=meter.integrated(),
        spectrum=spectrum.bands(),
    )
