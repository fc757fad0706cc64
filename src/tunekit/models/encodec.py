"""EnCodec, MusicGen's audio tokenizer: loader and tiny stand-in.

Real default: `facebook/encodec_32khz` (mono 32 kHz, 4 codebooks x 2048 entries at 50 Hz; the same
weights as the `audio_encoder` inside every MusicGen checkpoint). The tiny model keeps every shape a
caller sees (rate, hop 640, frame rate, codebooks, codebook size) and shrinks the convolutions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError
from tunekit.models.hub import loading
from tunekit.models.registry import DEFAULTS, resolve

ENCODEC_DEFAULT = DEFAULTS["encodec"]
TINY_ENCODEC_SEED = 1000


# facebook/encodec_32khz's config.json (MusicGen's audio tokenizer): real-size random models for benchmarks and
# GPU tests are built from it without a download.
ENCODEC_32KHZ = dict(
    sampling_rate=32000, audio_channels=1, target_bandwidths=[2.2], upsampling_ratios=[8, 5, 4, 4],
    codebook_size=2048, codebook_dim=128, hidden_size=128, num_filters=64, num_lstm_layers=2,
    num_residual_layers=1, kernel_size=7, last_kernel_size=7, residual_kernel_size=3, dilation_growth_rate=2,
    compress=2, normalize=False, chunk_length_s=None, overlap=None, use_causal_conv=False,
    use_conv_shortcut=False, pad_mode="reflect", norm_type="weight_norm", trim_right_ratio=1.0,
)


def load_encodec(
    name_or_path: str,
    *,
    tiny: bool = False,
    cache_dir: str | Path | None = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Load (EncodecModel, EncodecFeatureExtractor) from a Hub id or folder, in eval mode.

    With `tiny=True` a known id loads its tiny stand-in from the cache through the same calls.
    """
    path = resolve(name_or_path, tiny=tiny, cache_dir=cache_dir)
    from transformers import AutoConfig, AutoFeatureExtractor, EncodecModel

    with loading(name_or_path):
        _require_encodec(AutoConfig.from_pretrained(path), name_or_path)
        model = EncodecModel.from_pretrained(path)
        feature_extractor = AutoFeatureExtractor.from_pretrained(path)
    model.eval()
    if device is not None:
        model.to(device)
    return model, feature_extractor


def load_encodec_config(
    name_or_path: str, *, tiny: bool = False, cache_dir: str | Path | None = None
) -> tuple[Any, int]:
    """(EncodecConfig, the feature extractor's sampling rate) from the checkpoint's local files, without
    its weights: what a caller checks its settings against before any work. The files must be local
    already (a Hub id loaded or digested once); raises ConfigError for a checkpoint that is not EnCodec."""
    path = resolve(name_or_path, tiny=tiny, cache_dir=cache_dir)
    from transformers import AutoConfig, AutoFeatureExtractor

    with loading(name_or_path):
        config = _require_encodec(AutoConfig.from_pretrained(path, local_files_only=True), name_or_path)
        feature_extractor = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    return config, int(feature_extractor.sampling_rate)


def _require_encodec(config: Any, name_or_path: str) -> Any:
    if config.model_type != "encodec":
        raise ConfigError(
            f"{name_or_path!r} is a {config.model_type} checkpoint, not EnCodec; use an EnCodec checkpoint "
            f"such as {ENCODEC_DEFAULT} (a MusicGen model carries its own codec as `model.audio_encoder`)"
        )
    return config


def tiny_encodec_config() -> Any:
    """EncodecConfig of the tiny 32 kHz codec: real rates and codebooks, 4 conv filters.

    The number of quantizers follows `target_bandwidths` and log2(codebook_size):
    1000 * 2.2 kbps // (50 Hz * 11 bits) = 4, as in the real checkpoint.
    """
    from transformers import EncodecConfig

    return EncodecConfig(
        sampling_rate=32_000,
        audio_channels=1,
        target_bandwidths=[2.2],
        upsampling_ratios=[8, 5, 4, 4],  # hop 640 samples: 50 frames per second
        codebook_size=2048,
        codebook_dim=16,
        hidden_size=16,
        num_filters=4,
        num_lstm_layers=2,
        num_residual_layers=1,
        normalize=False,
        use_causal_conv=False,
        use_conv_shortcut=False,
        pad_mode="reflect",
        norm_type="weight_norm",
    )


def tiny_encodec_model() -> Any:
    """The tiny EnCodec with its seeded random weights (shared by every tiny MusicGen)."""
    from transformers import EncodecModel

    from tunekit.models.tiny import seeded

    with seeded(TINY_ENCODEC_SEED):
        model = EncodecModel(tiny_encodec_config()).eval()
        _init_codebooks_from_data(model)
    return model


def _init_codebooks_from_data(model: Any, seconds: float = 8.0) -> None:
    """Fill the residual codebooks from encoder latents of seeded noise and tones.

    transformers leaves EnCodec's codebook buffers at zero (real checkpoints overwrite them), so a
    fresh random codec would map every frame to code 0. Like EnCodec's own k-means initialisation,
    each layer's entries are drawn from the residuals the layer sees, plus a little jitter, so codes
    vary with the audio and decode to different sounds.
    """
    import torch

    rate = model.config.sampling_rate
    n = int(seconds * rate)
    t = torch.arange(n) / rate
    noise = torch.randn(n) * torch.linspace(0.05, 0.5, n)
    tones = sum(0.2 * torch.sin(2 * torch.pi * f * t) for f in (110.0, 440.0, 1760.0))
    audio = torch.stack([noise, tones, noise + tones])[:, None, :]
    with torch.no_grad():
        latents = model.encoder(audio)  # (batch, dim, frames)
        residual = latents.transpose(1, 2).reshape(-1, latents.shape[1])
        for layer in model.quantizer.layers:
            codebook = layer.codebook
            size = codebook.embed.shape[0]
            picks = torch.randint(0, residual.shape[0], (size,))
            jitter = torch.randn(size, residual.shape[1]) * residual.std(0, keepdim=True) * 0.05
            embed = residual[picks] + jitter
            codebook.embed.copy_(embed)
            codebook.embed_avg.copy_(embed)
            codebook.cluster_size.fill_(1.0)
            residual = residual - codebook.decode(codebook.encode(residual))


def build_tiny_encodec(out: Path) -> None:
    """Write the tiny codec in `facebook/encodec_32khz`'s layout: config.json, model.safetensors,
    preprocessor_config.json."""
    from transformers import EncodecFeatureExtractor

    tiny_encodec_model().save_pretrained(out)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=32_000, padding_value=0.0).save_pretrained(out)
