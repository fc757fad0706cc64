"""The prep stage registry: stage name -> where its function lives and how the engine runs it.

Functions are "module:function" strings imported lazily (in the worker that runs them), so the
CLI starts fast and a stage whose module is not installed fails with a clear error only when a
pipeline uses it. `ORDER` is the only order stages may run in; a pipeline lists a subsequence.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunekit.errors import StageUnavailableError


@dataclass(frozen=True)
class StageSpec:
    """How the engine runs one stage."""

    name: str  # the name a pipeline lists
    fn: str | None  # "module:function" mapping (row, section, ctx) -> row | Rejection; None for reduce-only stages
    config_keys: tuple[str, ...]  # PrepConfig keys given to the stage (one: that section; several: a dict)
    version: int = 1  # bump when the stage's output changes for the same input and parameters (invalidates its cache)
    kind: str = "track"  # track: maps TrackRows | window: maps the WindowRows of kept tracks
    cache: bool = True  # cache results under a key of (input audio key, name, version, params, model, key_fields)
    produces_audio: bool = False  # the stage writes new working audio: later keys chain on this stage's key
    key_fields: tuple[str, ...] = ()  # row fields (besides the audio) the result depends on, folded into the key
    reduce: str | None = None  # "module:function" (rows, section, ctx) -> rows run once over all rows after the map
    probe: str | None = None  # for uncached stages: "module:function" that answers cheaply or returns None
    inline: bool = False  # run in the main process, not the pool: cheap stages, model stages holding one model at a time
    batch_size: int | None = None  # when set, fn maps a list of rows to a list of results (model stages)
    model_digest: str | None = None  # "module:function" (section, models) -> str folded into the key
    preflight: str | None = None  # "module:function" (section, models) -> problems with values the model must accept
    describe: str | None = None  # "module:function" (section, models) -> what summary.json records of its model

    def function(self, attr: str = "fn") -> Callable[..., Any]:
        """Import and return the callable named by `attr` (fn, reduce, probe, model_digest, preflight, describe)."""
        target = getattr(self, attr)
        if target is None:
            raise ValueError(f"stage {self.name!r} has no {attr}")
        return load(target, stage=self.name)


def load(target: str, stage: str = "") -> Callable[..., Any]:
    """Import "module:function"; a missing module becomes StageUnavailableError naming the stage."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StageUnavailableError(
                f"prep stage {stage!r} is not available in this installation ({module_name} is missing); "
                f"remove it from `stages` or install a tunekit version that has it"
            ) from exc
        raise
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise StageUnavailableError(f"prep stage {stage!r}: {module_name} has no {attr}") from exc


# The canonical order. Duplicates are resolved once the licence and quality verdicts are known;
# separation runs on decoded audio *before* loudness normalisation (loudness is measured on what is
# kept); tagging and captions run on windows; then the generator's own encoding: EnCodec tokens (MusicGen) or
# VAE latents and conditioning (ACE-Step). A pipeline lists one of the two.
ORDER: tuple[str, ...] = (
    "ingest",
    "license",
    "decode",
    "quality",
    "dedupe",
    "separate",
    "loudness",
    "window",
    "split",
    "tag",
    "caption",
    "tokens",
    "latents",
)

# Stages every pipeline needs: without them there is no dataset to write.
REQUIRED: tuple[str, ...] = ("ingest", "license", "decode", "quality", "dedupe", "loudness", "window", "split")

STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in [
        StageSpec(
            "ingest",
            "tunekit.prep.ingest:ingest_track",
            ("ingest",),
            cache=False,
            probe="tunekit.prep.ingest:probe_ingest",
        ),
        StageSpec(
            "license",
            "tunekit.prep.licensing:check_license",
            ("license_policy", "allow_unknown_license", "license_prefer"),
            cache=False,
            inline=True,
        ),
        StageSpec("decode", "tunekit.prep.decode:decode_track", ("decode",), produces_audio=True),
        StageSpec("quality", "tunekit.prep.quality:check_quality", ("quality",)),
        # dedupe: one track per recording, chosen among the copies that passed the licence and quality
        # checks (ingest hashed and fingerprinted every file), so a rejected copy never hides a usable one.
        StageSpec("dedupe", None, ("ingest",), cache=False, reduce="tunekit.prep.dedupe:mark_duplicates"),
        # separate: Demucs vocal removal on the decoded audio, writing new working audio; skipped for
        # tracks whose metadata says instrumental, hence `instrumental` in the key.
        StageSpec(
            "separate",
            "tunekit.prep.separate:separate_track",
            ("separate",),
            produces_audio=True,
            key_fields=("instrumental",),
            model_digest="tunekit.prep.separate:separate_model_digest",
            preflight="tunekit.prep.separate:separate_preflight",
        ),
        # key_fields: the stored file is named after the track, so a renamed file is written anew.
        StageSpec(
            "loudness",
            "tunekit.prep.normalize:normalize_track",
            ("loudness",),
            produces_audio=True,
            key_fields=("track_id",),
        ),
        StageSpec("window", "tunekit.prep.window:window_track", ("window",)),
        StageSpec("split", None, ("split",), cache=False, reduce="tunekit.prep.split:assign_splits"),
        StageSpec(
            "tag",
            "tunekit.prep.tag:tag_window",
            ("tag",),
            kind="window",
            reduce="tunekit.prep.tag:tag_tracks",
            model_digest="tunekit.prep.tag:tag_model_digest",
            preflight="tunekit.prep.tag:tag_preflight",
        ),
        # Captions are written from the tags: the window's `extra` (where the tags are) is part of the key.
        StageSpec(
            "caption",
            "tunekit.prep.caption:caption_window",
            ("caption",),
            kind="window",
            key_fields=("extra",),
            model_digest="tunekit.prep.caption:caption_model_digest",
        ),
        StageSpec(
            "tokens",
            "tunekit.prep.tokens:tokenize_window",
            ("tokens",),
            kind="window",
            batch_size=8,
            reduce="tunekit.prep.tokens:write_tokens",
            model_digest="tunekit.prep.tokens:tokens_model_digest",
            preflight="tunekit.prep.tokens:tokens_preflight",
        ),
        # latents: ACE-Step's VAE latents and conditioning, read by its trainer. Inline (in the main process), so
        # one encoder at a time is resident: the VAE over every window in the map, the condition encoders in the
        # reduce, which also writes each track's file.
        StageSpec(
            "latents",
            "tunekit.prep.latents:encode_latent_windows",
            ("latents",),
            kind="window",
            batch_size=8,
            inline=True,
            reduce="tunekit.prep.latents:write_latents",
            model_digest="tunekit.prep.latents:latents_model_digest",
            preflight="tunekit.prep.latents:latents_preflight",
            describe="tunekit.prep.latents:describe_latents",
        ),
    ]
}


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def stage_problems(stages: list[str], registry: dict[str, StageSpec] | None = None) -> list[str]:
    """Unknown, duplicated, missing or out-of-order stage names, as messages naming `stages`."""
    registry = STAGES if registry is None else registry
    order = [n for n in ORDER if n in registry] + [n for n in registry if n not in ORDER]
    out = []
    unknown = [s for s in stages if s not in registry]
    if unknown:
        out.append(f"stages: unknown stage(s) {', '.join(map(repr, unknown))}; available: {', '.join(order)}")
    dupes = sorted({s for s in stages if stages.count(s) > 1})
    if dupes:
        out.append(f"stages: {', '.join(dupes)} listed more than once")
    missing = [s for s in REQUIRED if s in registry and s not in stages]
    if missing:
        out.append(f"stages: the pipeline must include {', '.join(missing)}")
    known = [s for s in stages if s in registry]
    for name in known:
        target = registry[name].fn or registry[name].reduce or ""
        module = target.partition(":")[0]
        if module and not _importable(module):
            out.append(f"stages: stage {name!r} is not available in this installation ({module} is missing)")
    ranked = [order.index(s) for s in known]
    if ranked != sorted(ranked):
        expected = [s for s in order if s in known]
        out.append(f"stages: {known} are out of order; stages run in the order {expected}")
    return out
