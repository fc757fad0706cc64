"""Score audio sets against a reference: FAD, FAD∞ and KAD per embedding, per-clip outliers, CLAP scores, the
reconstruction floor, and the paired comparison of two sets generated from the same prompts (chroma cosine
similarity too, for melody-conditioned sets). Shared by both modes of `tunekit eval`; knows nothing of runs or
generation.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunekit.errors import TunekitError
from tunekit.eval import stats_cache
from tunekit.eval.chroma_cosine import ClipChroma
from tunekit.eval.clap_score import ClapScore, clap_score, clip_vectors
from tunekit.eval.embeddings import embed_items
from tunekit.eval.fad import (
    FadGroups,
    fad,
    fad_inf,
    fad_inf_problem,
    per_item_distances,
    rank_warning,
    subset_sizes,
)
from tunekit.eval.frechet import FrechetReference
from tunekit.eval.kad import KadGroups, KadReference, thin
from tunekit.eval.outliers import find_outliers
from tunekit.eval.paired import Delta, paired_bootstrap, resample_counts
from tunekit.eval.sets import AudioSet
from tunekit.eval.stats_cache import SetStats
from tunekit.models.embedders import ClapEmbedder, Embedder

Transform = Callable[[np.ndarray, int], tuple[np.ndarray, int]]


def log(message: str) -> None:
    """One progress line on stderr."""
    print(f"tunekit eval: {message}", file=sys.stderr, flush=True)


@dataclass
class FadSettings:
    """How FAD∞ is fitted."""

    enabled: bool = True
    steps: int = 10
    min_n: int = 0
    draws: int = 3
    seed: int = 0


@dataclass
class Reference:
    """One embedding's reference: the Gaussian FAD measures against and the frames KAD measures against."""

    fad: FrechetReference
    n: int
    kad: KadReference | None = None


def reference_for(stats: SetStats, *, kad: bool, kad_max_frames: int, device: str = "cpu", what: str = "") -> Reference:
    """The FAD Gaussian of reference statistics and, with `kad`, KAD's reference (its frames thinned to
    `kad_max_frames`; `stats.frames` must be kept)."""
    kad_ref = None
    if kad:
        if stats.frames is None:
            raise ValueError("KAD needs the reference frames: compute the statistics with keep_frames=True")
        frames, _ = thin([stats.frames], kad_max_frames)
        try:
            kad_ref = KadReference(frames[0], device=device)
        except ValueError as exc:
            raise TunekitError(f"{what} reference: {exc}; use another reference, or kad=false") from exc
    return Reference(fad=FrechetReference(stats.mu, stats.sigma), n=stats.n, kad=kad_ref)


@dataclass
class SetScores:
    """Scores of one evaluated set: `metrics` goes to metrics.json; the rest feeds the report and the paired
    comparison."""

    name: str
    audio_set: AudioSet
    metrics: dict[str, Any]
    distances: dict[str, dict[str, float]] = field(default_factory=dict)  # embedding → clip id → Fréchet distance
    clap: ClapScore | None = None
    frames: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # embedding → clip id → frames
    kad_groups: dict[str, KadGroups] = field(default_factory=dict)  # embedding → kernel sums by clip (sorted ids)
    chroma: dict[str, ClipChroma] = field(default_factory=dict)  # clip id → chroma cosine (melody-conditioned sets)


def clips(audio_set: AudioSet, transform: Transform | None = None) -> Iterator[tuple[str, np.ndarray, int]]:
    """(id, audio, rate) for each clip of a set, optionally passed through `transform`."""
    for item in audio_set.items:
        audio, rate = item.load()
        if transform is not None:
            audio, rate = transform(audio, rate)
        yield item.id, audio, rate


def set_statistics(
    embedders: list[Embedder],
    audio_set: AudioSet,
    *,
    batch_size: int,
    cache_root: Any | None,
    variant: str = "",
    transform: Transform | None = None,
    keep_frames: bool = False,
) -> tuple[dict[str, SetStats], list[str]]:
    """Statistics of `audio_set` per embedder, from the cache where present; returns them and the cached names.

    `variant` distinguishes derived sets (e.g. the codec-reconstructed reference) in the cache key.
    """
    out: dict[str, SetStats] = {}
    cached: list[str] = []
    todo: list[tuple[Embedder, Any]] = []
    for e in embedders:
        path = None
        if cache_root is not None:
            path = stats_cache.cache_path(cache_root, e.name, e.cache_key(), audio_set.content_hash(), variant)
            hit = stats_cache.load(path)
            if hit is not None and (not keep_frames or hit.frames is not None):
                out[e.name] = hit
                cached.append(e.name)
                continue
        todo.append((e, path))
    if todo:
        # The variant's kind only (e.g. "reconstruction"): its full id is a cache key, not for people.
        what = f"{audio_set.name}{' (' + variant.split(':')[0] + ')' if variant else ''}"
        log(f"embedding {what}: {len(audio_set.items)} clips with {', '.join(e.name for e, _ in todo)}")
        frames = embed_items([e for e, _ in todo], clips(audio_set, transform), batch_size=batch_size)
        for e, path in todo:
            empty = [cid for cid, f in frames[e.name].items() if len(f) == 0]
            if sum(len(f) for f in frames[e.name].values()) < 2:
                raise TunekitError(
                    f"{what}: fewer than 2 {e.name} frames from {len(frames[e.name])} clips ({len(empty)} too short "
                    f"for any window; {e.policy}): use longer clips, or drop {e.name} from `embeddings`"
                )
            s = stats_cache.from_frames(frames[e.name], keep_frames=keep_frames)
            if path is not None:
                stats_cache.save(path, s)
            out[e.name] = s
    return out, cached


def score_set(
    name: str,
    audio_set: AudioSet,
    embedders: list[Embedder],
    fad_names: list[str],
    reference: dict[str, Reference],
    *,
    batch_size: int,
    fad_settings: FadSettings,
    n_outliers: int,
    clap_embedder: ClapEmbedder | None,
    kad_max_frames: int = 0,
) -> SetScores:
    """FAD (+ FAD∞) and KAD (where the reference has one), per-clip distances and outliers per embedding (at most
    `n_outliers`, by `tunekit.eval.outliers`), and the CLAP score against the prompts."""
    log(f"embedding {name}: {len(audio_set.items)} clips with {', '.join(e.name for e in embedders)}")
    frames = embed_items(embedders, clips(audio_set), batch_size=batch_size)
    metrics: dict[str, Any] = {"n_clips": len(audio_set.items)}
    distances: dict[str, dict[str, float]] = {}
    kad_groups: dict[str, KadGroups] = {}
    for e in embedders:
        if e.name not in fad_names:
            continue
        ref = reference[e.name]
        ref_gauss = ref.fad
        per_clip = frames[e.name]
        stacked = np.concatenate([per_clip[i] for i in sorted(per_clip)])
        short = sorted(cid for cid, f in per_clip.items() if len(f) == 0)
        if stacked.shape[0] < 2:
            raise TunekitError(
                f"{name}: {stacked.shape[0]} {e.name} frames from {len(per_clip)} clips; FAD needs at least 2 "
                f"({e.policy}): use longer clips, or drop {e.name} from `embeddings`"
            )
        result = fad(
            stacked,
            ref_gauss,
            reference_n=ref.n,
            what=name,
            with_inf=fad_settings.enabled,
            steps=fad_settings.steps,
            min_n=fad_settings.min_n,
            draws=fad_settings.draws,
            seed=fad_settings.seed,
        )
        entry = result.to_dict()
        if ref.kad is not None:
            thinned, _ = thin([per_clip[i] for i in sorted(per_clip)], kad_max_frames)
            kad_groups[e.name] = ref.kad.groups(thinned)
            entry["kad"] = float(kad_groups[e.name].value(np.ones((1, len(thinned))))[0])
            entry["kad_n"] = sum(len(t) for t in thinned)
        if short:
            entry["warnings"].append(f"{name}: {len(short)} clips too short for a {e.name} window: {short[:5]}")
        distances[e.name] = per_item_distances(per_clip, ref_gauss)
        found = find_outliers(distances[e.name], n_outliers)
        entry["outliers"], entry["outlier_check"] = found["outliers"], found["check"]
        metrics[e.name] = entry
    score = None
    prompts = audio_set.prompts()
    if clap_embedder is not None and prompts:
        score = prompt_score(clip_vectors(frames[clap_embedder.name]), prompts, clap_embedder)
    metrics.update(clap_fields(score))
    return SetScores(name=name, audio_set=audio_set, metrics=metrics, distances=distances, clap=score,
                     frames={n: frames[n] for n in fad_names if n in frames}, kad_groups=kad_groups)


def prompt_score(audio_vectors: dict[str, np.ndarray], prompts: dict[str, str], clap: ClapEmbedder) -> ClapScore:
    """CLAP score of clip vectors against their own prompts, matched by clip id."""
    ids = sorted(set(audio_vectors) & set(prompts))
    if not ids:
        raise ValueError("no clip has both audio and a prompt: prompt ids must match clip ids")
    text = clap.embed_texts([prompts[i] for i in ids])
    score = clap_score({i: audio_vectors[i] for i in ids}, dict(zip(ids, text, strict=True)))
    score.unmatched = sorted(set(audio_vectors) - set(prompts))
    return score


def clap_fields(score: ClapScore | None) -> dict[str, Any]:
    """The CLAP score as flat metrics.json fields."""
    if score is None:
        return {"clap_score": None, "clap_score_std": None, "clap_score_n": 0}
    return {"clap_score": score.mean, "clap_score_std": score.std, "clap_score_n": score.n}


def floor_metrics(
    recon: dict[str, SetStats],
    reference: dict[str, Reference],
    fad_settings: FadSettings,
    fad_names: list[str],
    *,
    kad_max_frames: int = 0,
) -> dict[str, dict[str, Any]]:
    """FAD (+ FAD∞) and KAD of the codec-reconstructed reference against the reference, per embedding."""
    out: dict[str, dict[str, Any]] = {}
    for name in fad_names:
        if name not in recon or recon[name].frames is None:
            continue
        ref = reference[name]
        gauss = ref.fad
        frames = recon[name].frames
        n, dim = frames.shape
        entry: dict[str, Any] = {"fad": gauss.distance(recon[name].mu, recon[name].sigma), "n": int(n)}
        entry["warnings"] = [w for w in [rank_warning(n, dim, "reconstructed reference")] if w]
        entry["fad_inf"] = None
        if fad_settings.enabled:
            problem = fad_inf_problem(n, steps=fad_settings.steps, min_n=fad_settings.min_n, dim=dim,
                                      what="reconstructed reference")
            if problem:
                entry["warnings"].append(problem)
            else:
                sizes = subset_sizes(n, steps=fad_settings.steps, min_n=fad_settings.min_n, dim=dim)
                entry["fad_inf"] = fad_inf(frames, gauss, sizes=sizes, draws=fad_settings.draws,
                                           seed=fad_settings.seed).to_dict()
        if ref.kad is not None:
            thinned, _ = thin([frames], kad_max_frames)
            entry["kad"] = ref.kad.distance(thinned[0])
            entry["kad_n"] = int(len(thinned[0]))
        out[name] = entry
    return out


# Metrics a paired comparison covers: (metrics.json key, lower is better).
LOWER_IS_BETTER = {"fad": True, "kad": True, "clap_score": False, "chroma_cosine": False}


def paired_deltas(
    base: SetScores,
    finetuned: SetScores,
    reference: dict[str, Reference],
    fad_names: list[str],
    *,
    resamples: int,
    seed: int,
) -> dict[str, Delta]:
    """Fine-tuned − base for FAD and KAD per embedding and the CLAP score, each with a 95% bootstrap interval
    over the prompts both sets were generated from (one clip per prompt, paired by clip id).

    Every resample draws prompts with replacement and recomputes both sides' metric on the same draw: FAD
    from the drawn clips' frames against the fixed reference Gaussian, KAD from kernel sums by clip, the
    CLAP score as the mean over the drawn prompts, the chroma cosine (when both sets have one) as the drawn clips'
    cosine sums over their frames. Keys: `fad_<embedding>`, `kad_<embedding>`, `clap_score`, `chroma_cosine`.
    """
    ids = sorted(i.id for i in base.audio_set.items)
    if ids != sorted(i.id for i in finetuned.audio_set.items):
        raise TunekitError(f"{base.name} and {finetuned.name} were not generated from the same prompts: "
                           "a paired comparison needs one clip per prompt on both sides")
    counts = resample_counts(len(ids), resamples, seed)
    out: dict[str, Delta] = {}
    for name in fad_names:
        if name not in base.frames or name not in finetuned.frames:
            continue
        sides = [FadGroups([s.frames[name][i] for i in ids], reference[name].fad) for s in (base, finetuned)]
        out[f"fad_{name}"] = paired_bootstrap(sides[0].value, sides[1].value, counts,
                                              lower_is_better=LOWER_IS_BETTER["fad"])
        if name in base.kad_groups and name in finetuned.kad_groups:
            out[f"kad_{name}"] = paired_bootstrap(base.kad_groups[name].value, finetuned.kad_groups[name].value,
                                                  counts, lower_is_better=LOWER_IS_BETTER["kad"])
    if base.clap is not None and finetuned.clap is not None:
        sides = [_mean_over_prompts(s.clap.per_item, ids) for s in (base, finetuned)]
        out["clap_score"] = paired_bootstrap(sides[0], sides[1], counts, lower_is_better=LOWER_IS_BETTER["clap_score"])
    if base.chroma and finetuned.chroma:
        sides = [_ratio_over_prompts({i: (c.total, c.frames) for i, c in s.chroma.items()}, ids)
                 for s in (base, finetuned)]
        out["chroma_cosine"] = paired_bootstrap(sides[0], sides[1], counts,
                                                lower_is_better=LOWER_IS_BETTER["chroma_cosine"])
    return out


def _ratio_over_prompts(parts: dict[str, tuple[float, float]], ids: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """Σ numerators / Σ denominators over a resample ((R, len(ids)) counts → (R,)) of per-prompt (numerator,
    denominator) pairs: a mean over frames rather than over prompts."""
    num = np.array([parts.get(i, (0.0, 0.0))[0] for i in ids], dtype=np.float64)
    den = np.array([parts.get(i, (0.0, 0.0))[1] for i in ids], dtype=np.float64)

    def ratio(counts: np.ndarray) -> np.ndarray:
        c = np.atleast_2d(counts).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (c @ num) / (c @ den)

    return ratio


def _mean_over_prompts(values: dict[str, float], ids: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """The mean of per-prompt values over a resample ((R, len(ids)) counts → (R,)); prompts without a value
    are left out of each mean."""
    v = np.array([values.get(i, np.nan) for i in ids], dtype=np.float64)
    have = np.isfinite(v).astype(np.float64)
    v = np.nan_to_num(v)

    def mean(counts: np.ndarray) -> np.ndarray:
        c = np.atleast_2d(counts).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (c @ v) / (c @ have)

    return mean
