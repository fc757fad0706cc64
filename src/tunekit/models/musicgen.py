"""MusicGen (transformers): loaders, sampling, and tiny stand-ins for the mono, stereo and melody variants.

Real default: `facebook/musicgen-small`; see `registry.MODELS` for every checkpoint. A checkpoint
folder holds the whole model (T5 text encoder, EnCodec 32 kHz audio encoder, decoder) plus the
processor files (T5 tokenizer + feature extractor), and loads with
`Musicgen[Melody]ForConditionalGeneration.from_pretrained` + `AutoProcessor.from_pretrained`.
`load_for_generation` also loads a run folder written by `tunekit train` (adapter or full model).

Sampling (`generate_audio`, used by `tunekit generate`, the trainer's samples and `tunekit eval run=`)
follows MusicGen's defaults: classifier-free guidance 3.0, top-k 250, temperature 1.0, one seed.
Durations beyond one window (30 s) use windowed continuation: the last `context_seconds` of codes become
the prompt of the next chunk, and the chunks are joined with a short cross-fade.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
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


def is_melody(model: Any) -> bool:
    """Whether `model` is a MusicGen-melody (chroma-conditioned, decoder-only with prepended conditions)."""
    return type(model).__name__.startswith("MusicgenMelody")


def load_for_generation(
    run: str | Path | None = None,
    model: str | None = None,
    *,
    tiny: bool = False,
    cache_dir: str | Path | None = None,
    device: Any = "cpu",
) -> tuple[Any, Any, str]:
    """(model, processor, description) on `device`, from a run folder or a base model.

    `run`: a folder written by `tunekit train`: its LoRA adapter merged into its base, or its full model;
    the base and its `models.tiny` come from the run's config.yaml. Without `run`: the MusicGen `model`
    (default facebook/musicgen-small), with `tiny` and `cache_dir` as in `load_musicgen`. Errors name `run`.
    """
    if run is None:
        name = model or MUSICGEN_DEFAULT
        loaded, processor = load_musicgen(name, tiny=tiny, cache_dir=cache_dir)
        return loaded.to(device), processor, name + (" (tiny random stand-in)" if tiny else "")
    run = Path(run).expanduser()
    config_file = run / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"run={run} is not a tunekit run folder (no config.yaml)", key="run")
    from omegaconf import OmegaConf

    train_cfg = OmegaConf.load(config_file)
    if (run / "model" / "config.json").is_file():
        loaded, processor = load_musicgen(str(run / "model"))
        return loaded.to(device), processor, f"{run}/model (full fine-tune of {train_cfg.model.name})"
    adapter = run / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(
            f"run={run} has no adapter/ or model/ yet: the run has not finished; resume it with the same "
            "`tunekit train` command, or wait for it to end",
            key="run",
        )
    from peft import PeftModel

    models = train_cfg.get("models", {})
    base, processor = load_musicgen(
        train_cfg.model.name, tiny=bool(models.get("tiny", False)), cache_dir=models.get("cache_dir")
    )
    with warnings.catch_warnings():  # peft asks transformers about checkpointing through a deprecated name
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        loaded = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    stand_in = " (tiny random stand-in)" if models.get("tiny", False) else ""
    return loaded.to(device), processor, f"{train_cfg.model.name}{stand_in} + LoRA adapter {adapter}"


# --- sampling -------------------------------------------------------------------------------------------


def _capture_module() -> Any:
    import torch
    from torch import nn

    class CodeCapture(nn.Module):
        """Stands in for the audio encoder at the end of `generate`: keeps the codes instead of decoding."""

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[torch.Tensor] = []

        def decode(self, audio_codes: torch.Tensor, audio_scales: Any = None, **_: Any) -> Any:
            self.calls.append(audio_codes.detach())
            out = type("Decoded", (), {})()
            out.audio_values = torch.zeros((audio_codes.shape[1], 1, 1), device=audio_codes.device)
            return out

    return CodeCapture()


def generate_codes(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    n_frames: int,
    *,
    guidance_scale: float = 3.0,
    top_k: int = 250,
    top_p: float = 0.0,
    temperature: float = 1.0,
    seed: int = 0,
    prompt_codes: Any = None,
    chroma: Any = None,
) -> Any:
    """Sample `n_frames` new frames per prompt with transformers' `generate`; returns codes (B, K, P + n_frames)
    including the `prompt_codes` (B, K, P) it continued. The global RNG is left untouched."""
    import torch

    device = next(p for p in model.decoder.parameters()).device
    k = model.decoder.config.num_codebooks
    stereo = model.decoder.config.audio_channels == 2
    max_delay = (k // 2 if stereo else k) - 1
    enc = tokenizer(prompts, padding=True, return_tensors="pt").to(device)
    kwargs: dict[str, Any] = dict(
        max_new_tokens=n_frames + max_delay,
        do_sample=True,
        top_k=top_k if top_k > 0 else None,
        top_p=top_p if top_p > 0 else None,
        temperature=temperature,
        guidance_scale=guidance_scale if guidance_scale > 1 else None,
    )
    if prompt_codes is not None:
        kwargs["decoder_input_ids"] = prompt_codes.to(device).reshape(len(prompts) * k, -1)
    if chroma is not None:
        kwargs["input_features"] = chroma.to(device)
    real, capture = model.audio_encoder, _capture_module()
    model.audio_encoder = capture
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            model.generate(**enc, **kwargs)
    finally:
        model.audio_encoder = real
    if stereo:
        left, right = capture.calls[0][0], capture.calls[1][0]
        codes = torch.stack([left, right], dim=2).reshape(left.shape[0], k, -1)
    else:
        codes = capture.calls[0][0]
    return codes


def decode_codes(codec: Any, codes: Any, audio_channels: int = 1) -> Any:
    """Audio (B, C, frames x hop) float32 on the CPU from codes (B, K, T), with the codec wherever it lives."""
    import torch

    device = next(codec.parameters()).device
    with torch.no_grad():
        if audio_channels == 2:
            left = codec.decode(codes[None, :, 0::2].to(device), [None]).audio_values
            right = codec.decode(codes[None, :, 1::2].to(device), [None]).audio_values
            audio = torch.cat([left, right], dim=1)
        else:
            audio = codec.decode(codes[None].to(device), [None]).audio_values
    return audio.float().cpu()


def crossfade_join(prev: Any, nxt: Any, overlap: int, fade: int) -> Any:
    """Join `nxt`, whose first `overlap` samples re-render the last `overlap` of `prev`, with a `fade` cross-fade."""
    import numpy as np

    fade = min(fade, overlap, prev.shape[-1])
    keep = prev.shape[-1] - fade
    if fade == 0:
        return np.concatenate([prev, nxt[..., overlap:]], axis=-1)
    # Linear: both sides render the same codes, so they are correlated and a linear fade keeps the level.
    w = np.linspace(0.0, 1.0, fade, endpoint=False, dtype=np.float32)
    mixed = prev[..., keep:] * (1 - w) + nxt[..., overlap - fade : overlap] * w
    return np.concatenate([prev[..., :keep], mixed, nxt[..., overlap:]], axis=-1)


CHROMA_FRAMES_PER_S = 32000 / 4096  # tunekit.data.chroma.melody_chroma: 32 kHz audio, hop 4096


def melody_from(chroma: Any, seconds: float) -> Any:
    """The melody chroma (B, frames, 12) from `seconds` on, for a continuation window that starts there (as
    audiocraft offsets the melody of each chunk); a melody that ends before keeps its last frame."""
    if chroma is None:
        return None
    start = min(int(round(seconds * CHROMA_FRAMES_PER_S)), chroma.shape[1] - 1)
    return chroma[:, max(start, 0):]


def generate_audio(
    model: Any,
    tokenizer: Any,
    codec: Any,
    prompts: list[str],
    seconds: float,
    *,
    window_seconds: float = 30.0,
    context_seconds: float = 10.0,
    crossfade_seconds: float = 0.25,
    seed: int = 0,
    chroma: Any = None,
    **sampling: Any,
) -> tuple[Any, int]:
    """(audio (B, C, N) float32 numpy, sample rate) of `seconds` per prompt; windowed continuation past a window."""
    cfg = model.config.audio_encoder
    rate, fps = int(cfg.sampling_rate), float(cfg.frame_rate)
    hop = rate / fps
    channels = model.decoder.config.audio_channels
    total = max(1, math.ceil(seconds * fps))
    window = max(2, int(window_seconds * fps))
    context = min(int(context_seconds * fps), window - 1)
    n = min(total, window)
    codes = generate_codes(model, tokenizer, prompts, n, seed=seed, chroma=chroma, **sampling)
    audio = decode_codes(codec, codes, channels).numpy()
    done, chunk = n, 0
    while done < total:
        chunk += 1
        ctx = min(context, codes.shape[-1])
        new = min(window - ctx, total - done)
        codes = generate_codes(
            model, tokenizer, prompts, new, seed=seed + chunk, prompt_codes=codes[..., -ctx:],
            chroma=melody_from(chroma, (done - ctx) / fps), **sampling,
        )
        part = decode_codes(codec, codes, channels).numpy()
        audio = crossfade_join(audio, part, int(round(ctx * hop)), int(round(crossfade_seconds * rate)))
        done += new
    return audio[..., : int(round(seconds * rate))], rate


class MusicgenSampler:
    """A loaded MusicGen ready to sample: the MusicGen family's sampler for `tunekit generate` and `tunekit eval run=`.

    Another family provides a class with the same `load`, `generate`, `codec` and `codec_layout`
    (see `tunekit.families`); the verbs and eval call nothing else.
    """

    name = "musicgen"  # the family; prefixes the reconstruction codec's cache id
    round_trip = None  # the reconstruction floor is EnCodec's own round trip at the model's codebooks

    def __init__(self, model: Any, tokenizer: Any, description: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.description = description  # what was loaded, for logs and manifests

    @classmethod
    def load(cls, run: str | Path | None = None, model: str | None = None, *, tiny: bool = False,
             cache_dir: str | Path | None = None, device: Any = "cpu") -> MusicgenSampler:
        """A run folder's fine-tuned model, or the base `model`, in eval mode on `device` (see `load_for_generation`)."""
        loaded, processor, what = load_for_generation(run, model, tiny=tiny, cache_dir=cache_dir, device=device)
        loaded.eval()
        return cls(loaded, getattr(processor, "tokenizer", processor), what)

    @property
    def codec(self) -> Any:
        """The generator's own audio codec (EnCodec), for the reconstruction floor."""
        return self.model.audio_encoder

    @property
    def takes_melody(self) -> bool:
        """Whether `generate` accepts a melody chroma (the melody variants)."""
        return is_melody(self.model)

    @staticmethod
    def codec_layout(path: str) -> tuple[bool, int]:
        """(stereo, codebooks per channel) of the checkpoint at `path`, read from its config alone."""
        from transformers import AutoConfig

        decoder = AutoConfig.from_pretrained(path).decoder
        stereo = int(getattr(decoder, "audio_channels", 1)) == 2
        return stereo, int(decoder.num_codebooks) // (2 if stereo else 1)

    def generate(self, prompts: list[str], seconds: float, *, seed: int = 0, **options: Any) -> tuple[Any, int]:
        """(audio (B, C, N) float32 numpy, rate): `generate_audio` with this model; `options` are its keywords
        (guidance_scale, top_k, top_p, temperature, window_seconds, context_seconds, crossfade_seconds, chroma);
        a None option takes MusicGen's default (guidance 3.0, top-k 250, temperature 1.0), options of other
        families (lyrics, steps, shift) are ignored."""
        known = {"guidance_scale", "top_k", "top_p", "temperature", "window_seconds", "context_seconds",
                 "crossfade_seconds", "chroma"}
        given = {k: v for k, v in options.items() if k in known and v is not None}
        return generate_audio(self.model, self.tokenizer, self.model.audio_encoder, prompts, seconds, seed=seed,
                              **given)


# --- tiny stand-ins ---------------------------------------------------------------------------------------


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

