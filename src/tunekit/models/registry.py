"""Every pretrained model tunekit knows, and `resolve`: the one place where `models=tiny` swaps ids.

A real id is passed to the library's loader unchanged (a Hugging Face Hub id, a local folder, or a
Demucs model name). With `tiny=True` it becomes the local path of a tiny random model of the same
class and variant, built on first use by `tunekit.models.tiny`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunekit.errors import ConfigError
from tunekit.models.hub import is_local_path


@dataclass(frozen=True)
class ModelSpec:
    """A real pretrained model: its id, what tunekit uses it for, and its tiny stand-in."""

    id: str  # Hugging Face Hub id, or a Demucs model name (htdemucs, …)
    role: str  # what tunekit uses it for: generator, codec, separator, embedding
    loader: str  # which loader reads it: musicgen, musicgen_melody, acestep, encodec, demucs, clap, vggish
    description: str  # one line for `tunekit ls`
    tiny_name: str  # folder under <cache>/tiny/ of the tiny model of the same class
    license: str | None = None  # licence of the pretrained weights (SPDX id), stated in model cards; None: not known


_T5 = "T5-base text encoder"
_MUSICGEN_WEIGHTS = "CC-BY-NC-4.0"  # audiocraft's MusicGen weights licence
MODELS: list[ModelSpec] = [
    # MusicGen (transformers format; audiocraft's official checkpoints, weights CC BY-NC 4.0).
    # Tokens: EnCodec 32 kHz, 50 Hz.
    ModelSpec("facebook/musicgen-small", "generator", "musicgen",
              f"MusicGen 300M, mono, 4 codebooks, {_T5} (the default)", "musicgen", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-medium", "generator", "musicgen",
              f"MusicGen 1.5B, mono, 4 codebooks, {_T5}", "musicgen", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-large", "generator", "musicgen",
              f"MusicGen 3.3B, mono, 4 codebooks, {_T5}", "musicgen", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-melody", "generator", "musicgen_melody",
              f"MusicGen 1.5B conditioned on text and a melody (chroma), mono, {_T5}",
              "musicgen-melody", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-melody-large", "generator", "musicgen_melody",
              f"MusicGen 3.3B conditioned on text and a melody (chroma), mono, {_T5}",
              "musicgen-melody", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-stereo-small", "generator", "musicgen",
              f"MusicGen 300M, stereo (8 interleaved codebooks), {_T5}", "musicgen-stereo", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-stereo-medium", "generator", "musicgen",
              f"MusicGen 1.5B, stereo (8 interleaved codebooks), {_T5}", "musicgen-stereo", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-stereo-large", "generator", "musicgen",
              f"MusicGen 3.3B, stereo (8 interleaved codebooks), {_T5}", "musicgen-stereo", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-stereo-melody", "generator", "musicgen_melody",
              f"MusicGen 1.5B, text + melody, stereo (8 codebooks), {_T5}",
              "musicgen-stereo-melody", _MUSICGEN_WEIGHTS),
    ModelSpec("facebook/musicgen-stereo-melody-large", "generator", "musicgen_melody",
              f"MusicGen 3.3B, text + melody, stereo (8 codebooks), {_T5}",
              "musicgen-stereo-melody", _MUSICGEN_WEIGHTS),
    # ACE-Step 1.5 (diffusers AceStepPipeline; weights MIT). 48 kHz stereo, VAE latents at 25 Hz, flow-matching DiT
    # with a Qwen3 text encoder. Turbo and base are the official diffusers-format XL checkpoints (turbo is the one
    # diffusers 0.42.1's pipeline example loads); one DiT shape, so a LoRA moves between them. sft is the id of
    # diffusers' documentation table; a checkpoint in the original layout loads once converted with diffusers'
    # scripts/convert_ace_step_to_diffusers.py (pass the folder as model.name).
    ModelSpec("ACE-Step/acestep-v15-xl-turbo-diffusers", "generator", "acestep",
              "ACE-Step 1.5 XL turbo: guidance-distilled, 8 steps, no CFG (the default)", "acestep-turbo", "MIT"),
    ModelSpec("ACE-Step/acestep-v15-xl-base-diffusers", "generator", "acestep",
              "ACE-Step 1.5 XL base: the pre-trained DiT, guidance with the null condition, ~50 steps",
              "acestep-base", "MIT"),
    ModelSpec("ACE-Step/acestep-v15-sft", "generator", "acestep",
              "ACE-Step 1.5 sft: base after supervised fine-tuning, guidance with the null condition, ~50 steps",
              "acestep-sft", "MIT"),
    # The audio tokenizer of every MusicGen checkpoint above.
    ModelSpec("facebook/encodec_32khz", "codec", "encodec",
              "EnCodec 32 kHz mono, 4 codebooks x 2048 at 50 Hz (MusicGen's audio tokens)", "encodec_32khz"),
    # Demucs source separation (demucs model names; weights on the Hub under adefossez/).
    ModelSpec("htdemucs", "separator", "demucs",
              "Hybrid Transformer Demucs v4, 4 stems (drums, bass, other, vocals), 44.1 kHz (the default)",
              "htdemucs"),
    ModelSpec("htdemucs_ft", "separator", "demucs",
              "htdemucs fine-tuned per stem: a bag of 4 models, one per stem (4x slower)", "htdemucs_ft"),
    ModelSpec("htdemucs_6s", "separator", "demucs",
              "htdemucs with 6 stems (adds guitar and piano)", "htdemucs_6s"),
    ModelSpec("hdemucs_mmi", "separator", "demucs",
              "Hybrid Demucs v3, 4 stems", "hdemucs_mmi"),
    ModelSpec("mdx_extra", "separator", "demucs",
              "Hybrid Demucs v3 bag of 4 models trained with extra data (MDX 2021 track B)", "mdx_extra"),
    # CLAP for the CLAP score and CLAP-embedding FAD.
    ModelSpec("laion/larger_clap_music", "embedding", "clap",
              "CLAP (HTSAT-base audio + RoBERTa text), 48 kHz, 512-d, trained on music (the default)", "clap"),
    ModelSpec("laion/larger_clap_music_and_speech", "embedding", "clap",
              "CLAP (HTSAT-base + RoBERTa), 48 kHz, 512-d, music and speech", "clap"),
    ModelSpec("laion/larger_clap_general", "embedding", "clap",
              "CLAP (HTSAT-base + RoBERTa), 48 kHz, 512-d, general audio", "clap"),
    ModelSpec("laion/clap-htsat-unfused", "embedding", "clap",
              "CLAP (HTSAT-tiny + RoBERTa), 48 kHz, 512-d, general audio", "clap"),
    # VGGish for VGGish-embedding FAD (torchvggish's release files; see tunekit.models.vggish).
    ModelSpec("torchvggish", "embedding", "vggish",
              "VGGish (AudioSet), 16 kHz, 0.96 s frames, 128-d, torchvggish weights + PCA", "vggish"),
]

DEFAULTS: dict[str, str] = {
    "musicgen": "facebook/musicgen-small",
    "acestep": "ACE-Step/acestep-v15-xl-turbo-diffusers",
    "encodec": "facebook/encodec_32khz",
    "demucs": "htdemucs",
    "clap": "laion/larger_clap_music",
    "vggish": "torchvggish",
}
"""The real id each loader uses when a config leaves it at its default."""


def find_spec(name: str) -> ModelSpec | None:
    """The spec whose id is `name` (case-insensitive), or None for an id tunekit does not know."""
    wanted = name.strip().lower()
    for spec in MODELS:
        if spec.id.lower() == wanted:
            return spec
    return None


def resolve(name_or_path: str, *, tiny: bool, cache_dir: str | Path | None = None) -> str:
    """What to pass to the loader for `name_or_path`.

    Without `tiny` (or for a local path, which is used as given) it is returned unchanged. With
    `tiny` a known real id becomes the path of its tiny stand-in, built into
    `<cache_dir>/tiny/<tiny_name>/` on first use (`cache_dir` defaults to `tunekit.paths.cache_dir()`).
    """
    name_or_path = str(name_or_path)
    if not tiny or is_local_path(name_or_path):
        return name_or_path
    spec = find_spec(name_or_path)
    if spec is None:
        known = ", ".join(s.id for s in MODELS)
        raise ConfigError(
            f"models.tiny is true but {name_or_path!r} is not a model tunekit has a tiny stand-in for; "
            f"use one of the known ids ({known}), pass a local checkpoint folder, or set models.tiny=false",
            key="models.tiny",
        )
    from tunekit.models.tiny import ensure_tiny

    return str(ensure_tiny(spec.tiny_name, cache_dir=cache_dir))
