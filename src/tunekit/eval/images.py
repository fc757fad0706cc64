"""Spectrogram images and compressed audio for the HTML report, with numpy, zlib and soundfile only.

PNG is written by a minimal encoder (IHDR + one zlib IDAT + IEND, filter 0), so neither matplotlib
nor Pillow is needed. Spectrograms are log-power mel spectrograms coloured with a magma-like map; the image
carries no text, and `spectrogram_axes` gives its time and frequency ticks (as fractions of the image's width
and height) for whoever draws the axes around it.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from tunekit.audio.channels import to_mono

# A magma-like colour map: anchors at 0, 1/8, …, 1, interpolated linearly.
_MAGMA = np.array(
    [
        (0, 0, 4),
        (28, 16, 68),
        (79, 18, 123),
        (129, 37, 129),
        (181, 54, 122),
        (229, 80, 100),
        (251, 135, 97),
        (254, 194, 135),
        (252, 253, 191),
    ],
    dtype=np.float64,
)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of uint8 pixels shaped (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA."""
    a = np.ascontiguousarray(pixels)
    if a.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8; got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"pixels must be (H, W), (H, W, 3) or (H, W, 4) and non-empty; got {pixels.shape}")
    height, width, channels = a.shape
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), a.reshape(height, width * channels)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")


def decode_png(data: bytes) -> np.ndarray:
    """Pixels of a PNG written by `encode_png` (8-bit, non-interlaced, filter 0 rows only)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if crc != zlib.crc32(tag + body) & 0xFFFFFFFF:
            raise ValueError(f"bad CRC in {tag!r} chunk")
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, _, color_type, *_ = header
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * channels)
    if rows[:, 0].any():
        raise ValueError("only filter type 0 rows are supported")
    return rows[:, 1:].reshape(height, width, channels).squeeze(-1) if channels == 1 else rows[:, 1:].reshape(
        height, width, channels
    )


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB with the magma-like map."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0) * (len(_MAGMA) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_MAGMA) - 2)
    frac = (v - lo)[..., None]
    rgb = _MAGMA[lo] * (1.0 - frac) + _MAGMA[lo + 1] * frac
    return np.round(rgb).astype(np.uint8)


N_FFT = 1024  # spectrogram frame length in samples
FMAX = 16000.0  # highest frequency shown (Hz), or the Nyquist frequency when lower


def hop_for(rate: int) -> int:
    """Spectrogram hop in samples: 10 ms."""
    return max(1, rate // 100)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel of frequencies in Hz."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_filters(n_fft: int, rate: int, n_mels: int, fmax: float) -> np.ndarray:
    """(n_mels, bins) triangular HTK-mel filters from 0 Hz to fmax, centres evenly spaced in mel."""
    mel = hz_to_mel(np.linspace(0.0, rate / 2.0, n_fft // 2 + 1))
    edges = np.linspace(0.0, float(hz_to_mel(fmax)), n_mels + 2)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((mel - lower) / (center - lower), (upper - mel) / (upper - center)))


def mel_spectrogram_db(
    audio: np.ndarray, rate: int, *, n_fft: int = N_FFT, hop: int | None = None, n_mels: int = 96, top_db: float = 80.0
) -> np.ndarray:
    """(n_mels, frames) log-power mel spectrogram in dB relative to its maximum, floored at −top_db.

    Frame k is the Hann window over samples [k·hop, k·hop + n_fft) (a clip shorter than n_fft is zero-padded to
    it), so there are 1 + (samples − n_fft) // hop frames and frame k shows time (k·hop + n_fft/2) / rate. No
    padding at the ends: padding would paint a clip's abrupt start and end as broadband clicks.
    """
    x = to_mono(np.asarray(audio, dtype=np.float64))
    hop = hop or hop_for(rate)
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    n_frames = 1 + (x.shape[0] - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(x, shape=(n_frames, n_fft), strides=(x.strides[0] * hop, x.strides[0]))
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    mel = _mel_filters(n_fft, rate, n_mels, min(rate / 2.0, FMAX)) @ power.T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - top_db)


def spectrogram_columns(n_frames: int, width: int) -> np.ndarray:
    """The frame each of `width` image columns shows: frames 0 … n_frames − 1 spread evenly, nearest frame."""
    return np.linspace(0, n_frames - 1, width).round().astype(int)


def spectrogram_png(audio: np.ndarray, rate: int, *, width: int = 480, height: int = 96) -> bytes:
    """A PNG of the mel spectrogram: low frequencies at the bottom, time resampled to `width` columns."""
    db = mel_spectrogram_db(audio, rate, n_mels=height)
    lo, hi = float(db.min()), float(db.max())
    norm = (db - lo) / (hi - lo) if hi > lo else np.zeros_like(db)
    return encode_png(colormap(norm[::-1, spectrogram_columns(norm.shape[1], width)]))


def nice_step(span: float, max_ticks: int, *, integer: bool = False) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k (≥ 1 with `integer`) that puts at most `max_ticks` ticks on `span`."""
    rough = max(span, 1e-12) / max(1, max_ticks - 1)
    power = 10.0 ** math.floor(math.log10(rough))
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = mult * power
        if step >= rough * (1 - 1e-9) and not (integer and step < 1):
            return step
    return 10.0 * power


def nice_ticks(lo: float, hi: float, max_ticks: int = 6, *, integer: bool = False) -> list[float]:
    """Round tick values in [lo, hi]: multiples of `nice_step`, whole numbers only with `integer`."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        return []
    if integer and math.floor(hi) < math.ceil(lo):
        return []
    step = nice_step(hi - lo, max_ticks, integer=integer)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


@dataclass(frozen=True)
class SpectrogramAxes:
    """Ticks of a `spectrogram_png` image: (position, label) pairs, positions as fractions of the image's width
    (time, from the left edge) and height (frequency, from the top edge)."""

    time: list[tuple[float, str]]
    frequency: list[tuple[float, str]]
    time_label: str = "time (s)"
    frequency_label: str = "Hz (mel scale)"


FREQUENCY_TICKS = (20000.0, 10000.0, 5000.0, 2000.0, 1000.0, 500.0, 200.0, 100.0)


def _hz_label(hz: float) -> str:
    return f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"


def spectrogram_axes(
    n_samples: int, rate: int, *, width: int = 480, height: int = 96, min_gap: float = 0.12, max_time_ticks: int = 7
) -> SpectrogramAxes:
    """Where `spectrogram_png(audio of n_samples, rate, width=, height=)` shows given times and frequencies.

    Time: column c shows frame k = round(c·(F − 1)/(W − 1)), centred at (k·hop + n_fft/2) / rate, and is drawn
    over [c/W, (c + 1)/W] of the width. Frequency: row r from the top shows mel band n_mels − 1 − r, whose centre
    lies (b + 1)·Δ mel above 0 Hz (Δ = mel(fmax) / (n_mels + 1)). Frequency ticks are 100 Hz … 20 kHz below
    fmax, kept from the top down when at least `min_gap` of the height from the previous one.
    """
    hop = hop_for(rate)
    n_frames = 1 + (max(n_samples, N_FFT) - N_FFT) // hop
    time_ticks: list[tuple[float, str]] = []
    if n_frames > 1 and width > 1:
        first, last = (N_FFT / 2) / rate, ((n_frames - 1) * hop + N_FFT / 2) / rate
        per_column = (last - first) / (width - 1)
        for t in nice_ticks(first - per_column / 2, last + per_column / 2, max_time_ticks):
            column = (t - first) / per_column
            time_ticks.append(((column + 0.5) / width, f"{t:g}"))
    fmax = min(rate / 2.0, FMAX)
    delta = float(hz_to_mel(fmax)) / (height + 1)
    freq_ticks: list[tuple[float, str]] = []
    for hz in FREQUENCY_TICKS:
        if hz > fmax:
            continue
        y = (height + 0.5 - float(hz_to_mel(hz)) / delta) / height
        if 0.0 <= y <= 1.0 and all(abs(y - other) >= min_gap for other, _ in freq_ticks):
            freq_ticks.append((y, _hz_label(hz)))
    return SpectrogramAxes(time=time_ticks, frequency=freq_ticks)


def encode_audio_ogg(audio: np.ndarray, rate: int, *, quality: float = 0.7) -> bytes:
    """OGG/Vorbis bytes of (C, N) or (N,) audio; compression level 0.7 gives roughly 64 kbps."""
    import soundfile as sf

    x = np.asarray(audio, dtype=np.float32)
    x = x[None, :] if x.ndim == 1 else x
    buf = io.BytesIO()
    sf.write(buf, np.clip(x.T, -1.0, 1.0), rate, format="OGG", subtype="VORBIS", compression_level=quality)
    return buf.getvalue()
