"""Chroma cosine similarity: how closely a melody-conditioned clip follows the melody it was given.

Computed as audiocraft's `ChromaCosineSimilarityMetric` with MusicGen's evaluation settings (32 kHz mono,
12 pitch classes, n_fft = 2^14, hop 4096, argmax chroma): the chroma of the generated clip and of the melody
audio come from `tunekit.data.chroma.melody_chroma`, the same features that condition MusicGen-melody; each of
the first ceil(melody samples at 32 kHz / hop) frames (fewer for a shorter clip) gives the cosine of the two
chroma vectors, and the score is the sum of those cosines over all frames of all clips divided by the number of
frames. With argmax chroma a frame's cosine is 1 when both clips' strongest pitch class is the same and 0
otherwise, so the score is the fraction of frames whose strongest pitch class follows the melody (1 for a clip
against itself).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

RATE = 32000  # chroma sample rate (MusicGen's)
N_FFT = 16384  # 2^14, audiocraft's radix2_exp 14
HOP = 4096  # n_fft / 4
N_CHROMA = 12
EPS = 1e-8  # denominators below this give a cosine of 0, as torch's cosine_similarity
SETTINGS = {"rate": RATE, "n_fft": N_FFT, "hop": HOP, "n_chroma": N_CHROMA, "argmax": True, "eps": EPS,
            "against": "chroma of the audio whose melody conditioned each clip (run mode: its held-out window)",
            "mean": "over all frames of all clips (audiocraft's ChromaCosineSimilarityMetric)"}


def melody_features(audio: np.ndarray, rate: int) -> np.ndarray:
    """(frames, 12) argmax chroma of (channels, samples) or (samples,) audio's mono mix at 32 kHz: the melody
    condition of MusicGen-melody and the features this metric compares."""
    from tunekit.audio.channels import to_mono
    from tunekit.audio.resample import resample
    from tunekit.data.chroma import melody_chroma

    mono = to_mono(np.asarray(audio, dtype=np.float32))
    return melody_chroma(resample(mono, rate, RATE).astype(np.float32), RATE, N_FFT, HOP, N_CHROMA)


def frames_compared(melody_samples: int, rate: int) -> int:
    """ceil(samples at 32 kHz / hop): the chroma frames of a melody of `melody_samples` at `rate` that count."""
    return max(1, math.ceil(melody_samples * RATE / rate / HOP - 1e-9))


def frame_cosines(melody: np.ndarray, generated: np.ndarray, frames: int | None = None) -> np.ndarray:
    """Cosine of the chroma vectors frame by frame over the first `frames` frames (default: all the shorter has):
    x·y / max(‖x‖·‖y‖, eps)."""
    a, b = np.asarray(melody, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"chroma must be (frames, pitch classes) with equal pitch classes; got {a.shape}, {b.shape}")
    t = min(len(a), len(b)) if frames is None else min(frames, len(a), len(b))
    a, b = a[:t], b[:t]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(norms, EPS)


@dataclass(frozen=True)
class ClipChroma:
    """One clip's frame cosines summed, and how many frames they cover."""

    total: float
    frames: int

    @property
    def mean(self) -> float:
        return self.total / self.frames if self.frames else float("nan")


@dataclass(frozen=True)
class Melody:
    """A melody's chroma and how many of its frames count (`frames_compared` of its length)."""

    chroma: np.ndarray
    frames: int

    @classmethod
    def of(cls, audio: np.ndarray, rate: int) -> Melody:
        return cls(melody_features(audio, rate), frames_compared(np.asarray(audio).shape[-1], rate))


def clip_chroma(audio: np.ndarray, rate: int, melody: Melody) -> ClipChroma:
    """Chroma cosine of one generated clip against the melody it was conditioned on, over the melody's frames
    (or the clip's own, `frames_compared` of its length, when it is the shorter)."""
    frames = min(melody.frames, frames_compared(np.asarray(audio).shape[-1], rate))
    cos = frame_cosines(melody.chroma, melody_features(audio, rate), frames)
    return ClipChroma(total=float(cos.sum()), frames=int(len(cos)))


def set_chroma(audio_set: Any, melodies: Mapping[str, Any], cache: dict[str, Melody] | None = None,
               ) -> dict[str, ClipChroma]:
    """Clip id → `ClipChroma` for every clip of `audio_set`, each against the audio of `melodies[id]` (the
    AudioItem whose melody conditioned it); `cache` keeps each melody's chroma across sets."""
    from tunekit.errors import TunekitError

    cache = {} if cache is None else cache
    missing = sorted(i.id for i in audio_set.items if i.id not in melodies)
    if missing:
        raise TunekitError(f"{audio_set.name}: no melody for clips {missing[:5]}: each melody-conditioned clip must "
                           "be named after the held-out window whose melody it was given")
    out: dict[str, ClipChroma] = {}
    for item in audio_set.items:
        if item.id not in cache:
            cache[item.id] = Melody.of(*melodies[item.id].load())
        out[item.id] = clip_chroma(*item.load(), cache[item.id])
    return out


def chroma_fields(per_clip: Mapping[str, ClipChroma]) -> dict[str, Any]:
    """metrics.json fields of one set: the score over all frames, its clips and frames."""
    frames = sum(c.frames for c in per_clip.values())
    total = sum(c.total for c in per_clip.values())
    return {"chroma_cosine": total / frames if frames else None, "chroma_cosine_n": len(per_clip),
            "chroma_cosine_frames": frames}
