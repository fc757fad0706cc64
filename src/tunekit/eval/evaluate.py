"""Score audio sets against a reference into the metrics.json dict, for both modes of `tunekit eval`.

`load_embedders` builds the configured embedders; `sample_size_problems` says, before any audio is generated
or embedded, what keeps FAD and KAD from being computed; `evaluate` scores every set (FAD, FAD∞, KAD, outliers
and the CLAP score, by `tunekit.eval.score`; the chroma cosine similarity for sets generated from melodies, by
`tunekit.eval.chroma_cosine`), adds the reconstruction floor and, for a pair of sets generated from the same
prompts, the paired comparison (`delta`), and assembles metrics.json.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
from collections.abc import Mapping
from typing import Any

from tunekit.eval.config import EvalConfig
from tunekit.eval.kad import BLOCK, MEDIAN_FRAMES, SCALE
from tunekit.eval.paired import LEVEL, MIN_PROMPTS
from tunekit.eval.reconstruction import CodecSource, encodec_source
from tunekit.eval.score import (
    FadSettings,
    Reference,
    SetScores,
    clap_fields,
    floor_metrics,
    log,
    paired_deltas,
    prompt_score,
    reference_for,
    score_set,
    set_statistics,
)
from tunekit.eval.sets import AudioItem, AudioSet


def versions() -> dict[str, str]:
    """Versions of tunekit and the libraries that shape the numbers."""
    out = {"python": platform.python_version()}
    for pkg in ("tunekit", "torch", "transformers", "numpy", "scipy", "soxr", "soundfile"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            if pkg == "tunekit":
                from tunekit import __version__

                out[pkg] = __version__
    return out


def fad_settings(config: EvalConfig) -> FadSettings:
    """How FAD∞ is fitted, from the config."""
    return FadSettings(
        enabled=config.fad_inf,
        steps=config.fad_inf_steps,
        min_n=config.fad_inf_min_n,
        draws=config.fad_inf_draws,
        seed=config.seed,
    )


def load_embedders(config: EvalConfig, names: list[str] | None = None) -> list[Any]:
    """The embedders named in `config.embeddings` (or `names`), loaded from the configured models."""
    from tunekit.eval.embeddings import load_embedder

    return [
        load_embedder(name, models=config.models, clap_model=config.clap_model, encodec_model=config.encodec_model,
                      vggish_model=config.vggish_model, device=config.device)
        for name in (config.embeddings if names is None else names)
    ]


def sample_size_problems(
    embedders: list[Any], sides: dict[str, tuple[list[float], str]]
) -> list[str]:
    """What keeps FAD and KAD from being computed, per embedding and side, before any audio is generated or embedded.

    `sides` maps a side's name to its clip lengths in seconds and the config keys that change them. FAD needs
    at least two embedding frames on each side (a covariance), and so does KAD (pairs of distinct frames); a
    full-rank covariance, which only FAD needs, is a warning after scoring, not a refusal. Each embedder's
    window policy says how many frames a clip of a given length gives.
    """
    from collections import Counter

    from tunekit.eval.embeddings import frames_for_seconds

    out = []
    for e in embedders:
        for side, (seconds, fix) in sides.items():
            lengths = Counter(round(s, 3) for s in seconds)
            frames = sum(k * frames_for_seconds(e, s) for s, k in lengths.items())
            if frames < 2:
                longest = max(seconds, default=0.0)
                out.append(
                    f"{e.name}: the {side} set gives {frames} frame(s) from {len(seconds)} clip(s) of at most "
                    f"{longest:g} s ({e.policy}); FAD and KAD need at least 2: {fix}, or leave {e.name} out of `embeddings` "
                    f"(e.g. embeddings=[{','.join(x.name for x in embedders if x is not e) or 'clap'}])"
                )
    return out


def evaluate(
    config: EvalConfig,
    sets: dict[str, AudioSet],
    reference: AudioSet,
    *,
    codec: CodecSource | None = None,
    embedders: list[Any] | None = None,
    paired: tuple[str, str] | None = None,
    melodies: Mapping[str, AudioItem] | None = None,
) -> tuple[dict[str, Any], list[SetScores]]:
    """Score each set against the reference; returns the metrics.json dict and the per-set scores.

    `codec` is the generator's own audio codec for the reconstruction floor (run mode); without it
    the floor uses `config.encodec_model`. `embedders` are the configured embedders when already
    loaded (by `load_embedders`). `paired` names two sets generated from the same prompts and seeds
    (base, fine-tuned): metrics.json then gets `delta`, the second minus the first per metric with its
    bootstrap interval (`config.bootstrap` resamples). `melodies` maps each clip id to the audio whose melody
    conditioned it (melody models): every set then gets its chroma cosine similarity to those melodies.
    """
    from tunekit.models.device import resolve_device
    from tunekit.models.embedders import ClapEmbedder
    from tunekit.paths import cache_dir

    def build(name: str) -> Any:
        return load_embedders(config, [name])[0]

    if embedders is None:
        embedders = load_embedders(config)
    want_clap = config.clap_score and (reference.prompts() or any(s.prompts() for s in sets.values()))
    clap = next((e for e in embedders if isinstance(e, ClapEmbedder)), None)
    if want_clap and clap is None:
        clap = build("clap")
    all_embedders = embedders + ([clap] if clap is not None and clap not in embedders else [])
    cache_root = cache_dir() if config.cache else None
    settings = fad_settings(config)

    ref_stats, cached = set_statistics(all_embedders, reference, batch_size=config.batch_size, cache_root=cache_root,
                                       keep_frames=config.kad)
    if cached:
        log(f"reference statistics from the cache for {', '.join(cached)}")
    device = resolve_device(config.device)
    references = {
        name: reference_for(ref_stats[name], kad=config.kad, kad_max_frames=config.kad_max_frames, device=device,
                            what=name)
        for name in config.embeddings
    }
    scores = [
        score_set(
            name,
            audio_set,
            all_embedders,
            list(config.embeddings),
            references,
            batch_size=config.batch_size,
            fad_settings=settings,
            n_outliers=config.outliers,
            clap_embedder=clap if want_clap else None,
            kad_max_frames=config.kad_max_frames,
        )
        for name, audio_set in sets.items()
    ]

    ref_metrics: dict[str, Any] = {
        "source": str(reference.root),
        "kind": reference.kind,
        "splits": list(reference.splits),
        "n_clips": len(reference.items),
        "content_hash": reference.content_hash(),
        "cached": cached,
    }
    for e in embedders:
        ref_metrics[e.name] = {"n": ref_stats[e.name].n, "dim": ref_stats[e.name].dim, "reconstruction": None}
        kad_ref = references[e.name].kad
        if kad_ref is not None:
            ref_metrics[e.name].update({"kad_n": kad_ref.n, "kad_bandwidth": kad_ref.bandwidth})
    ref_prompts = reference.prompts()
    ref_score = None
    if want_clap and clap is not None and ref_prompts:
        ref_score = prompt_score(ref_stats[clap.name].clip_vectors(), ref_prompts, clap)
    ref_metrics.update(clap_fields(ref_score))

    if config.reconstruction_floor and embedders:
        if codec is None:
            codec = encodec_source(config, embedders)
        floor = reconstruction_floor(config, embedders, reference, references, cache_root, settings, codec)
        for name, entry in floor.items():
            ref_metrics[name]["reconstruction"] = entry

    metrics: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "seed": config.seed,
        "embeddings": {e.name: e.describe() for e in all_embedders},
        "fad_inf_settings": {"steps": settings.steps, "min_n": settings.min_n, "draws": settings.draws,
                             "replace": False, "enabled": settings.enabled, "min_subset": "2 × dim"},
        "kad_settings": {"enabled": config.kad, "kernel": "gaussian rbf", "scale": SCALE,
                         "bandwidth": "median pairwise distance of the reference frames",
                         "bandwidth_frames": MEDIAN_FRAMES, "max_frames": config.kad_max_frames, "block": BLOCK,
                         "device": device},
        "models": {"clap": config.clap_model, "encodec": config.encodec_model, "vggish": config.vggish_model,
                   "tiny": bool(config.models.tiny)},
        "reference": ref_metrics,
    }
    if melodies is not None:
        from tunekit.eval.chroma_cosine import SETTINGS, chroma_fields, set_chroma

        cache: dict[str, Any] = {}
        for s in scores:
            log(f"chroma of {s.name}: {len(s.audio_set.items)} clips against their melodies")
            s.chroma = set_chroma(s.audio_set, melodies, cache)
            s.metrics.update(chroma_fields(s.chroma))
        metrics["chroma_settings"] = SETTINGS
    for s in scores:
        metrics[s.name] = s.metrics
    if ref_score is not None:
        ref_metrics["clap_score_unmatched"] = len(ref_score.unmatched)
    if paired is not None:
        by_name = {s.name: s for s in scores}
        deltas = paired_deltas(by_name[paired[0]], by_name[paired[1]], references, list(config.embeddings),
                               resamples=config.bootstrap, seed=config.seed)
        metrics["delta"] = {k: d.to_dict() for k, d in deltas.items()}
        metrics["delta_settings"] = {"of": f"{paired[1]} − {paired[0]}", "resamples": config.bootstrap,
                                     "level": LEVEL, "interval": "percentile", "unit": "prompt",
                                     "seed": config.seed, "min_prompts_for_verdict": MIN_PROMPTS}
    return metrics, scores


def reconstruction_floor(
    config: EvalConfig,
    embedders: list[Any],
    reference: AudioSet,
    references: dict[str, Reference],
    cache_root: Any,
    settings: FadSettings,
    codec: CodecSource,
) -> dict[str, dict[str, Any]]:
    """FAD and KAD of the reference after encode → decode through the codec, per embedding."""
    from tunekit.eval.reconstruction import bandwidth_for, reconstruct
    from tunekit.models.device import resolve_device

    device = resolve_device(config.device)
    variant = f"reconstruction:{codec.id}:{codec.codebooks}:{'stereo' if codec.stereo else 'mono'}"
    state: dict[str, Any] = {}

    def transform(audio: Any, rate: int) -> tuple[Any, int]:
        if "codec" not in state:
            state["codec"] = codec.load()
            if codec.round_trip is None:
                state["bandwidth"] = bandwidth_for(state["codec"], codec.codebooks)
        if codec.round_trip is not None:
            return codec.round_trip(state["codec"], audio, rate, device)
        return reconstruct(audio, rate, state["codec"], bandwidth=state["bandwidth"], stereo=codec.stereo, device=device)

    recon, _ = set_statistics(embedders, reference, batch_size=config.batch_size, cache_root=cache_root,
                              variant=variant, transform=transform, keep_frames=True)
    floor = floor_metrics(recon, references, settings, [e.name for e in embedders],
                          kad_max_frames=config.kad_max_frames)
    for entry in floor.values():
        entry["codec"] = codec.id
        entry["codebooks"] = codec.codebooks
    return floor
