"""`tunekit generate`: make music with a fine-tuned run (its LoRA adapter or full model) or any MusicGen.

    tunekit generate run=runs/lofi prompt="warm lofi hip hop with piano" duration=20 out=lofi.wav
    tunekit generate model=facebook/musicgen-small prompt='[a calm piano, an upbeat synth pop]' out=x.wav

Sampling follows MusicGen's defaults: classifier-free guidance 3.0, top-k 250, temperature 1.0, one
seed. Durations beyond one window (30 s) use windowed continuation: the last `context_seconds` of codes
become the prompt of the next chunk, and the chunks are joined with a short cross-fade. The sampling
itself is the model family's sampler (`tunekit.families`; MusicGen's in `tunekit.models.musicgen`); this
module is the verb: its config, prompts and output files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError
from tunekit.models.config import ModelChoice, ModelsConfig


@dataclass
class GenerateConfig:
    """`tunekit generate`: sample audio from a trained run or a base MusicGen."""

    run: str | None = None  # run folder written by `tunekit train` (loads its adapter or full model)
    model: ModelChoice = field(default_factory=ModelChoice)  # base model when run= is not given (model=<checkpoint>)
    prompt: Any = None  # one prompt, or a list of prompts: prompt='[a, b]'
    prompts_file: str | None = None  # text file with one prompt per line (added to prompt=)
    duration: float = 10.0  # seconds per prompt; beyond window_seconds the track is continued window by window
    out: str = "generated.wav"  # output WAV; with several prompts: <stem>_00.wav, <stem>_01.wav, … beside it
    # classifier-free guidance scale (1: off); null: the model's default (MusicGen 3.0; ACE-Step turbo 1.0 = off,
    # base/sft 7.0)
    guidance_scale: float | None = None
    top_k: int = 250  # MusicGen: top-k sampling (0: off)
    top_p: float = 0.0  # MusicGen: nucleus sampling (0: off)
    temperature: float = 1.0  # MusicGen: sampling temperature
    adapter: str | None = None  # ACE-Step: a LoRA folder made elsewhere (official/Side-Step PEFT or diffusers), at its alpha
    lyrics: str | None = None  # ACE-Step: lyrics for every prompt (`[verse] …` is taken as text); null: none
    lyrics_file: str | None = None  # ACE-Step: a .txt or .lrc file of lyrics (LRC timestamps dropped); or lyrics=
    steps: int | None = None  # ACE-Step: sampling steps; null: the variant's (turbo 8, base/sft 50)
    shift: float | None = None  # ACE-Step: timestep shift; null: the variant's (turbo 3.0, base/sft 1.0)
    seed: int = 0  # sampling seed (the same seed and prompts give the same audio)
    batch_size: int = 4  # prompts generated together
    window_seconds: float = 30.0  # longest span generated in one pass (MusicGen's training window)
    context_seconds: float = 10.0  # continuation: seconds of the previous chunk prompting the next (audiocraft's)
    crossfade_seconds: float = 0.25  # continuation: cross-fade between chunks
    melody: str | None = None  # melody models: audio file whose chroma conditions the melody
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | mps
    models: ModelsConfig = field(default_factory=ModelsConfig)  # real or tiny weights

    @classmethod
    def problems(cls, cfg: Any) -> list[str]:
        """Invalid values, each naming its key."""
        p = []
        if cfg.run is not None and cfg.adapter:
            p.append("run/adapter: give either run= (a tunekit run) or adapter= (a LoRA folder made elsewhere)")
        if cfg.prompt is None and not cfg.prompts_file:
            p.append("prompt: missing; set prompt='your text' (or prompt='[a, b]', or prompts_file=FILE)")
        if cfg.duration <= 0:
            p.append(f"duration: must be > 0 seconds (got {cfg.duration})")
        if cfg.guidance_scale is not None and cfg.guidance_scale < 1 and cfg.guidance_scale != 0:
            p.append("guidance_scale: must be >= 1 (1 or 0 disables classifier-free guidance)")
        if cfg.temperature <= 0:
            p.append("temperature: must be > 0")
        if cfg.lyrics is not None and cfg.lyrics_file:
            p.append("lyrics/lyrics_file: give the lyrics as text or as a file, not both")
        if cfg.steps is not None and cfg.steps < 1:
            p.append("steps: must be >= 1 (or null: the variant's)")
        if cfg.shift is not None and cfg.shift <= 0:
            p.append("shift: must be > 0 (or null: the variant's)")
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


def run_generate(cfg: Any) -> int:
    """Generate one WAV per prompt at the model's sample rate with its family's sampler; prints where each went."""
    import numpy as np
    import torch

    from tunekit.audio.io import write_audio
    from tunekit.families import family_of_model, family_of_run, get_family
    from tunekit.models.device import resolve_device

    problems = GenerateConfig.problems(cfg)
    if problems:
        from tunekit.errors import ConfigErrors

        raise ConfigErrors(problems)
    prompts = _prompts(cfg)
    device = torch.device(resolve_device(cfg.device, key="device"))
    note = None
    if cfg.run:
        family, name = family_of_run(cfg.run), cfg.model.name
        if name is not None:
            if family.name != "acestep":
                raise ConfigError(f"run= and model.name={name}: a {family.name} run plays on the base it was trained "
                                  "on; give one of them", key="model.name")
            note = _variant_pairing(cfg.run, name)
    else:
        family = get_family(cfg.model.family, key="model")
        name = cfg.model.name or family.default_checkpoint()
        if family_of_model(name, key="model.name").name != family.name:
            raise ConfigError(f"model.name={name} is not a {family.name} checkpoint; give model=<checkpoint> alone "
                              "and its family is chosen with it", key="model.name")
    sampler = family.part("sampler").load(
        cfg.run, name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir, device=device
    )
    if cfg.adapter:
        if not hasattr(sampler, "add_adapter"):
            raise ConfigError(f"adapter= takes ACE-Step LoRAs; for {family.name} give run= (a tunekit run)",
                              key="adapter")
        sampler.add_adapter(Path(cfg.adapter).expanduser())
    if note:
        print(f"warning: {note}", flush=True)
    chroma = None
    if cfg.melody:
        if not sampler.takes_melody:
            raise ConfigError(f"melody= needs a melody model; {sampler.description} is text-only", key="melody")
        chroma = _melody_chroma(cfg.melody)
    out = Path(cfg.out).expanduser()
    if out.suffix.lower() != ".wav":
        raise ConfigError(f"out={out} must end in .wav", key="out")
    paths = [out] if len(prompts) == 1 else [out.with_name(f"{out.stem}_{i:02d}.wav") for i in range(len(prompts))]
    print(f"generate: {sampler.description} on {device}; {len(prompts)} prompt(s), {cfg.duration:g} s each, "
          f"guidance scale {'the model default' if cfg.guidance_scale is None else f'{cfg.guidance_scale:g}'}, "
          f"seed {cfg.seed}")
    sampling = dict(guidance_scale=cfg.guidance_scale, top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature,
                    lyrics=_lyrics(cfg), steps=cfg.steps, shift=cfg.shift)
    written = []
    for first in range(0, len(prompts), cfg.batch_size):
        batch = prompts[first : first + cfg.batch_size]
        c = None if chroma is None else chroma.expand(len(batch), -1, -1)
        audio, rate = sampler.generate(
            batch, cfg.duration, seed=cfg.seed + first, window_seconds=cfg.window_seconds,
            context_seconds=cfg.context_seconds, crossfade_seconds=cfg.crossfade_seconds, chroma=c, **sampling,
        )
        for i, a in enumerate(audio):
            path = paths[first + i]
            peak = float(np.max(np.abs(a))) if a.size else 0.0
            write_audio(path, a / peak * 0.99 if peak > 0.99 else a, rate, subtype="FLOAT")
            written.append({"path": str(path), "prompt": batch[i], "seconds": a.shape[-1] / rate, "rate": rate})
            print(f"  {path}  ({a.shape[-1] / rate:.2f} s, {rate} Hz)  {batch[i]}")
    from tunekit.atomic import write_json

    write_json(out.with_name(f"{out.stem}.json"), {"source": sampler.description, "seed": cfg.seed, "files": written,
                                                   "pairing": note, **sampling})
    return 0


def _variant_pairing(run: str, name: str) -> str | None:
    """A warning when a run's LoRA plays on an ACE-Step variant it was not trained on and users have not reported
    that pair to work (a LoRA trained on base is reported to work on sft and turbo, not the reverse)."""
    from omegaconf import OmegaConf

    from tunekit.families import model_options, option_for_checkpoint

    trained = str(OmegaConf.load(Path(run).expanduser() / "config.yaml").model.name)
    a, b = option_for_checkpoint(trained), option_for_checkpoint(name)
    if a == b or a.endswith("-base"):
        return None
    return (f"the run was trained on {trained} ({a}) and plays on {name} ({b}): an untested pairing (LoRAs trained "
            f"on base are the ones reported to carry over); options: {', '.join(model_options())}")


def _lyrics(cfg: Any) -> str | None:
    """`lyrics=`, or the text of `lyrics_file=` (an .lrc file's timestamps dropped)."""
    if not cfg.lyrics_file:
        return cfg.lyrics
    from tunekit.prep.lyrics import parse_lyrics

    path = Path(cfg.lyrics_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"lyrics_file={path} does not exist", key="lyrics_file")
    try:
        return parse_lyrics(path.read_text(encoding="utf-8"))[0]
    except UnicodeDecodeError as exc:
        raise ConfigError(f"lyrics_file={path} is not UTF-8 text ({exc})", key="lyrics_file") from exc


def _melody_chroma(path: str) -> Any:
    """(1, frames, 12) chroma of the melody file's mono mix at 32 kHz, as the melody models take it."""
    import torch

    from tunekit.audio.channels import to_mono
    from tunekit.audio.io import read_audio
    from tunekit.audio.resample import resample
    from tunekit.data.chroma import melody_chroma

    audio, rate = read_audio(path)
    mono = resample(to_mono(audio), rate, 32000)
    return torch.from_numpy(melody_chroma(mono, 32000))[None]

