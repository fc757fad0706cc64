"""Reading and writing audio with soundfile (WAV, FLAC, OGG/Vorbis, Opus, MP3).

Arrays are float32, shaped (channels, samples).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from tunekit.atomic import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".m4a", ".aac")

_BLOCK = 65536  # frames per write call

# soundfile format and default subtype per extension.
_WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_24"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


def read_audio(path: str | os.PathLike[str], start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Read `frames` samples from `start` (all by default). Returns (audio (C, N) float32, rate)."""
    data, rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(rate)


def audio_info(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """soundfile's header info (rate, channels, frames, format, subtype) without decoding."""
    return sf.info(str(path))


def write_audio(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    rate: int,
    subtype: str | None = None,
    compression_level: float | None = None,
    bitrate_mode: str | None = None,
) -> Path:
    """Atomically write (C, N) float audio; the format follows the extension.

    Float input is written as is: callers apply gain *before* writing, and PCM subtypes clip at
    full scale, so check peaks first when that matters.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITE_FORMATS:
        raise ValueError(f"cannot write {path.name}: unsupported extension {ext!r}; use one of {sorted(_WRITE_FORMATS)}")
    fmt, default_subtype = _WRITE_FORMATS[ext]
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    kwargs = {}
    if compression_level is not None:
        kwargs["compression_level"] = compression_level
    if bitrate_mode is not None:
        kwargs["bitrate_mode"] = bitrate_mode
    # Written in blocks: one large OGG/Vorbis write overflows libvorbis' stack and crashes the process
    # for tracks longer than about 95 s at 44.1 kHz (python-soundfile#426, libsndfile#1095).
    with atomic_path(path) as tmp, sf.SoundFile(
        str(tmp), "w", rate, audio.shape[0], subtype or default_subtype, format=fmt, **kwargs
    ) as f:
        for start in range(0, audio.shape[1], _BLOCK):
            f.write(audio[:, start : start + _BLOCK].T)
    return path
