"""Channel mixing of (channels, samples) audio."""

from __future__ import annotations

import numpy as np


def to_mono(audio: np.ndarray, *, keepdims: bool = False) -> np.ndarray:
    """The mean of the channels of (channels, samples) audio, in its dtype: (samples,), or (1, samples) with
    `keepdims`. A (samples,) array passes through unchanged."""
    if audio.ndim == 1:
        return audio
    return audio.mean(axis=0, keepdims=keepdims)


def as_channels(audio: np.ndarray) -> np.ndarray:
    """`audio` as float32 (channels, samples), the layout of every tunekit audio array: (samples,) becomes one
    channel. Returns the input itself when it already is that."""
    x = np.asarray(audio, dtype=np.float32)
    return x[None, :] if x.ndim == 1 else x
