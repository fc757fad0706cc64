"""ACE-Step latents: every training window encoded once for the flow-matching trainer (prep stage `latents`).

For each window this stores the ACE-Step 1.5 VAE's latent distribution (mean and std, so the trainer draws a fresh
x0 = mean + std·ε every epoch) and the condition encoder's output exactly as `AceStepPipeline` builds it at
inference for text-to-music (`tunekit.models.acestep.encode_conditions`: the caption with its metas — bpm and key
from the window's confident tags, its time signature when known, its duration —, the lyrics with their header, the
silence timbre reference), unpadded. The trainer then needs no encoder but the DiT.

Memory: the stage runs in the main process (`inline` in the registry) and holds one encoder at a time. The map
step (`encode_latent_windows`) encodes every window with the VAE alone; the reduce (`write_latents`) first releases
the VAE (del, gc, CUDA cache emptied), then loads the text and condition encoders, conditions every window, writes
`model.safetensors` and releases them. The DiT's weights are never loaded (only its config, on the meta device,
for the variant). Peak memory is therefore one encoder plus a batch of windows.

Windows share a VAE batch only with windows of the same length (and tiling), so a latent never depends on padding
or on its batch. Results are cached per window by content (audio and model digest for the latents; caption, metas,
lyrics and model digest for the conditioning), so a re-run loads no model and a killed one resumes. Each kept
track gets `latents/<digest[:12]>/<track_id>.safetensors` (tensors `<window_id>/mean`, `/std`, `/cond`), written
atomically and only when its content changes; `model.safetensors` beside it holds the null condition and the silence
latent once per checkpoint. The layout is documented in data/README.md ("Prep output").
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import re
import sys
import traceback
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.errors import ConfigError, StageUnavailableError
from tunekit.models.registry import DEFAULTS
from tunekit.prep.lyrics import Lyrics, LyricsError, track_lyrics
from tunekit.prep.rows import OK, Rejection, models_root, models_settings, section_as

log = logging.getLogger("tunekit.prep")

LATENTS_DIR = "latents"
MODEL_FILE = "model.safetensors"
SAMPLE_RATE = 48_000  # ACE-Step 1.5's VAE rate (tunekit.models.acestep.SAMPLE_RATE); the preflight checks the model's
COND_DTYPES = ("float32", "bfloat16")
TILING = ("auto", "true", "false")
COND_VERSION = 1  # bump when the conditioning of the same inputs changes (invalidates the cached conditions)
WINDOW_LATENTS_KEY = "latents_window_path"  # window extra: the map's cached mean/std file, until the reduce


@dataclass
class LatentsConfig:
    """ACE-Step VAE latents and conditioning for training (prep stage `latents`)."""

    enabled: bool = True  # encode every window with the VAE and the condition encoder and store the results
    model: str = DEFAULTS["acestep"]  # ACE-Step 1.5 checkpoint (hub id or diffusers pipeline folder) to train on
    batch_size: int = 4  # windows per VAE forward pass, up to 8 (same-length windows only); lower it on out-of-memory
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    threads: int = 0  # torch threads while the encoders run on the CPU; 0: one per core
    cond_dtype: str = "float32"  # stored conditioning: float32 | bfloat16 (half the disk; computed in float32)
    vae_tiling: str = "auto"  # auto: tiled above tiling_above_s | true: always | false: never (most memory)
    tiling_above_s: float = 60.0  # vae_tiling=auto: windows longer than this are encoded in the VAE's 30 s tiles

    def problems(self, key: str = "latents") -> list[str]:
        """Every invalid value, each naming its key."""
        out: list[str] = []
        if self.batch_size < 1:
            out.append(f"{key}.batch_size={self.batch_size} must be >= 1")
        if self.threads < 0:
            out.append(f"{key}.threads={self.threads} must be >= 0 (0: one per core)")
        if self.cond_dtype not in COND_DTYPES:
            out.append(f"{key}.cond_dtype={self.cond_dtype!r} is unknown; choose one of {', '.join(COND_DTYPES)}")
        if str(self.vae_tiling).lower() not in TILING:
            out.append(f"{key}.vae_tiling={self.vae_tiling!r} is unknown; choose one of {', '.join(TILING)}")
        if self.tiling_above_s <= 0:
            out.append(f"{key}.tiling_above_s={self.tiling_above_s} must be > 0")
        return out


def as_latents_config(section: Any) -> LatentsConfig:
    """The `latents` section as a LatentsConfig (from a LatentsConfig, a dict or a DictConfig)."""
    return section_as(LatentsConfig, section)


def latents_relpath(digest: str, track_id: str) -> str:
    """Where a track's latents live, relative to the prep output."""
    return f"{LATENTS_DIR}/{digest[:12]}/{track_id}.safetensors"


def model_relpath(digest: str) -> str:
    """Where the checkpoint's null condition and silence latent live, relative to the prep output."""
    return f"{LATENTS_DIR}/{digest[:12]}/{MODEL_FILE}"


def use_tiling(cfg: LatentsConfig, seconds: float) -> bool:
    """Whether a window of `seconds` is VAE-encoded in tiles (`vae_tiling`, `tiling_above_s`)."""
    mode = str(cfg.vae_tiling).lower()
    return mode == "true" or (mode == "auto" and seconds > cfg.tiling_above_s)


# -- the checkpoint --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointFacts:
    """What the stored files depend on, read from an ACE-Step checkpoint's configs (no weights loaded)."""

    variant: str  # turbo | base | sft (tunekit.models.acestep.variant_of)
    sample_rate: int  # the VAE's audio rate (48000)
    audio_channels: int  # the VAE's audio channels (2)
    latent_rate: float  # latent frames per second (25)
    channels: int  # latent channels C (64 real)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No weight-norm deprecation notice from the VAE's constructor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        yield


def _shells(cfg: LatentsConfig, models: Any) -> tuple[Any, Any]:
    """The checkpoint's DiT and VAE built from their configs on the meta device: their configs without weights."""
    import torch
    from diffusers import AceStepTransformer1DModel, AutoencoderOobleck, DiffusionPipeline

    from tunekit.models.hub import loading
    from tunekit.models.registry import resolve

    tiny, cache_dir = models_settings(models)
    path = resolve(cfg.model, tiny=tiny, cache_dir=cache_dir)
    with loading(cfg.model):
        index = DiffusionPipeline.load_config(path)
        if index.get("_class_name") != "AceStepPipeline":
            raise ConfigError(
                f"latents.model={cfg.model} is a {index.get('_class_name')} checkpoint, not ACE-Step 1.5 "
                f"(AceStepPipeline); use an ACE-Step checkpoint such as {DEFAULTS['acestep']}",
                key="latents.model",
            )
        dit_config = AceStepTransformer1DModel.load_config(path, subfolder="transformer")
        vae_config = AutoencoderOobleck.load_config(path, subfolder="vae")
    with torch.device("meta"), _quiet():
        return AceStepTransformer1DModel.from_config(dit_config), AutoencoderOobleck.from_config(vae_config)


def checkpoint_facts(cfg: LatentsConfig, models: Any) -> CheckpointFacts:
    """Variant, rates and sizes of the configured checkpoint, from its configs."""
    from diffusers import AceStepPipeline

    from tunekit.models.acestep import variant_of

    dit, vae = _shells(cfg, models)
    shell = AceStepPipeline(
        vae=vae, text_encoder=None, tokenizer=None, transformer=dit, condition_encoder=None, scheduler=None
    )
    return CheckpointFacts(
        variant=variant_of(shell),
        sample_rate=int(shell.sample_rate),
        audio_channels=int(vae.config.audio_channels),
        latent_rate=float(shell.latents_per_second),
        channels=int(vae.config.decoder_input_channels),
    )


def _download(model: str) -> None:
    """Fetch a Hub checkpoint's files without loading them (the stage loads one part at a time later)."""
    from huggingface_hub import snapshot_download

    from tunekit.models.hub import loading

    with loading(model):
        snapshot_download(model)


def latents_model_digest(section: Any, models: Any) -> str:
    """Digest of the ACE-Step checkpoint's files ("" when the stage is off); names the latents folder."""
    from tunekit.models.digest import model_digest
    from tunekit.models.registry import resolve

    cfg = as_latents_config(section)
    if not cfg.enabled:
        return ""
    tiny, cache_dir = models_settings(models)
    path = resolve(cfg.model, tiny=tiny, cache_dir=cache_dir)
    try:
        return model_digest(path)
    except StageUnavailableError:  # a Hub id not downloaded yet
        _download(cfg.model)
        return model_digest(path)


def latents_preflight(section: Any, models: Any) -> list[str]:
    """The checkpoint checked before any work: an ACE-Step pipeline whose VAE takes 48 kHz stereo, and the device."""
    from tunekit.models.device import resolve_device

    cfg = as_latents_config(section)
    if not cfg.enabled:
        return []
    out: list[str] = []
    try:
        resolve_device(cfg.device, key="latents.device")
    except ConfigError as exc:
        out.append(str(exc))
    try:
        facts = checkpoint_facts(cfg, models)
    except ConfigError as exc:
        return [*out, str(exc) if str(exc).startswith("latents.model") else f"latents.model: {exc}"]
    except (OSError, ValueError, KeyError) as exc:
        return [*out, f"latents.model={cfg.model}: cannot read the checkpoint's configs ({exc})"]
    if (facts.sample_rate, facts.audio_channels) != (SAMPLE_RATE, 2):
        out.append(
            f"latents.model={cfg.model}: its VAE takes {facts.sample_rate} Hz audio with {facts.audio_channels} "
            f"channels, not ACE-Step 1.5's {SAMPLE_RATE} Hz stereo; use an ACE-Step 1.5 checkpoint"
        )
    return out


def describe_latents(section: Any, models: Any) -> dict[str, Any]:
    """What summary.json records of the stage's model: id, variant and digest (empty when the stage is off)."""
    cfg = as_latents_config(section)
    if not cfg.enabled:
        return {}
    variant = checkpoint_facts(cfg, models).variant
    return {"model": cfg.model, "variant": variant, "digest": latents_model_digest(cfg, models)}


# -- models held by this process ---------------------------------------------------------------------------------

_loaded: dict[tuple[Any, ...], Any] = {}  # the map step's VAE, kept across its batches until the reduce


def release_models() -> None:
    """Drop the models this stage holds and give their memory back (the CUDA cache included)."""
    _loaded.clear()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device(cfg: LatentsConfig) -> str:
    from tunekit.models.device import resolve_device

    return resolve_device(cfg.device, key="latents.device")


@contextlib.contextmanager
def _torch_threads(cfg: LatentsConfig, device: str) -> Iterator[None]:
    """On the CPU, `threads` torch threads for the block (prep asks one thread per process for its workers)."""
    import torch

    from tunekit.prep.executors import default_workers

    if not device.startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or default_workers())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _vae(cfg: LatentsConfig, models: Any, device: str) -> Any:
    """The checkpoint's VAE alone on `device` (cached for the map's batches)."""
    tiny, cache_dir = models_settings(models)
    key = (cfg.model, tiny, models_root(models), device)
    if key not in _loaded:
        from tunekit.models.acestep import load_acestep

        dit, _ = _shells(cfg, models)
        with _quiet():
            pipe = load_acestep(cfg.model, tiny=tiny, cache_dir=cache_dir, key="latents.model",
                                transformer=dit, text_encoder=None, condition_encoder=None)
        _loaded[key] = pipe.vae.to(device)
    return _loaded[key]


def _condition_pipeline(cfg: LatentsConfig, models: Any, device: str) -> Any:
    """The pipeline with its tokenizer, text encoder and condition encoder loaded on `device`; DiT and VAE are
    meta-device shells (their configs only)."""
    from tunekit.models.acestep import load_acestep

    tiny, cache_dir = models_settings(models)
    dit, vae = _shells(cfg, models)
    pipe = load_acestep(cfg.model, tiny=tiny, cache_dir=cache_dir, key="latents.model", transformer=dit, vae=vae)
    pipe.text_encoder.to(device)
    pipe.condition_encoder.to(device)
    return pipe


# -- VAE latents (map) -------------------------------------------------------------------------------------------


def vae_input(window: np.ndarray, rate: int) -> np.ndarray:
    """A (C, N) window as the VAE's input: stereo (mono duplicated) float32 at 48 kHz."""
    from tunekit.audio.resample import resample

    x = np.asarray(window, np.float32)
    if x.ndim != 2 or x.shape[0] not in (1, 2):
        raise ValueError(f"audio windows must be shaped (channels, samples) with 1 or 2 channels, got {x.shape}")
    if x.shape[0] == 1:
        x = np.repeat(x, 2, axis=0)
    return np.ascontiguousarray(resample(x, rate, SAMPLE_RATE), dtype=np.float32)


def encode_latent_batch(
    vae: Any, windows: list[np.ndarray], *, tiling: list[bool], batch_size: int
) -> list[tuple[Any, Any]]:
    """(mean, std), each [T, C] float32 on the CPU, of stereo 48 kHz windows (2, N).

    Windows are batched only with windows of the same length and tiling, `batch_size` at a time; each result
    equals `tunekit.models.acestep.encode_latents` of its window alone up to float32 reordering.
    """
    import torch

    groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for i, (x, tiled) in enumerate(zip(windows, tiling, strict=True)):
        groups[(x.shape[-1], tiled)].append(i)
    parameter = next(vae.parameters())
    results: list[tuple[Any, Any] | None] = [None] * len(windows)
    for (_, tiled), indices in groups.items():
        if tiled:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        for b in range(0, len(indices), batch_size):
            chunk = indices[b : b + batch_size]
            x = torch.from_numpy(np.stack([windows[i] for i in chunk]))
            with torch.no_grad():
                dist = vae.encode(x.to(device=parameter.device, dtype=parameter.dtype)).latent_dist
            for k, i in enumerate(chunk):
                results[i] = (dist.mean[k].T.float().cpu().contiguous(), dist.std[k].T.float().cpu().contiguous())
    return [r for r in results if r is not None]


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file whose bytes depend only on its content: safetensors writes the metadata in hash order,
    which changes from process to process, so the JSON header is rewritten with sorted keys (same length, same
    offsets; any safetensors reader reads it as before)."""
    import json

    from safetensors.torch import save

    data = save(tensors, metadata=metadata)
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    if len(header) > n:  # never: the same entries written compactly
        raise RuntimeError(f"safetensors header grew from {n} to {len(header)} bytes when sorted")
    return data[:8] + header + b" " * (n - len(header)) + data[8 + n :]


def _save(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    from tunekit.atomic import write_bytes

    write_bytes(path, safetensors_bytes(tensors, metadata))


def _window_key(row: Any, tiled: bool, model_digest: str) -> str:
    from tunekit.prep.cache import params_digest

    return params_digest(
        {
            "kind": "vae",
            "audio": row.audio_key,
            "path": row.audio_path,
            "offset": row.offset_frames,
            "frames": row.frames,
            "rate": row.sample_rate,
            "tiled": tiled,
            "model": model_digest,
        }
    )[:40]


def encode_latent_windows(rows: Any, section: Any, ctx: Any) -> Any:
    """Map step: VAE-encode windows (one WindowRow, or a list for batched execution) into cached files.

    Each window gets `latents_window_path` (its mean/std in the cache) and `latent_frames`; `write_latents`
    (the stage's reduce) conditions the windows and gathers each track's into its file.
    """
    from tunekit.audio.io import read_audio

    cfg = as_latents_config(section)
    if not cfg.enabled:
        return rows
    batch = list(rows) if isinstance(rows, list) else [rows]
    device = _device(cfg)
    tiling = [use_tiling(cfg, float(w.duration_s)) for w in batch]
    with _torch_threads(cfg, device):
        vae = _vae(cfg, ctx.models, device)
        audio = [
            vae_input(*read_audio(ctx.out_path(w.audio_path), start=int(w.offset_frames), frames=int(w.frames)))
            for w in batch
        ]
        latents = encode_latent_batch(vae, audio, tiling=tiling, batch_size=cfg.batch_size)
    out = []
    for w, (mean, std), tiled in zip(batch, latents, tiling, strict=True):
        path = ctx.artifact(".safetensors", stage="latents", key=_window_key(w, tiled, ctx.model_digest))
        _save(path, {"mean": mean, "std": std})
        extra = {**w.extra, WINDOW_LATENTS_KEY: str(path), "latent_frames": int(mean.shape[0])}
        out.append(dataclasses.replace(w, extra=extra))
    return out if isinstance(rows, list) else out[0]


# -- conditioning and files (reduce) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionInput:
    """Everything a window's conditioning is computed from (its cache key)."""

    caption: str  # the caption stage's caption (variant 0)
    lyrics: str  # the window's lyrics as given to the encoder
    seconds: float  # the window's duration (the metas' duration)
    bpm: float | None  # confident tempo, else None (the metas say N/A)
    keyscale: str | None  # confident key ("A minor"), else None
    timesignature: str | None  # beats per bar ("4" for 4/4) when known, else None
    language: str | None  # the lyrics' language, else None (the pipeline's default, en)

    def key(self, model_digest: str) -> str:
        """Content key of this window's conditioning under one checkpoint."""
        from tunekit.prep.cache import params_digest

        data = {"kind": "cond", "version": COND_VERSION, "model": model_digest, **dataclasses.asdict(self)}
        return params_digest(data)[:40]


def time_signature(value: Any) -> str | None:
    """Beats per bar as ACE-Step's metas write it ("4" for 4/4 or 4), or None for an unknown value."""
    text = "" if value is None else str(value).strip()
    found = re.fullmatch(r"(\d{1,2})(?:\s*/\s*\d{1,2})?", text)
    return found.group(1) if found and int(found.group(1)) > 0 else None


def condition_input(window: Any, lyrics: Lyrics, signature: Any = None) -> ConditionInput:
    """A window's conditioning inputs: its caption, its confident tempo and key, its time signature (the window's
    own, else `signature` from the track's metadata), its duration and its share of the track's lyrics."""
    extra = window.extra
    bpm = None if extra.get("bpm_uncertain") else extra.get("bpm")
    key = None if extra.get("key_uncertain") else extra.get("key")
    return ConditionInput(
        caption=str(extra.get("caption") or ""),
        lyrics=lyrics.for_window(float(window.start_s), float(window.duration_s)),
        seconds=float(window.duration_s),
        bpm=None if bpm is None else float(bpm),
        keyscale=str(key) if key else None,
        timesignature=time_signature(extra.get("time_signature", signature)),
        language=lyrics.language,
    )


def _metadata_signature(meta: Any) -> Any:
    extra = getattr(meta, "extra", None) or {}
    return extra.get("time_signature", extra.get("timesignature"))


def _model_file_current(path: Path, digest: str) -> bool:
    """True when `path` is this checkpoint's complete model.safetensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names, metadata = set(f.keys()), f.metadata() or {}
    except (OSError, ValueError, RuntimeError):
        return False
    return metadata.get("digest") == digest and {"null_condition", "silence_latent"} <= names


def _encode_conditions(
    cfg: LatentsConfig, ctx: Any, missing: dict[str, ConditionInput], facts: CheckpointFacts
) -> dict[str, str]:
    """Load the text and condition encoders, condition each `missing` window (cached one by one, so a killed run
    resumes), write model.safetensors, and release the encoders. Returns the errors by conditioning key."""
    from tunekit.atomic import write_bytes
    from tunekit.models.acestep import encode_conditions, null_condition

    device = _device(cfg)
    errors: dict[str, str] = {}
    with _torch_threads(cfg, device):
        pipe = _condition_pipeline(cfg, ctx.models, device)
        for key, item in missing.items():
            try:
                [cond] = encode_conditions(
                    pipe, [item.caption], [item.lyrics], seconds=item.seconds, bpm=item.bpm, keyscale=item.keyscale,
                    timesignature=item.timesignature, language=item.language, device=device,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - one window's failure must not stop the others
                errors[key] = f"{type(exc).__name__}: {exc}"
                log.error("stage latents: conditioning failed: %s\n%s", errors[key], traceback.format_exc())
                continue
            _save(ctx.artifact(".safetensors", stage="latents", key=key), {"cond": cond.states.contiguous()})
        null = null_condition(pipe).contiguous()
        silence = pipe.condition_encoder.silence_latent.detach().float().cpu().contiguous()
        del pipe
    if silence.shape[-1] != facts.channels:
        raise RuntimeError(f"the silence latent has {silence.shape[-1]} channels, the VAE {facts.channels}")
    metadata = {
        "model": cfg.model,
        "digest": ctx.model_digest,
        "variant": facts.variant,
        "sample_rate": str(facts.sample_rate),
        "latent_rate": f"{facts.latent_rate:g}",
        "channels": str(facts.channels),
        "hidden": str(null.shape[-1]),
    }
    data = safetensors_bytes({"null_condition": null, "silence_latent": silence}, metadata=metadata)
    write_bytes(Path(ctx.out_dir) / model_relpath(ctx.model_digest), data)
    return errors


def _same_file(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> bool:
    """True when `path` already holds exactly these tensors and metadata (a file written before headers were
    sorted may hold them in another order)."""
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}) != metadata or set(f.keys()) != set(tensors):
                return False
            for name, value in tensors.items():
                stored = f.get_tensor(name)
                if stored.dtype != value.dtype or not torch.equal(stored, value):
                    return False
    except (OSError, ValueError, RuntimeError):
        return False
    return True


def _write_track(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    """Write a track's file atomically, unless it already holds the same tensors (a re-run leaves it untouched)."""
    from tunekit.atomic import write_bytes

    if not _same_file(path, tensors, metadata):
        write_bytes(path, safetensors_bytes(tensors, metadata))


Plan = tuple[Lyrics, list[tuple[Any, ConditionInput]]]  # a track's lyrics and each window's conditioning inputs


def _plan(rows: list[Any], ctx: Any) -> tuple[list[Any], dict[int, Plan]]:
    """Each kept track's lyrics and its windows' conditioning inputs, by row index; tracks whose lyrics are named
    but unusable come back rejected (`lyrics_unusable`)."""
    from tunekit.corpus.metadata import load_corpus_metadata

    corpus = Path(ctx.corpus_dir)
    metadata = load_corpus_metadata(corpus, read_embedded_tags=False)
    result = list(rows)
    plans: dict[int, Plan] = {}
    for i, row in enumerate(rows):
        windows = [w for w in row.windows if WINDOW_LATENTS_KEY in w.extra]
        if row.status != OK or not windows:
            continue
        source = ctx.source(row)
        meta = metadata.for_track(source)
        instrumental = bool(row.instrumental) or bool(row.extra.get("separated"))
        try:
            lyrics = track_lyrics(source, corpus, meta, instrumental=instrumental)
        except LyricsError as exc:
            result[i] = row.rejected(Rejection("lyrics_unusable", str(exc)), "latents")
            continue
        signature = _metadata_signature(meta)
        plans[i] = (lyrics, [(w, condition_input(w, lyrics, signature)) for w in windows])
    uncaptioned = sum(1 for _, items in plans.values() for _, item in items if not item.caption)
    if uncaptioned:
        log.warning("stage latents: %d windows have no caption (run the caption stage): conditioned on metas and "
                    "lyrics only", uncaptioned)  # fmt: skip
    guessed = sum(1 for lyrics, _ in plans.values() if lyrics.source is None)
    if guessed:
        log.info("stage latents: %d tracks have no lyrics and are not marked instrumental: conditioned as "
                 "[Instrumental] (give lyrics in a sidecar .txt/.lrc or metadata, or instrumental=true)", guessed)
    return result, plans


def _store_track(row: Any, plan: Plan, errors: dict[str, str], cfg: LatentsConfig, ctx: Any, variant: str) -> Any:
    """Write a track's file from its windows' cached latents and conditions; the row with its new columns, or
    failed when no window has its conditioning."""
    import torch
    from safetensors.torch import load_file

    lyrics, items = plan
    digest = ctx.model_digest
    kept = [(w, item, item.key(digest)) for w, item in items if item.key(digest) not in errors]
    if not kept:
        first = errors[items[0][1].key(digest)]
        detail = f"{len(items)} of {len(items)} windows failed in stage latents; first: {first}"
        return row.failed(f"error:{first.split(':', 1)[0]}", detail, "latents")
    rel = latents_relpath(digest, row.track_id)
    dtype = getattr(torch, cfg.cond_dtype)
    tensors: dict[str, Any] = {}
    columns: dict[str, dict[str, Any]] = {}
    for w, item, key in kept:
        latent = load_file(w.extra[WINDOW_LATENTS_KEY])
        cond = load_file(str(ctx.artifact(".safetensors", stage="latents", key=key)))["cond"].to(dtype).contiguous()
        tensors.update({f"{w.window_id}/mean": latent["mean"], f"{w.window_id}/std": latent["std"],
                        f"{w.window_id}/cond": cond})  # fmt: skip
        columns[w.window_id] = {
            "latents_file": rel,
            "latent_frames": int(latent["mean"].shape[0]),
            "cond_length": int(cond.shape[0]),
            "lyrics": item.lyrics,
            "language": item.language,
        }
    _write_track(Path(ctx.out_dir) / rel, tensors, {"model": cfg.model, "digest": digest, "variant": variant})
    windows = []
    for w in row.windows:
        if w.window_id in columns:  # a window whose conditioning failed is dropped (logged when it failed)
            extra = {k: v for k, v in w.extra.items() if k != WINDOW_LATENTS_KEY}
            windows.append(dataclasses.replace(w, extra={**extra, **columns[w.window_id]}))
    track_extra = {**row.extra, "lyrics": lyrics.text, "lyrics_source": lyrics.source, "language": lyrics.language}
    return dataclasses.replace(row, windows=windows, extra=track_extra)


def write_latents(rows: list[Any], section: Any, ctx: Any) -> list[Any]:
    """Reduce step: release the VAE, condition every window (text and condition encoders, loaded only when a
    window's conditioning is not cached), write model.safetensors and each kept track's file.

    Windows get `latents_file`, `latent_frames`, `cond_length`, `lyrics` and `language`; tracks get `lyrics`,
    `lyrics_source` and `language`. A track whose lyrics are named but unusable is rejected (`lyrics_unusable`).
    """
    cfg = as_latents_config(section)
    if not cfg.enabled:
        return rows
    if not ctx.model_digest:
        raise RuntimeError("the latents stage needs its checkpoint digest (StageSpec.model_digest)")
    release_models()  # the map's VAE: the condition encoders come next
    result, plans = _plan(rows, ctx)
    if not plans:
        return result
    digest = ctx.model_digest
    facts = checkpoint_facts(cfg, ctx.models)
    keys = {item.key(digest): item for _, items in plans.values() for _, item in items}
    missing = {k: v for k, v in keys.items() if not ctx.artifact(".safetensors", stage="latents", key=k).is_file()}
    model_file = Path(ctx.out_dir) / model_relpath(digest)
    errors: dict[str, str] = {}
    if missing or not _model_file_current(model_file, digest):
        log.info("stage latents: conditioning %d windows (%d cached)", len(missing), len(keys) - len(missing))
        try:
            errors = _encode_conditions(cfg, ctx, missing, facts)
        except Exception as exc:  # noqa: BLE001 - the encoders could not run: every track fails, the run goes on
            log.error("stage latents: the condition encoders failed: %s\n%s", exc, traceback.format_exc())
            errors = {k: f"{type(exc).__name__}: {exc}" for k in keys}
        finally:
            release_models()
    if not _model_file_current(model_file, digest):
        errors = {k: errors.get(k, f"RuntimeError: {MODEL_FILE} could not be written") for k in keys}
    for i, plan in plans.items():
        try:
            result[i] = _store_track(rows[i], plan, errors, cfg, ctx, facts.variant)
        except Exception as exc:  # noqa: BLE001 - one track's file must not stop the others
            log.error("stage latents: writing %s failed\n%s", rows[i].track_id, traceback.format_exc())
            result[i] = rows[i].failed(f"error:{type(exc).__name__}", str(exc), "latents")
    return result
