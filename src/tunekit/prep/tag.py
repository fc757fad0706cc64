"""Prep stage `tag`: tempo, key, danceability and loudness range per window and track, and genre, mood and
instrument tags from corpus metadata, CLAP zero-shot and (optionally) Essentia's discogs-effnet heads.

This module is the stage the registry points at: the map over windows (`tag_window`), the reduce over
tracks (`tag_tracks`), the model digest and the preflight check. Beside it: `tag_config` (the
settings, `TagConfig`), `tag_dsp` (Essentia tempo/key and the track/window rule that settles them) and
`tag_semantic` (metadata mapping, CLAP zero-shot, effnet heads and the per-process model cache).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tunekit.errors import ConfigError
from tunekit.prep.rows import OK, models_settings, section_as
from tunekit.prep.tag_config import TagConfig
from tunekit.prep.tag_dsp import aggregate_features, essentia_features, track_dsp_tags, window_dsp_tags
from tunekit.prep.tag_semantic import (
    TINY_CLAP_SOURCE,
    check_effnet_request,
    clap_source,
    clap_tagger,
    effnet_tagger,
    merge_tags,
    metadata_tags,
    select_labels,
)
from tunekit.prep.vocab import KINDS, VOCAB_FILES, load_vocabularies

log = logging.getLogger(__name__)

RAW_KEY = "_tag_raw"  # window extra holding the map's measurements until `tag_tracks` turns them into columns


def as_tag_config(section: Any) -> TagConfig:
    """The `tag` section as a TagConfig (from a TagConfig, a dict or a DictConfig)."""
    if isinstance(section, Mapping) and "tag" in section and not hasattr(section, "clap_model"):
        return as_tag_config(section["tag"])
    return section_as(TagConfig, section)


def tag_model_digest(section: Any, models: Any) -> str:
    """What the tag stage's results depend on besides audio and parameters: vocabularies and model files."""
    from tunekit.models.digest import model_digest
    from tunekit.models.registry import resolve
    from tunekit.prep.cache import params_digest

    cfg = as_tag_config(section)
    vocabs = load_vocabularies(cfg.vocab_dir)
    parts: dict[str, Any] = {kind: [vocab.labels, sorted(vocab.aliases.items())] for kind, vocab in vocabs.items()}
    parts["vocab_files"] = sorted(VOCAB_FILES.values())
    if cfg.clap:
        tiny, cache_dir = models_settings(models)
        parts["clap"] = model_digest(resolve(cfg.clap_model, tiny=tiny, cache_dir=cache_dir))
    if cfg.effnet_models_dir:
        check_effnet_request(cfg)
        parts["effnet"] = model_digest(cfg.effnet_models_dir)
    return params_digest(parts)


def tag_preflight(section: Any, models: Any) -> list[str]:
    """The CLAP checkpoint checked before any work: one that is not CLAP would fail every window."""
    from tunekit.models.clap import load_clap_config

    cfg = as_tag_config(section)
    if not cfg.enabled or not cfg.clap:
        return []
    tiny, cache_dir = models_settings(models)
    try:
        load_clap_config(cfg.clap_model, tiny=tiny, cache_dir=cache_dir)
    except ConfigError as exc:
        return [f"tag.clap_model: {exc}"]
    return []


def tag_window(row: Any, section: Any, ctx: Any) -> Any:
    """Map step: Essentia features (and model scores) of one window; window 0 also analyses its whole track.

    The results wait in `extra[RAW_KEY]`; `tag_tracks` (the stage's reduce) adds metadata, applies the
    track/window rule and writes the tag columns.
    """
    import dataclasses

    from tunekit.audio.io import read_audio

    cfg = as_tag_config(section)
    if not cfg.enabled:
        return row
    path = ctx.out_path(row.audio_path)
    audio, rate = read_audio(path, start=int(row.offset_frames), frames=int(row.frames))
    raw: dict[str, Any] = {"window": essentia_features(audio, rate, cfg.key_profile), "predictions": []}
    if int(row.window_index) == 0:
        full, full_rate = read_audio(path)
        raw["track"] = essentia_features(full, full_rate, cfg.key_profile)
    if cfg.clap:
        scores = clap_tagger(cfg, ctx.models).scores(audio, rate)
        plain = {k: [float(v) for v in s] for k, s in scores.items()}
        raw["predictions"].append([clap_source(cfg, ctx.models), plain])
    if cfg.effnet_models_dir:
        scores = effnet_tagger(cfg).scores(audio, rate)
        raw["predictions"].append(["effnet", {k: [float(v) for v in s] for k, s in scores.items()}])
    return dataclasses.replace(row, extra={**row.extra, RAW_KEY: raw})


Predictions = list[tuple[str, dict[str, list[tuple[str, float]]]]]


def _selected(predictions: Sequence[Any], labels: Mapping[str, Sequence[str]], cfg: TagConfig) -> Predictions:
    """(source, {kind: scores}) -> (source, {kind: [(label, score)]}) with each source's threshold and top-k."""
    out = []
    for source, scores in predictions:
        threshold = cfg.effnet_threshold if source == "effnet" else cfg.clap_threshold
        picked = {k: select_labels(scores[k], labels[k], cfg.top_k()[k], threshold) for k in KINDS if k in scores}
        out.append((source, picked))
    return out


def tag_tracks(rows: list[Any], section: Any, ctx: Any) -> list[Any]:
    """Reduce step: per track, merge metadata with the model tags, settle tempo/key, write the columns.

    Windows get bpm/key (the track/window rule in `tag_dsp`), genres, moods, instruments, tag_sources
    (JSON) and `instrumental`; the track row gets its whole-track values and tags.
    """
    import dataclasses
    import json

    cfg = as_tag_config(section)
    if not cfg.enabled:
        return rows
    vocabs = load_vocabularies(cfg.vocab_dir)
    labels = {kind: list(vocab.labels) for kind, vocab in vocabs.items()}
    out = []
    tiny_tags = 0
    for track in rows:
        raws = [w.extra.get(RAW_KEY) for w in track.windows]
        if track.status != OK or not track.windows or any(r is None for r in raws):
            if track.status == OK and track.windows:
                log.warning("track %s: some windows have no tag measurements; its tags are left out", track.track_id)
            out.append(track)
            continue
        track_feats = next((r["track"] for r in raws if "track" in r), None)
        if track_feats is None:
            track_feats = aggregate_features([r["window"] for r in raws])
        track_tags = track_dsp_tags(track_feats, [r["window"] for r in raws], cfg)
        meta = metadata_tags(track.genre, track.tags, vocabs) if cfg.metadata_tags else {k: [] for k in KINDS}
        instrumental = bool(track.instrumental) or bool(track.extra.get("separated"))
        windows = []
        for w, raw in zip(track.windows, raws):
            merged = merge_tags(meta, _selected(raw["predictions"], labels, cfg), cfg.top_k())
            extra = {k: v for k, v in w.extra.items() if k != RAW_KEY}
            extra.update(window_dsp_tags(raw["window"], track_tags, cfg))
            extra.update({kind: merged[kind] for kind in KINDS})
            extra["tag_sources"] = json.dumps(merged["tag_sources"], sort_keys=True)
            extra["instrumental"] = instrumental
            windows.append(dataclasses.replace(w, extra=extra))
        # Track-level model tags: each source's scores averaged over the windows, weighted by duration.
        weights = np.array([max(float(w.duration_s), 1e-3) for w in track.windows])
        track_preds = []
        for i, (source, _) in enumerate(raws[0]["predictions"]):
            mean = {
                k: list(np.average([np.asarray(r["predictions"][i][1][k]) for r in raws], axis=0, weights=weights))
                for k in raws[0]["predictions"][i][1]
            }
            track_preds.append([source, mean])
        merged = merge_tags(meta, _selected(track_preds, labels, cfg), cfg.top_k())
        t_extra = dict(track.extra)
        t_extra.update(track_tags)
        t_extra.update({kind: merged[kind] for kind in KINDS})
        t_extra["tag_sources"] = json.dumps(merged["tag_sources"], sort_keys=True)
        out.append(dataclasses.replace(track, windows=windows, extra=t_extra))
        tiny_tags += sum(src == TINY_CLAP_SOURCE for src in merged["tag_sources"].values())
    if tiny_tags:
        log.info("models=tiny: CLAP is a tiny random model, so its %d track tags (and the window tags) are recorded "
                 "with source %r and left out of captions, which use DSP and metadata tags only",
                 tiny_tags, TINY_CLAP_SOURCE)  # fmt: skip
    return out
