"""`tunekit generate`: make music with a fine-tuned run (its LoRA adapter or full model) or any MusicGen.

    tunekit generate run=runs/lofi prompt="warm lofi hip hop with piano" duration=20 out=lofi.wav
    tunekit generate model=facebook/musicgen-small prompt='[a calm piano, an upbeat synth pop]' out=x.wav

Sampling follows MusicGen's defaults: classifier-free guidance 3.0, top-k 250, temperature 1.0, one
seed. Durations beyond one window (30 s) use windowed continuation: the last `context_seconds` of codes
become the prompt of the next chunk, and the chunks are joined with a short cross-fade.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError
from tunekit.models.config import ModelsConfig


@dataclass
class GenerateConfig:
    """`tunekit generate`: sample audio from a trained run or a base MusicGen."""

    run: str | None = None  # run folder written by `tunekit train` (loads its adapter or full model)
    model: str | None = None  # base MusicGen id or folder when run= is not given (default facebook/musicgen-small)
    prompt: Any = None  # one prompt, or a list of prompts: prompt='[a, b]'
    prompts_file: str | None = None  # text file with one prompt per line (added to prompt=)
    duration: float = 10.0  # seconds of audio per prompt
    out: str = "generated.wav"  # output WAV; with several prompts: <stem>_00.wav, <stem>_01.wav, … beside it
    guidance: float = 3.0  # classifier-free guidance scale (1: off)
    top_k: int = 250  # top-k sampling (0: off)
    top_p: float = 0.0  # nucleus sampling (0: off)
    temperature: float = 1.0  # sampling temperature
    seed: int = 0  # sampling seed (the same seed and prompts give the same audio)
    batch_size: int = 4  # prompts generated together
    window_seconds: float = 30.0  # longest span generated in one pass (MusicGen's training window)
    context_seconds: float = 10.0  # continuation: seconds of the previous chunk used as the next chunk's prompt
    crossfade_seconds: float = 0.25  # continuation: cross-fade between chunks
    melody: str | None = None  # melody models: audio file whose chroma conditions the melody
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | mps
    models: ModelsConfig = field(default_factory=ModelsConfig)  # real or tiny weights

    @classmethod
    def problems(cls, cfg: Any) -> list[str]:
        """Invalid values, each naming its key."""
        p = []
        if cfg.run is not None and cfg.model is not None:
            p.append("run/model: give either run= (a trained run) or model= (a base model), not both")
        if cfg.prompt is None and not cfg.prompts_file:
            p.append("prompt: missing; set prompt='your text' (or prompt='[a, b]', or prompts_file=FILE)")
        if cfg.duration <= 0:
            p.append(f"duration: must be > 0 seconds (got {cfg.duration})")
        if cfg.guidance < 1 and cfg.guidance != 0:
            p.append("guidance: must be >= 1 (1 or 0 disables classifier-free guidance)")
        if cfg.temperature <= 0:
            p.append("temperature: must be > 0")
        if cfg.top_k < 0 or not 0 <= cfg.top_p <= 1:
            p.append("top_k/top_p: top_k must be >= 0 and top_p in [0, 1]")
        if cfg.batch_size < 1:
            p.append("batch_size: must be >= 1")
        if cfg.window_seconds <= 0:
            p.append("window_seconds: must be > 0")
        if not 0 <= cfg.context_seconds < cfg.window_seconds:
            p.append("context_seconds: must be >= 0 and shorter than window_seconds")
        if cfg.crossfade_seconds < 0 or cfg.crossfade_seconds > cfg.context_seconds:
            p.append("crossfade_seconds: must be >= 0 and at most context_seconds")
        if cfg.device not in ("auto", "cpu", "cuda", "mps"):
            p.append("device: must be auto, cpu, cuda or mps")
        return p


# --- code generation shared with the trainer's evaluation samples -------------------------------------


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
    guidance: float = 3.0,
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
        guidance_scale=guidance if guidance > 1 else None,
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
            model, tokenizer, prompts, new, seed=seed + chunk, prompt_codes=codes[..., -ctx:], chroma=chroma,
            **sampling,
        )
        part = decode_codes(codec, codes, channels).numpy()
        audio = crossfade_join(audio, part, int(round(ctx * hop)), int(round(crossfade_seconds * rate)))
        done += new
    return audio[..., : int(round(seconds * rate))], rate


# --- the verb ------------------------------------------------------------------------------------------


def _prompts(cfg: Any) -> list[str]:
    from omegaconf import ListConfig

    items: list[str] = []
    if isinstance(cfg.prompt, (list, tuple, ListConfig)):
        items += [str(p) for p in cfg.prompt]
    elif cfg.prompt is not None:
        items.append(str(cfg.prompt))
    if cfg.prompts_file:
        path = Path(cfg.prompts_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompts_file={path} does not exist", key="prompts_file")
        items += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not items:
        raise ConfigError("no prompts: set prompt='…' or prompts_file=FILE", key="prompt")
    return items


def load_for_generation(cfg: Any, device: Any) -> tuple[Any, Any, str]:
    """(model, processor, description) for `run=` (adapter merged into its base, or the full model) or `model=`."""
    from tunekit.models.musicgen import load_musicgen

    if cfg.run is None:
        name = cfg.model or "facebook/musicgen-small"
        model, processor = load_musicgen(name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir)
        return model.to(device), processor, name + (" (tiny random stand-in)" if cfg.models.tiny else "")
    run = Path(cfg.run).expanduser()
    config_file = run / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"run={run} is not a tunekit run folder (no config.yaml)", key="run")
    from omegaconf import OmegaConf

    train_cfg = OmegaConf.load(config_file)
    if (run / "model" / "config.json").is_file():
        model, processor = load_musicgen(str(run / "model"))
        return model.to(device), processor, f"{run}/model (full fine-tune of {train_cfg.model.name})"
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
        model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    tiny = " (tiny random stand-in)" if models.get("tiny", False) else ""
    return model.to(device), processor, f"{train_cfg.model.name}{tiny} + LoRA adapter {adapter}"


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available; use device=cpu", key="device")
    return torch.device(name)


def run_generate(cfg: Any) -> int:
    """Generate one WAV per prompt at the model's sample rate; prints where each went."""
    import numpy as np

    from tunekit.audio.io import write_audio

    problems = GenerateConfig.problems(cfg)
    if problems:
        from tunekit.errors import ConfigErrors

        raise ConfigErrors(problems)
    prompts = _prompts(cfg)
    device = _device(cfg.device)
    model, processor, what = load_for_generation(cfg, device)
    model.eval()
    tokenizer = getattr(processor, "tokenizer", processor)
    chroma = None
    if cfg.melody:
        from tunekit.train.lm import is_melody

        if not is_melody(model):
            raise ConfigError(f"melody= needs a melody model; {what} is text-only", key="melody")
        chroma = _melody_chroma(cfg.melody)
    out = Path(cfg.out).expanduser()
    if out.suffix.lower() != ".wav":
        raise ConfigError(f"out={out} must end in .wav", key="out")
    paths = [out] if len(prompts) == 1 else [out.with_name(f"{out.stem}_{i:02d}.wav") for i in range(len(prompts))]
    print(f"generate: {what} on {device}; {len(prompts)} prompt(s), {cfg.duration:g} s each, "
          f"guidance {cfg.guidance:g}, top-k {cfg.top_k}, temperature {cfg.temperature:g}, seed {cfg.seed}")
    sampling = dict(guidance=cfg.guidance, top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature)
    written = []
    for first in range(0, len(prompts), cfg.batch_size):
        batch = prompts[first : first + cfg.batch_size]
        c = None if chroma is None else chroma.expand(len(batch), -1, -1)
        audio, rate = generate_audio(
            model, tokenizer, model.audio_encoder, batch, cfg.duration, window_seconds=cfg.window_seconds,
            context_seconds=cfg.context_seconds, crossfade_seconds=cfg.crossfade_seconds,
            seed=cfg.seed + first, chroma=c, **sampling,
        )
        for i, a in enumerate(audio):
            path = paths[first + i]
            peak = float(np.max(np.abs(a))) if a.size else 0.0
            write_audio(path, a / peak * 0.99 if peak > 0.99 else a, rate, subtype="FLOAT")
            written.append({"path": str(path), "prompt": batch[i], "seconds": a.shape[-1] / rate, "rate": rate})
            print(f"  {path}  ({a.shape[-1] / rate:.2f} s, {rate} Hz)  {batch[i]}")
    from tunekit.atomic import write_json

    write_json(out.with_name(f"{out.stem}.json"), {"source": what, "seed": cfg.seed, "files": written, **sampling})
    return 0


def _melody_chroma(path: str) -> Any:
    import torch

    from tunekit.audio.io import read_audio
    from tunekit.data.chroma import melody_chroma

    audio, rate = read_audio(path)
    mono = audio.mean(axis=0)
    if rate != 32000:
        import soxr

        mono = soxr.resample(mono, rate, 32000)
    return torch.from_numpy(melody_chroma(mono, 32000))[None]

