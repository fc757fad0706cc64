"""ACE-Step 1.5 (diffusers `AceStepPipeline`): loading, variants, conditioning, VAE latents, LoRA loading, sampling.

Real default: the turbo checkpoint (`registry.DEFAULTS["acestep"]`); see `registry.MODELS` for the three
variants. A checkpoint is a diffusers pipeline folder (model_index.json + vae/, text_encoder/, tokenizer/,
transformer/, condition_encoder/, scheduler/) loaded with `AceStepPipeline.from_pretrained`; `models=tiny`
loads a tiny random pipeline of the same classes through the same call (`tunekit.models.acestep_tiny`).

The conditioning functions compute exactly what the pipeline computes at inference for text-to-music, by
calling the pipeline's own pieces: `encode_prompt` (caption + metas template, lyrics with their header) and the
condition encoder with the silence timbre reference. They encode one item at a time, so no item ever attends to
another's padding (the DiT takes no attention mask). Variant defaults the pipeline gets wrong live in
`INFERENCE_DEFAULTS`, the one source for steps, shift and guidance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError
from tunekit.models.hub import is_local_path, loading
from tunekit.models.registry import DEFAULTS, resolve

log = logging.getLogger(__name__)

ACESTEP_DEFAULT = DEFAULTS["acestep"]
SAMPLE_RATE = 48_000
TIMBRE_REFERENCE_SECONDS = 30  # without reference audio the pipeline feeds 30 s of silence_latent as the timbre
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"  # what `save_lora_weights` writes
PEFT_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # the official trainer's layout


@dataclass(frozen=True)
class InferenceDefaults:
    """Sampling settings of one variant."""

    steps: int  # Euler steps
    shift: float  # timestep shift: t' = shift·t / (1 + (shift − 1)·t)
    guidance_scale: float  # APG guidance with the learned null condition; 1.0 = off


# Turbo is guidance-distilled for 8 steps at shift 3. Base and sft need guidance with the null condition and more
# steps at shift 1 (the ACE-Step inference code's defaults); the pipeline's own defaults (8 steps, shift 3) suit
# only turbo.
INFERENCE_DEFAULTS: dict[str, InferenceDefaults] = {
    "turbo": InferenceDefaults(steps=8, shift=3.0, guidance_scale=1.0),
    "base": InferenceDefaults(steps=50, shift=1.0, guidance_scale=7.0),
    "sft": InferenceDefaults(steps=50, shift=1.0, guidance_scale=7.0),
}
VARIANTS: tuple[str, ...] = tuple(INFERENCE_DEFAULTS)


@dataclass(frozen=True)
class Conditioning:
    """One item's cross-attention input for the DiT: the condition encoder's output without padding."""

    states: Any  # [L, H] float32 (CPU): lyrics, timbre and caption tokens packed as the encoder packs them
    mask: Any  # [L] bool (CPU): all true for one item encoded alone; kept for batching with padding


# --- loading ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No diffusers progress bars and no torch weight-norm deprecation notice (from the VAE's constructor)."""
    from diffusers.utils import logging as diffusers_logging

    was_enabled = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
            yield
    finally:
        if was_enabled:
            diffusers_logging.enable_progress_bar()


def _check_pipeline_folder(folder: Path, name: str, key: str) -> None:
    """A local checkpoint must be an AceStepPipeline folder; say so before diffusers fails deeper."""
    index = folder / "model_index.json"
    if not folder.is_dir():
        raise ConfigError(f"{key}={name}: the folder does not exist; use an ACE-Step hub id (such as "
                          f"{ACESTEP_DEFAULT}) or a diffusers pipeline folder", key=key)
    if not index.is_file():
        raise ConfigError(f"{key}={name} is not a diffusers pipeline folder (no model_index.json); an ACE-Step "
                          f"checkpoint is saved with AceStepPipeline.save_pretrained (see `tunekit ls`)", key=key)
    class_name = json.loads(index.read_text()).get("_class_name")
    if class_name != "AceStepPipeline":
        raise ConfigError(f"{key}={name} is a {class_name} checkpoint, not ACE-Step 1.5 (AceStepPipeline); use "
                          f"an ACE-Step checkpoint such as {ACESTEP_DEFAULT}", key=key)


def load_acestep(
    name_or_path: str,
    *,
    tiny: bool = False,
    cache_dir: str | Path | None = None,
    dtype: Any = None,
    device: Any = None,
    key: str = "model.name",
    **components: Any,
) -> Any:
    """The `AceStepPipeline` of a hub id or pipeline folder, in eval mode, with VAE tiling on (long audio).

    With `tiny=True` a known id loads its tiny stand-in through the same call. `components` replace pipeline
    parts (e.g. `transformer=` a fine-tuned DiT), as in `from_pretrained`. Errors name `key`.
    """
    path = resolve(name_or_path, tiny=tiny, cache_dir=cache_dir)
    if is_local_path(path):
        _check_pipeline_folder(Path(path).expanduser(), name_or_path, key)
    from diffusers import AceStepPipeline

    with _quiet_loading(), loading(name_or_path):
        pipe = AceStepPipeline.from_pretrained(path, torch_dtype=dtype, **components)
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.enable_tiling()
    for module in pipe.components.values():
        if hasattr(module, "eval"):
            module.eval()
    if device is not None:
        pipe.to(device)
    return pipe


def variant_of(pipe: Any) -> str:
    """'turbo', 'base' or 'sft', from the DiT's config.

    Turbo is decided as diffusers decides it (`is_turbo`, or `model_version == "turbo"`); otherwise the config's
    `model_version`. A checkpoint that names neither counts as base (base and sft sample alike).
    """
    if pipe.is_turbo:
        return "turbo"
    version = getattr(pipe.transformer.config, "model_version", None)
    if version in VARIANTS:
        return str(version)
    log.warning("the ACE-Step checkpoint's transformer config names no variant (model_version=%r): sampling "
                "it as a base model (guidance on)", version)
    return "base"


def folder_variant(folder: str | Path) -> str | None:
    """'turbo', 'base' or 'sft' of a diffusers-format checkpoint folder, read from its transformer/config.json
    alone (no weights loaded); None when the folder is not one or names no variant."""
    import json

    config = Path(folder).expanduser() / "transformer" / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    if data.get("is_turbo") or data.get("model_version") == "turbo":
        return "turbo"
    return data.get("model_version") if data.get("model_version") in VARIANTS else None


# --- conditioning -------------------------------------------------------------------------------------------


def _per_item(value: Any, n: int, name: str) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} values for {n} captions")
    return list(value)


def _bpm(value: Any) -> int | None:
    """The pipeline writes `str(bpm)` into the metas: a float tempo becomes the whole number it would be given."""
    return None if value is None else int(round(float(value)))


def encode_conditions(
    pipe: Any,
    captions: Sequence[str],
    lyrics: str | Sequence[str] | None = None,
    *,
    seconds: float | Sequence[float],
    bpm: Any = None,
    keyscale: str | Sequence[str | None] | None = None,
    timesignature: str | Sequence[str | None] | None = None,
    language: str | Sequence[str | None] | None = None,
    device: Any = None,
) -> list[Conditioning]:
    """Per caption, the DiT's `encoder_hidden_states` the pipeline builds at inference for text-to-music.

    Each of `lyrics`, `seconds`, `bpm`, `keyscale`, `timesignature`, `language` is one value for all items or
    one per item; `seconds` is the clip's duration (it appears in the metas), `language` defaults to "en",
    lyrics to "" (the pipeline's defaults). The timbre reference is `silence_latent[:, :750]`, as without
    reference audio. Items are encoded one at a time: nothing attends to padding.
    """
    import torch
    from diffusers.pipelines.ace_step.pipeline_ace_step import TASK_INSTRUCTIONS

    n = len(captions)
    items = zip(
        captions,
        _per_item("" if lyrics is None else lyrics, n, "lyrics"),
        _per_item(seconds, n, "seconds"),
        _per_item(bpm, n, "bpm"),
        _per_item(keyscale, n, "keyscale"),
        _per_item(timesignature, n, "timesignature"),
        _per_item(language, n, "language"),
        strict=True,
    )
    device = torch.device(device) if device is not None else pipe.transformer.device
    dtype = pipe.transformer.dtype
    frames = math.ceil(TIMBRE_REFERENCE_SECONDS * pipe.latents_per_second)
    reference = pipe.condition_encoder.silence_latent[:, :frames, :].to(device=device, dtype=dtype)
    out = []
    with torch.no_grad():
        for caption, lyric, duration, tempo, key, signature, lang in items:
            if not float(duration) > 0:
                raise ValueError(f"seconds must be positive, got {duration!r}")
            text, text_mask, lyric_states, lyric_mask = pipe.encode_prompt(
                prompt=[caption],
                lyrics=[lyric],
                device=device,
                vocal_language=lang or "en",
                audio_duration=float(duration),
                instruction=TASK_INSTRUCTIONS["text2music"],
                bpm=_bpm(tempo),
                keyscale=key,
                timesignature=signature,
            )
            states, mask = pipe.condition_encoder(
                text_hidden_states=text,
                text_attention_mask=text_mask,
                lyric_hidden_states=lyric_states,
                lyric_attention_mask=lyric_mask,
                refer_audio_acoustic_hidden_states_packed=reference,
                refer_audio_order_mask=torch.zeros(1, device=device, dtype=torch.long),
            )
            out.append(Conditioning(states=states[0].float().cpu(), mask=mask[0].bool().cpu()))
    return out


def null_condition(pipe: Any) -> Any:
    """The learned empty condition [1, 1, H] (float32, CPU); guidance and condition dropout use it broadcast to
    the conditional sequence's shape, [L, H] for an item of L condition tokens."""
    return pipe.condition_encoder.null_condition_emb.detach().float().cpu().clone()


def text2music_context(silence_latent: Any, frames: int) -> Any:
    """[1, frames, 2C]: the DiT's `context_latents` for text-to-music, `cat(silence, ones)`.

    `silence_latent` is [1, S, C]; it is cut to `frames`, or repeated when longer, as the pipeline does.
    """
    import torch

    if silence_latent.shape[1] < frames:
        silence_latent = silence_latent.repeat(1, -(-frames // silence_latent.shape[1]), 1)
    source = silence_latent[:, :frames, :]
    return torch.cat([source, torch.ones_like(source)], dim=-1)


def silence_context(pipe: Any, frames: int) -> Any:
    """`text2music_context` of the pipeline's own silence latent (float32, CPU)."""
    return text2music_context(pipe.condition_encoder.silence_latent.detach().float().cpu(), frames)


# --- VAE latents --------------------------------------------------------------------------------------------


def _vae(pipe_or_vae: Any) -> Any:
    return getattr(pipe_or_vae, "vae", pipe_or_vae)


def encode_latents(pipe: Any, audio: Any) -> tuple[Any, Any]:
    """(mean, std), each [T, C] float32 on the CPU: the VAE's latent distribution of 48 kHz `audio` (C, N).

    A sample is `mean + std · ε` (what `latent_dist.sample()` draws); T = N // 1920 (25 per second), C = 64 for
    the real VAE. Mono audio is duplicated to stereo. `pipe` may also be the VAE itself.
    """
    import torch

    vae = _vae(pipe)
    x = torch.as_tensor(audio, dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] not in (1, 2):
        raise ValueError(f"audio must be (channels, samples) with 1 or 2 channels, got {tuple(x.shape)}")
    if x.shape[0] == 1:
        x = x.repeat(2, 1)
    vae.enable_tiling()  # long windows encode in 30 s tiles instead of all at once
    parameter = next(vae.parameters())
    with torch.no_grad():
        dist = vae.encode(x[None].to(device=parameter.device, dtype=parameter.dtype)).latent_dist
    return dist.mean[0].T.float().cpu(), dist.std[0].T.float().cpu()


def decode_latents(pipe: Any, latents: Any) -> Any:
    """Audio (B, 2, T·1920) float32 on the CPU from latents [T, C] or [B, T, C] (no loudness normalisation)."""
    import torch

    vae = _vae(pipe)
    z = torch.as_tensor(latents)
    if z.ndim == 2:
        z = z[None]
    vae.enable_tiling()
    parameter = next(vae.parameters())
    with torch.no_grad():
        audio = vae.decode(z.transpose(1, 2).to(device=parameter.device, dtype=parameter.dtype)).sample
    return audio.float().cpu()


def reconstruct_with_vae(vae: Any, audio: Any, rate: int) -> tuple[Any, int]:
    """(audio (2, N) float32 numpy at 48 kHz, 48000): `audio` (C, samples) at `rate` through the VAE, encode →
    decode of the latent mean; the reconstruction floor of a latent model, as EnCodec's is for MusicGen.

    N is the input's length at 48 kHz: the tail past the last whole latent frame (< 1920 samples) is silent.
    """
    import numpy as np

    from tunekit.audio.channels import as_channels
    from tunekit.audio.resample import resample

    x = resample(as_channels(audio), rate, SAMPLE_RATE)
    mean, _ = encode_latents(vae, x[:2])
    y = decode_latents(vae, mean)[0].numpy()[:, : x.shape[-1]]
    return np.ascontiguousarray(np.pad(y, ((0, 0), (0, x.shape[-1] - y.shape[-1]))), dtype=np.float32), SAMPLE_RATE


# --- LoRA loading -------------------------------------------------------------------------------------------

_OFFICIAL_TO_DIFFUSERS = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "o_proj": "to_out.0"}
_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")


def _diffusers_module_name(official: str) -> str:
    """layers.3.self_attn.q_proj -> layers.3.self_attn.to_q (attention projections are renamed, the rest kept)."""
    head, _, last = official.rpartition(".")
    parent = head.rpartition(".")[2]
    if parent in ("self_attn", "cross_attn") and last in _OFFICIAL_TO_DIFFUSERS:
        return f"{head}.{_OFFICIAL_TO_DIFFUSERS[last]}"
    return official


def _lora_layers(transformer: Any, adapter: str) -> dict[str, Any]:
    """The DiT's LoRA layers that hold `adapter`, by module name."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in transformer.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A}


def _load_peft_adapter(pipe: Any, folder: Path, adapter: str, key: str) -> dict[str, float]:
    """Load an official/PEFT-format adapter with its own alpha; returns each module's intended scale."""
    import torch
    from peft.utils.other import get_pattern_key
    from safetensors.torch import load_file

    config = json.loads((folder / PEFT_ADAPTER_FILES[0]).read_text())
    if str(config.get("peft_type", "LORA")).upper() != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise ConfigError(f"{key}={folder}: a {kind} adapter; only LoRA adapters load into ACE-Step", key=key)
    linear = {n for n, m in pipe.transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    parts: dict[str, dict[str, Any]] = {}
    ignored: list[str] = []
    for name, tensor in load_file(folder / PEFT_ADAPTER_FILES[1]).items():
        found = _PEFT_KEY.match(name)
        if found is None:
            ignored.append(name)
            continue
        parts.setdefault(found["module"], {})[found["part"]] = tensor
    state: dict[str, Any] = {}
    scales: dict[str, float] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for official, pair in sorted(parts.items()):
        module = _diffusers_module_name(official)
        if module not in linear or set(pair) != {"lora_A", "lora_B"}:
            ignored.append(official)
            continue
        rank = int(pair["lora_A"].shape[0])
        # The alpha PEFT would give this module (alpha_pattern matched on the module's own name, as peft does).
        alpha_key = get_pattern_key(list((config.get("alpha_pattern") or {}).keys()), official)
        alpha = float((config.get("alpha_pattern") or {}).get(alpha_key, config.get("lora_alpha", rank)))
        state[f"transformer.{module}.lora_A.weight"] = pair["lora_A"]
        state[f"transformer.{module}.lora_B.weight"] = pair["lora_B"]
        ranks[module], alphas[module] = rank, alpha
        scales[module] = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    if ignored:
        log.warning("%s: %d adapter entries match no attention or MLP projection of the ACE-Step DiT and are not "
                    "loaded: %s", folder, len(ignored), ", ".join(ignored[:8]) + (" …" if len(ignored) > 8 else ""))
    if not state:
        raise ConfigError(f"{key}={folder}: nothing in the adapter matches the ACE-Step DiT (keys like "
                          f"base_model.model.layers.N.self_attn.q_proj.lora_A.weight expected); not loaded", key=key)
    # Every module's rank and alpha spelled out, so peft builds each layer with the adapter's own scale
    # (diffusers would otherwise set alpha = rank for a file without diffusers metadata).
    first = next(iter(ranks))
    lora_config = {
        "r": ranks[first],
        "lora_alpha": alphas[first],
        "rank_pattern": {re.escape(m): r for m, r in ranks.items()},
        "alpha_pattern": {re.escape(m): a for m, a in alphas.items()},
        "target_modules": sorted(ranks),
        "use_rslora": bool(config.get("use_rslora", False)),
        "lora_dropout": 0.0,
    }
    pipe.load_lora_into_transformer(
        state, transformer=pipe.transformer, adapter_name=adapter, _pipeline=pipe,
        metadata={f"transformer.{k}": v for k, v in lora_config.items()},
    )
    return scales


def load_lora_alpha_correct(pipe: Any, folder: str | Path, *, adapter_name: str | None = None,
                            key: str = "adapter") -> str:
    """Load a LoRA folder into the pipeline's DiT at the strength it was trained at; returns the adapter name.

    A diffusers LoRA (`pytorch_lora_weights.safetensors`, written by `save_lora_weights` with its metadata) loads
    unchanged through `load_lora_weights`. An official/PEFT adapter (`adapter_config.json` +
    `adapter_model.safetensors`, keys `base_model.model.layers.N.{self,cross}_attn.{q,k,v,o}_proj…`) is renamed
    to the DiT's modules and loaded with its own alpha — diffusers' converter would load it at alpha = rank,
    i.e. at rank/alpha of its strength, and loads nothing from an adapter without q/k projections. Entries
    matching no DiT projection are reported and skipped; an adapter that loads nothing is an error naming `key`.
    """
    from diffusers.utils.peft_utils import get_adapter_name

    folder = Path(folder).expanduser()
    adapter = adapter_name or get_adapter_name(pipe.transformer)
    scales: dict[str, float] | None = None
    if (folder / DIFFUSERS_LORA_FILE).is_file():
        _, metadata = pipe.lora_state_dict(str(folder), weight_name=DIFFUSERS_LORA_FILE, return_lora_metadata=True)
        if not metadata:
            log.warning("%s has no LoRA metadata (written without transformer_lora_adapter_metadata): its alpha "
                        "is unknown and loads as alpha = rank", folder / DIFFUSERS_LORA_FILE)
        pipe.load_lora_weights(str(folder), weight_name=DIFFUSERS_LORA_FILE, adapter_name=adapter)
    elif all((folder / f).is_file() for f in PEFT_ADAPTER_FILES):
        scales = _load_peft_adapter(pipe, folder, adapter, key)
    else:
        raise ConfigError(f"{key}={folder} holds no LoRA: expected {DIFFUSERS_LORA_FILE} (diffusers) or "
                          f"{' + '.join(PEFT_ADAPTER_FILES)} (PEFT / official ACE-Step trainer)", key=key)
    layers = _lora_layers(pipe.transformer, adapter)
    if not layers:
        raise ConfigError(f"{key}={folder}: no LoRA layer of it matches the ACE-Step DiT; nothing was loaded",
                          key=key)
    for module, scale in (scales or {}).items():
        if not math.isclose(layers[module].scaling[adapter], scale, rel_tol=1e-6):
            raise RuntimeError(f"{module}: LoRA scale {layers[module].scaling[adapter]} after loading, "
                               f"{scale} expected (alpha / rank of {folder})")
    return adapter


# --- sampling -----------------------------------------------------------------------------------------------


def _run_config(run: Path) -> Any:
    config_file = run / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"run={run} is not a tunekit run folder (no config.yaml)", key="run")
    from omegaconf import OmegaConf

    return OmegaConf.load(config_file)


class AceStepSampler:
    """A loaded ACE-Step pipeline ready to sample: the ACE-Step family's sampler for `tunekit generate` and
    `tunekit eval run=` (same interface as `MusicgenSampler`)."""

    name = "acestep"  # the family; prefixes the reconstruction codec's cache id

    def __init__(self, pipe: Any, description: str) -> None:
        self.pipe = pipe
        self.description = description  # what was loaded, for logs and manifests
        self.variant = variant_of(pipe)

    @classmethod
    def load(cls, run: str | Path | None = None, model: str | None = None, *, tiny: bool = False,
             cache_dir: str | Path | None = None, device: Any = "cpu") -> AceStepSampler:
        """A run folder's fine-tune (`<run>/adapter/` LoRA or `<run>/model/transformer/`) on its base, or the
        pipeline `model` (default: turbo). With `run`, the base and `models.tiny` come from the run's
        config.yaml unless `model` names another base (a LoRA trained on one variant played on another)."""
        if run is None:
            name = model or ACESTEP_DEFAULT
            pipe = load_acestep(name, tiny=tiny, cache_dir=cache_dir, device=device, key="model")
            return cls(pipe, name + (" (tiny random stand-in)" if tiny else ""))
        run = Path(run).expanduser()
        train_cfg = _run_config(run)
        models = train_cfg.get("models", {}) or {}
        base = model or str(train_cfg.model.name)
        tiny, cache_dir = bool(models.get("tiny", False)), models.get("cache_dir")
        stand_in = " (tiny random stand-in)" if tiny else ""
        full = run / "model" / "transformer"
        if (full / "config.json").is_file():
            from diffusers import AceStepTransformer1DModel

            with _quiet_loading():
                transformer = AceStepTransformer1DModel.from_pretrained(full)
            pipe = load_acestep(base, tiny=tiny, cache_dir=cache_dir, device=device, key="model",
                                transformer=transformer)
            return cls(pipe, f"{full} (full fine-tune of {base}{stand_in})")
        adapter = run / "adapter"
        if not adapter.is_dir():
            raise ConfigError(f"run={run} has no adapter/ or model/ yet: the run has not finished; resume it with "
                              "the same `tunekit train` command, or wait for it to end", key="run")
        pipe = load_acestep(base, tiny=tiny, cache_dir=cache_dir, device=device, key="model")
        load_lora_alpha_correct(pipe, adapter, key="run")
        return cls(pipe, f"{base}{stand_in} + LoRA adapter {adapter}")

    def add_adapter(self, folder: str | Path, key: str = "adapter") -> None:
        """Play a LoRA made elsewhere (official trainer, Side-Step: PEFT layout; or a diffusers file) at its true
        strength: `load_lora_alpha_correct`, which warns about modules it cannot place."""
        load_lora_alpha_correct(self.pipe, folder, key=key)
        self.description += f" + LoRA adapter {folder}"

    @property
    def codec(self) -> Any:
        """The pipeline's VAE (AutoencoderOobleck), for the reconstruction floor: `decode_latents(vae,
        encode_latents(vae, audio)[0])` is its encode → decode of 48 kHz stereo audio."""
        return self.pipe.vae

    @property
    def takes_melody(self) -> bool:
        """ACE-Step takes no melody chroma."""
        return False

    @staticmethod
    def codec_layout(path: str) -> tuple[bool, int]:
        """(stereo, codebooks) of the pipeline at `path`: its VAE is stereo with continuous latents (0 codebooks)."""
        from diffusers import AutoencoderOobleck

        config = AutoencoderOobleck.load_config(path, subfolder="vae")
        return int(config.get("audio_channels", 2)) == 2, 0

    @staticmethod
    def round_trip(vae: Any, audio: Any, rate: int, device: str) -> tuple[Any, int]:
        """The reconstruction floor's round trip: `reconstruct_with_vae` (the VAE stays where it was loaded)."""
        return reconstruct_with_vae(vae, audio, rate)

    def generate(
        self,
        prompts: list[str],
        seconds: float,
        *,
        seed: int = 0,
        lyrics: str | Sequence[str] | None = None,
        steps: int | None = None,
        shift: float | None = None,
        guidance_scale: float | None = None,
        bpm: Any = None,
        keyscale: str | None = None,
        timesignature: str | None = None,
        language: str | None = None,
        **ignored: Any,
    ) -> tuple[Any, int]:
        """(audio (B, 2, round(seconds·48000)) float32 numpy, 48000), peak-normalised to −1 dBFS by the pipeline.

        Settings left None take the variant's `INFERENCE_DEFAULTS`. Each prompt is sampled on its own from
        noise drawn with `seed` (so a clip is reproducible from its prompt and seed, and no prompt attends to
        another's padding). Options of other families (top_k, temperature, …) are ignored.
        """
        import numpy as np
        import torch

        defaults = INFERENCE_DEFAULTS[self.variant]
        n = int(round(seconds * self.pipe.sample_rate))
        clips = []
        for prompt, lyric in zip(prompts, _per_item("" if lyrics is None else lyrics, len(prompts), "lyrics"),
                                 strict=True):
            result = self.pipe(
                prompt=[prompt],
                lyrics=[lyric],
                audio_duration=float(seconds),
                vocal_language=language or "en",
                num_inference_steps=steps or defaults.steps,
                shift=defaults.shift if shift is None else shift,
                guidance_scale=defaults.guidance_scale if guidance_scale is None else guidance_scale,
                bpm=_bpm(bpm),
                keyscale=keyscale,
                timesignature=timesignature,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="pt",
            )
            audio = result.audios[0].float().cpu().numpy()[:, :n]
            clips.append(np.pad(audio, ((0, 0), (0, n - audio.shape[-1]))))
        return np.stack(clips).astype(np.float32), int(self.pipe.sample_rate)
