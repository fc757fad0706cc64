"""The reconstruction floor: reference audio passed through the generator's own codec (encode → decode).

A model that generates codec tokens cannot sound closer to the reference than the codec's own
reconstruction of it, so the FAD of the reconstructed reference is reported beside the model scores.
`CodecSource` names the codec (the generator's own in run mode, `encodec_model` in standalone mode);
`reconstruct` passes audio through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunekit.audio.channels import as_channels, to_mono
from tunekit.audio.resample import resample
from tunekit.eval.config import EvalConfig


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
    x = resample(as_channels(audio), rate, codec_rate)
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


@dataclass
class CodecSource:
    """The codec behind the reconstruction floor: a content id for the cache key, and how to load it.

    `load` runs only when the reconstructed reference is not cached.
    """

    id: str
    load: Callable[[], Any]
    stereo: bool = False  # a stereo generator codes each channel separately with a mono codec
    codebooks: int | None = None  # codebooks per channel the generator uses (None: the codec's largest bandwidth)
    # (codec, audio, rate, device) -> (audio, rate): the family's own round trip (ACE-Step: VAE encode -> decode);
    # None: EnCodec's `reconstruct` at the bandwidth of `codebooks`
    round_trip: Callable[[Any, np.ndarray, int, str], tuple[np.ndarray, int]] | None = None


def encodec_source(config: EvalConfig, embedders: list[Any]) -> CodecSource:
    """`config.encodec_model` as the floor's codec (the loaded EnCodec embedder's model when there is one)."""
    from tunekit.eval.embeddings import EncodecEmbedder

    loaded = next((e for e in embedders if isinstance(e, EncodecEmbedder)), None)
    if loaded is not None:
        return CodecSource(id=loaded.fingerprint, load=lambda: loaded.model)
    from tunekit.models.device import resolve_device
    from tunekit.models.encodec import load_encodec
    from tunekit.models.digest import model_digest
    from tunekit.models.registry import resolve

    tiny, cdir = config.models.tiny, config.models.cache_dir
    model, _ = load_encodec(config.encodec_model, tiny=tiny, cache_dir=cdir, device=resolve_device(config.device))
    return CodecSource(id=model_digest(resolve(config.encodec_model, tiny=tiny, cache_dir=cdir)), load=lambda: model)
