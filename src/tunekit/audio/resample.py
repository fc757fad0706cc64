"""Sample-rate conversion with soxr: whole arrays (`resample`) and streams (`resample_stream`).

Every resampling in tunekit goes through here. The quality is each caller's choice (soxr's names: VHQ, HQ,
MQ, LQ, QQ); soxr filters each channel on its own, so the result does not depend on the memory layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def resample(audio: np.ndarray, rate: int, target: int, *, quality: str = "HQ") -> np.ndarray:
    """`audio` shaped (channels, samples) or (samples,) at `target` Hz, in the same layout and dtype.

    Returns `audio` itself when the rates are equal; a 2-D result is C-contiguous.
    """
    if rate == target:
        return audio
    import soxr

    if audio.ndim == 1:
        return soxr.resample(audio, rate, target, quality=quality)
    return np.ascontiguousarray(soxr.resample(audio.T, rate, target, quality=quality).T)


def resample_stream(rate: int, target: int, channels: int, *, quality: str = "HQ") -> Any:
    """A soxr stream resampler for float32 blocks shaped (samples, channels): `.resample_chunk(block, last=...)`."""
    import soxr

    return soxr.ResampleStream(rate, target, channels, dtype="float32", quality=quality)
