"""Spectrogram images and compressed audio for the HTML report, with numpy, zlib and soundfile only.

PNG is written by a minimal encoder (IHDR + one zlib IDAT + IEND, filter 0), so neither matplotlib
nor Pillow is needed. Spectrograms are log-power mel spectrograms coloured with a magma-like map.
"""

from __future__ import annotations

import io
import struct
import zlib

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


def _mel_filters(n_fft: int, rate: int, n_mels: int, fmax: float) -> np.ndarray:
    """(n_mels, bins) triangular HTK-mel filters from 0 Hz to fmax."""
    freqs = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    mel = 2595.0 * np.log10(1.0 + freqs / 700.0)
    edges = np.linspace(0.0, 2595.0 * np.log10(1.0 + fmax / 700.0), n_mels + 2)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((mel - lower) / (center - lower), (upper - mel) / (upper - center)))


def mel_spectrogram_db(
    audio: np.ndarray, rate: int, *, n_fft: int = 1024, hop: int | None = None, n_mels: int = 96, top_db: float = 80.0
) -> np.ndarray:
    """(n_mels, frames) log-power mel spectrogram in dB relative to its maximum, floored at −top_db."""
    x = to_mono(np.asarray(audio, dtype=np.float64))
    hop = hop or max(1, rate // 100)
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    n_frames = 1 + (x.shape[0] - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(x, shape=(n_frames, n_fft), strides=(x.strides[0] * hop, x.strides[0]))
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    mel = _mel_filters(n_fft, rate, n_mels, min(rate / 2.0, 16000.0)) @ power.T
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    return np.maximum(db, db.max() - top_db)


def spectrogram_png(audio: np.ndarray, rate: int, *, width: int = 480, height: int = 96) -> bytes:
    """A PNG of the mel spectrogram: low frequencies at the bottom, time resampled to `width` columns."""
    db = mel_spectrogram_db(audio, rate, n_mels=height)
    lo, hi = float(db.min()), float(db.max())
    norm = (db - lo) / (hi - lo) if hi > lo else np.zeros_like(db)
    cols = np.linspace(0, norm.shape[1] - 1, width).round().astype(int)
    return encode_png(colormap(norm[::-1, cols]))


def encode_audio_ogg(audio: np.ndarray, rate: int, *, quality: float = 0.7) -> bytes:
    """OGG/Vorbis bytes of (C, N) or (N,) audio; compression level 0.7 gives roughly 64 kbps."""
    import soundfile as sf

    x = np.asarray(audio, dtype=np.float32)
    x = x[None, :] if x.ndim == 1 else x
    buf = io.BytesIO()
    sf.write(buf, np.clip(x.T, -1.0, 1.0), rate, format="OGG", subtype="VORBIS", compression_level=quality)
    return buf.getvalue()
