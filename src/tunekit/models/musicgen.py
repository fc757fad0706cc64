"""MusicGen (transformers): loader and tiny stand-ins for the mono, stereo and melody variants.

Real default: `facebook/musicgen-small`; see `registry.MODELS` for every checkpoint. A checkpoint
folder holds the whole model (T5 text encoder, EnCodec 32 kHz audio encoder, decoder) plus the
processor files (T5 tokenizer + feature extractor), and loads with
`Musicgen[Melody]ForConditionalGeneration.from_pretrained` + `AutoProcessor.from_pretrained`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from tunekit.atomic import write_json
from tunekit.errors import ConfigError
from tunekit.models.hub import loading
from tunekit.models.registry import DEFAULTS, resolve

MUSICGEN_DEFAULT = DEFAULTS["musicgen"]
TINY_T5_SEED = 1001
TINY_DECODER_SEED = 1002

# Chroma features at 32 kHz (n_fft 16384, hop 4096, 30 s chunks), as in facebook/musicgen-melody.
_MELODY_FEATURE_EXTRACTOR = {
    "chunk_length": 30,
    "feature_extractor_type": "MusicgenMelodyFeatureExtractor",
    "feature_size": 12,
    "hop_length": 4096,
    "n_fft": 16384,
    "n_samples": 960_000,
    "num_chroma": 12,
    "padding_side": "right",
    "padding_value": 0.0,
    "processor_class": "MusicgenMelodyProcessor",
    "return_attention_mask": False,
    "sampling_rate": 32_000,
    "stem_indices": [3, 2],
}

_MODEL_CLASSES = {
    "musicgen": "MusicgenForConditionalGeneration",
    "musicgen_melody": "MusicgenMelodyForConditionalGeneration",
}


class _SpecialTokenFalseAlarm(logging.Filter):
    """Drops transformers' "pad/bos token id must be within the vocabulary" warning for MusicGen.

    MusicGen's special token id is the codebook size by design (its decoder embeds `vocab_size + 1`
    ids, and `MusicgenDecoderConfig` accepts it), but the composite config's generic check flags it on
    every load of every MusicGen checkpoint. Other out-of-range ids still warn."""

    _message = re.compile(r"within the vocabulary \(between 0 and (\d+)\), got (\d+)")

    def filter(self, record: logging.LogRecord) -> bool:
        found = self._message.search(record.getMessage())
        return not (found and int(found.group(2)) == int(found.group(1)) + 1)


def _quiet_special_token_false_alarm() -> None:
    config_logger = logging.getLogger("transformers.configuration_utils")
    if not any(isinstance(f, _SpecialTokenFalseAlarm) for f in config_logger.filters):
        config_logger.addFilter(_SpecialTokenFalseAlarm())


def load_musicgen(
    name_or_path: str,
    *,
    tiny: bool = False,
    cache_dir: str | Path | None = None,
    torch_dtype: Any = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Load (model, processor) in eval mode from a Hub id or checkpoint folder.

    The model class (MusicgenForConditionalGeneration or MusicgenMelodyForConditionalGeneration)
    follows the checkpoint's config; the processor is `AutoProcessor` (T5 tokenizer + feature
    extractor). With `tiny=True` a known id loads its tiny stand-in through the same calls.
    """
    path = resolve(name_or_path, tiny=tiny, cache_dir=cache_dir)
    import transformers
    from transformers import AutoConfig, AutoProcessor

    _quiet_special_token_false_alarm()
    with loading(name_or_path):
        config = AutoConfig.from_pretrained(path)
        if config.model_type not in _MODEL_CLASSES:
            raise ConfigError(
                f"{name_or_path!r} is a {config.model_type} checkpoint, not MusicGen; use a MusicGen "
                f"checkpoint such as {MUSICGEN_DEFAULT} (see `tunekit ls`)"
            )
        model_class = getattr(transformers, _MODEL_CLASSES[config.model_type])
        try:
            processor = AutoProcessor.from_pretrained(path)
        except ImportError as exc:
            if "torchaudio" not in str(exc):
                raise
            # transformers' melody processor computes chroma with torchaudio; tunekit computes the
            # melody chroma itself (tunekit.data.chroma), so the text tokenizer is all it needs.
            from transformers import AutoTokenizer

            processor = AutoTokenizer.from_pretrained(path)
            logging.getLogger(__name__).info(
                "%s: torchaudio is not installed, so transformers' melody processor is unavailable; "
                "using the text tokenizer and tunekit's own chroma features", name_or_path
            )
        model = model_class.from_pretrained(path, dtype=torch_dtype)
    model.eval()
    if device is not None:
        model.to(device)
    return model, processor


def tiny_t5_encoder(vocab_size: int) -> Any:
    """A seeded 2-layer T5 encoder (d_model 32) standing in for t5-base."""
    from transformers import T5Config, T5EncoderModel

    from tunekit.models.tiny import seeded

    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with seeded(TINY_T5_SEED):
        return T5EncoderModel(config).eval()


def build_tiny_musicgen(out: Path, *, stereo: bool, melody: bool) -> None:
    """Write a tiny MusicGen in the real checkpoint's layout.

    Same classes and token shapes as the real variant: 4 codebooks x 2048 at 50 Hz (stereo: 8
    interleaved codebooks, 2 audio channels), pad/start token 2048, T5 tokenizer; the text encoder
    and codec are the tiny T5 and the tiny `facebook/encodec_32khz`, so tokens made with
    `load_encodec(..., tiny=True)` are this model's tokens. The decoder has 2 layers of width 64.
    """
    import transformers
    from transformers import EncodecFeatureExtractor, GenerationConfig

    from tunekit.models.encodec import tiny_encodec_model
    from tunekit.models.tiny import save_processor_files, seeded, tiny_t5_tokenizer

    _quiet_special_token_false_alarm()

    tokenizer = tiny_t5_tokenizer()
    text_encoder = tiny_t5_encoder(len(tokenizer))
    audio_encoder = tiny_encodec_model()
    channels = 2 if stereo else 1
    decoder_kwargs = {
        "vocab_size": 2048,
        "max_position_embeddings": 2048,
        "num_hidden_layers": 2,
        "ffn_dim": 128,
        "num_attention_heads": 4,
        "hidden_size": 64,
        "num_codebooks": 4 * channels,
        "audio_channels": channels,
        "pad_token_id": 2048,
        "bos_token_id": 2048,
        "decoder_start_token_id": 2048,
    }
    prefix = "MusicgenMelody" if melody else "Musicgen"
    decoder_config = getattr(transformers, f"{prefix}DecoderConfig")(**decoder_kwargs)
    config = getattr(transformers, f"{prefix}Config")(
        text_encoder=text_encoder.config.to_dict(),
        audio_encoder=audio_encoder.config.to_dict(),
        decoder=decoder_config.to_dict(),
    )
    with seeded(TINY_DECODER_SEED + 2 * int(melody) + int(stereo)):
        model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config)
    model.text_encoder.load_state_dict(text_encoder.state_dict())
    model.audio_encoder.load_state_dict(audio_encoder.state_dict())
    # The real checkpoints' sampling defaults (30 s at 50 Hz, top-k 250, CFG 3.0).
    model.generation_config = GenerationConfig(
        do_sample=True, top_k=250, guidance_scale=3.0, max_length=1500,
        pad_token_id=2048, bos_token_id=2048, decoder_start_token_id=2048,
    )
    model.save_pretrained(out)

    if melody:
        # MusicgenMelodyFeatureExtractor cannot be instantiated without torchaudio; its saved form is
        # plain JSON (its init arguments), so the file is written directly with the real defaults.
        write_json(out / "preprocessor_config.json", _MELODY_FEATURE_EXTRACTOR)
        tokenizer._set_processor_class("MusicgenMelodyProcessor")
        tokenizer.save_pretrained(out)
    else:
        feature_extractor = EncodecFeatureExtractor(
            feature_size=channels, sampling_rate=32_000, padding_side="left", padding_value=0.0
        )
        save_processor_files(out, "MusicgenProcessor", feature_extractor, tokenizer)

