"""The reconstruction floor: reference audio passed through the generator's own codec (encode → decode).

A model that generates codec tokens cannot sound closer to the reference than the codec's own
reconstruction of it, so the FAD of the reconstructed reference is reported beside the model scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tunekit.eval.embeddings import resample, to_mono


def bandwidth_for(codec: Any, n_codebooks: int | None = None) -> float:
    """The codec bandwidth whose number of codebooks is `n_codebooks` (the largest when None or not offered)."""
    bandwidths = sorted(float(b) for b in codec.config.target_bandwidths)
    if n_codebooks is not None:
        for b in bandwidths:
            if codec.quantizer.get_num_quantizers_for_bandwidth(b) == n_codebooks:
                return b
    return bandwidths[-1]


def reconstruct(
    audio: np.ndarray, rate: int, codec: Any, *, bandwidth: float, stereo: bool = False, device: str = "cpu"
) -> tuple[np.ndarray, int]:
    """(channels, samples) audio at the codec's rate after encode → decode.

    A mono codec gets the mid (L+R)/2; `stereo=True` (MusicGen stereo models) encodes each channel
    separately with the mono codec, as those models do.
    """
    import torch

    codec_rate = int(codec.config.sampling_rate)
    x = resample(audio, rate, codec_rate)
    if int(codec.config.audio_channels) == 1:
        rows = [x[c] for c in range(x.shape[0])] if stereo and x.shape[0] == 2 else [to_mono(x)]
        batch = np.stack(rows)[:, None, :]
    else:
        batch = (x if x.shape[0] == 2 else np.repeat(x[:1], 2, axis=0))[None]
    n = batch.shape[-1]
    dtype = next(codec.parameters()).dtype
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(batch)).to(device, dtype=dtype)
        enc = codec.encode(t, bandwidth=bandwidth, return_dict=True)
        dec = codec.decode(enc.audio_codes, enc.audio_scales, last_frame_pad_length=enc.last_frame_pad_length or 0, return_dict=True)
    y = dec.audio_values.float().cpu().numpy()[..., :n]
    out = y[:, 0, :] if y.shape[1] == 1 else y[0]
    if out.shape[-1] < n:
        out = np.pad(out, ((0, 0), (0, n - out.shape[-1])))
    return np.ascontiguousarray(out, dtype=np.float32), codec_rate
