"""CLAP (transformers `ClapModel`) for the CLAP score and CLAP-embedding FAD: loader and tiny stand-in.

Real default: `laion/larger_clap_music` (HTSAT-base audio tower on 48 kHz log-mel spectrograms,
RoBERTa text tower, 512-d joint space). Audio must be at 48 kHz: resample before the processor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError
from tunekit.models.hub import loading
from tunekit.models.registry import DEFAULTS, resolve

CLAP_DEFAULT = DEFAULTS["clap"]
CLAP_SAMPLE_RATE = 48_000
TINY_CLAP_SEED = 1010


def load_clap(
    name_or_path: str = CLAP_DEFAULT,
    *,
    tiny: bool = False,
    cache_dir: str | Path | None = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Load (ClapModel, ClapProcessor) in eval mode from a Hub id or checkpoint folder.

    With `tiny=True` a known id loads its tiny stand-in through the same calls.
    """
    path = resolve(name_or_path, tiny=tiny, cache_dir=cache_dir)
    from transformers import AutoConfig, ClapModel, ClapProcessor

    with loading(name_or_path):
        _require_clap(AutoConfig.from_pretrained(path), name_or_path)
        processor = ClapProcessor.from_pretrained(path)
        model = ClapModel.from_pretrained(path)
    model.eval()
    if device is not None:
        model.to(device)
    return model, processor


def load_clap_config(
    name_or_path: str = CLAP_DEFAULT, *, tiny: bool = False, cache_dir: str | Path | None = None
) -> Any:
    """The checkpoint's ClapConfig from its local files, without its weights (checked before any work);
    raises ConfigError for a checkpoint that is not CLAP."""
    path = resolve(name_or_path, tiny=tiny, cache_dir=cache_dir)
    from transformers import AutoConfig

    with loading(name_or_path):
        return _require_clap(AutoConfig.from_pretrained(path, local_files_only=True), name_or_path)


def _require_clap(config: Any, name_or_path: str) -> Any:
    if config.model_type != "clap":
        raise ConfigError(
            f"{name_or_path!r} is a {config.model_type} checkpoint, not CLAP; use a CLAP checkpoint "
            f"such as {CLAP_DEFAULT}"
        )
    return config


def build_tiny_clap(out: Path) -> None:
    """Write a tiny CLAP in the real layout (config.json, model.safetensors, preprocessor_config.json,
    tokenizer files).

    Same classes and input pipeline as larger_clap_music (48 kHz, 64 mel bins, 10 s, spectrogram
    image 256, no fusion, RoBERTa byte-level BPE tokenizer); towers 1-2 layers wide 8-64, 32-d output.
    """
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapTextConfig

    from tunekit.models.tiny import save_processor_files, seeded, tiny_roberta_tokenizer

    tokenizer = tiny_roberta_tokenizer()
    text_config = ClapTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=514,
        projection_dim=32,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    audio_config = ClapAudioConfig(
        num_mel_bins=64,
        spec_size=256,
        window_size=8,
        patch_size=4,
        patch_stride=(4, 4),
        patch_embeds_hidden_size=8,
        depths=(1, 1, 1, 1),
        num_attention_heads=(1, 2, 2, 4),
        hidden_size=64,  # patch_embeds_hidden_size * 2**(len(depths) - 1)
        projection_dim=32,
        enable_fusion=False,
    )
    config = ClapConfig(text_config=text_config.to_dict(), audio_config=audio_config.to_dict(), projection_dim=32)
    with seeded(TINY_CLAP_SEED):
        model = ClapModel(config)
    model.save_pretrained(out)
    feature_extractor = ClapFeatureExtractor(
        feature_size=64, sampling_rate=CLAP_SAMPLE_RATE, hop_length=480, max_length_s=10, fft_window_size=1024,
        frequency_min=50, frequency_max=14_000, truncation="rand_trunc", padding="repeatpad",
    )
    save_processor_files(out, "ClapProcessor", feature_extractor, tokenizer)
