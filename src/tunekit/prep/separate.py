"""Vocal separation with Demucs: the instrumental (mix − vocals) becomes the track's training audio.

Every track is separated, whatever its length (a short file keeps no vocals by accident). Long tracks
are streamed: segments are laid out exactly as `demucs.apply.apply_model(split=True)` lays them out
over the whole track, run through the model `batch_segments` at a time (through `apply_model` itself),
and overlap-added with the library's triangular weights into a rolling buffer that is written out as
soon as no later segment can touch it. The result equals whole-track processing sample for sample,
while memory stays bounded by a few segments whatever the track's length.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.audio.channels import to_mono
from tunekit.audio.resample import resample
from tunekit.errors import ConfigError, StageUnavailableError
from tunekit.models.device import resolve_device
from tunekit.prep.rows import models_root, models_settings, section_as

INSTRUMENTAL_MODES = ("subtract", "sum")
REJECT_MOSTLY_VOCALS = "mostly_vocals"
_RATIO_FLOOR_DB = -120.0
_SHIFT_SEED = 1234  # fixed seed for the random time shifts when shifts > 0, so runs repeat


@dataclass
class SeparateConfig:
    """Demucs vocal separation (prep stage `separate`)."""

    enabled: bool = True  # run Demucs and train on the instrumental; false: keep the mix as is
    model: str = "htdemucs"  # Demucs model name (htdemucs, htdemucs_ft, …) or a signature in `repo`
    repo: str | None = None  # local folder with <model>.yaml and its model files; null: the Hugging Face Hub
    shifts: int = 0  # passes with the segments shifted by up to 0.5 s, averaged (~+0.2 dB SDR, N× slower; seeded)
    overlap: float = 0.25  # overlap between consecutive Demucs segments, 0 <= overlap < 1
    segment_seconds: float | None = None  # Demucs segment length; null: the model's own (7.8 s for htdemucs)
    batch_segments: int = 0  # segments per forward pass; 0: auto (8 on a GPU, 1 on CPU); memory grows with it
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    instrumental: str = "subtract"  # subtract: mix − vocals (keeps all that is not voice) | sum: non-vocal stems
    skip_instrumental: bool = False  # skip Demucs for tracks whose metadata says instrumental
    max_vocal_ratio_db: float | None = None  # reject (mostly_vocals) tracks whose vocal-to-mix energy exceeds this, dB

    def problems(self, key: str = "separate") -> list[str]:
        """Every invalid value, each naming its key."""
        out: list[str] = []
        if self.shifts < 0:
            out.append(f"{key}.shifts={self.shifts} must be >= 0")
        if not 0.0 <= self.overlap < 1.0:
            out.append(f"{key}.overlap={self.overlap} must be in [0, 1)")
        if self.segment_seconds is not None and self.segment_seconds <= 0:
            out.append(f"{key}.segment_seconds={self.segment_seconds} must be > 0 (or null for the model's own)")
        if self.batch_segments < 0:
            out.append(f"{key}.batch_segments={self.batch_segments} must be >= 0 (0: auto)")
        if self.instrumental not in INSTRUMENTAL_MODES:
            choices = ", ".join(INSTRUMENTAL_MODES)
            out.append(f"{key}.instrumental={self.instrumental!r} is unknown; choose one of {choices}")
        return out


@dataclass
class SeparationResult:
    """Separated audio, shaped like the input mix. Arrays are None when written to files instead."""

    instrumental: np.ndarray | None  # (C, N) float32
    vocals: np.ndarray | None  # (C, N) float32
    vocal_ratio_db: float | None  # vocal energy relative to the mix, dB (RMS); None for a silent mix


def load_separator(cfg: SeparateConfig, *, tiny: bool = False, cache_dir: str | None = None) -> Any:
    """Load the configured Demucs model (a single model or a bag) in eval mode on `cfg.device`."""
    from tunekit.models.demucs import load_demucs

    model = load_demucs(cfg.model, repo=cfg.repo, tiny=tiny, cache_dir=cache_dir)
    model.eval()
    return model.to(resolve_device(cfg.device))


def model_sources(model: Any) -> list[str]:
    """The model's stem names; raises ConfigError if it has no `vocals` stem."""
    sources = list(model.sources)
    if "vocals" not in sources:
        raise ConfigError(
            f"Demucs model has no 'vocals' stem (stems: {', '.join(sources)}); choose a vocal model such as htdemucs",
            key="separate.model",
        )
    return sources


def model_segment(model: Any) -> Fraction | float:
    """The segment length (seconds) the model was trained on; the shortest one in a bag."""
    subs = list(getattr(model, "models", [model]))
    segments = [m.segment for m in subs if getattr(m, "segment", None) is not None]
    if not segments:
        raise StageUnavailableError("the Demucs model declares no segment length; set separate.segment_seconds")
    return min(segments)


def _segment(model: Any, cfg: SeparateConfig) -> Fraction | float:
    trained = model_segment(model)
    if cfg.segment_seconds is None:
        return trained
    if _has_transformer(model) and cfg.segment_seconds > float(trained) + 1e-9:
        raise ConfigError(
            f"separate.segment_seconds={cfg.segment_seconds} is longer than the {float(trained):.2f} s this "
            "transformer Demucs was trained on; use a value <= that or null",
            key="separate.segment_seconds",
        )
    return cfg.segment_seconds


def _has_transformer(model: Any) -> bool:
    from demucs.htdemucs import HTDemucs

    return any(isinstance(m, HTDemucs) for m in getattr(model, "models", [model]))


def _triangle(length: int) -> np.ndarray:
    """apply_model's overlap-add weight: a triangle peaking mid-segment, normalised to 1 (power 1)."""
    up = np.arange(1, length // 2 + 1, dtype=np.float32)
    down = np.arange(length - length // 2, 0, -1, dtype=np.float32)
    weight = np.concatenate([up, down])
    return weight / weight.max()


class _Grid:
    """One layout of segments over the track (one per shift) and its overlap-add buffers.

    Buffers start at the first sample not yet written out (`base`); `acc_*` hold weighted sums
    of the vocal and non-vocal estimates, `weight` the sum of weights.
    """

    def __init__(self, origin: int, channels: int, keep_others: bool) -> None:
        self.next_start = origin
        self.base = 0
        self.acc_vocals = np.zeros((channels, 0), np.float32)
        self.acc_others = np.zeros((channels, 0), np.float32) if keep_others else None
        self.weight = np.zeros(0, np.float32)

    def _grow(self, end: int) -> None:
        extra = end - self.base - self.weight.shape[0]
        if extra > 0:
            c = self.acc_vocals.shape[0]
            self.acc_vocals = np.concatenate([self.acc_vocals, np.zeros((c, extra), np.float32)], axis=1)
            if self.acc_others is not None:
                self.acc_others = np.concatenate([self.acc_others, np.zeros((c, extra), np.float32)], axis=1)
            self.weight = np.concatenate([self.weight, np.zeros(extra, np.float32)])

    def add(self, start: int, vocals: np.ndarray, others: np.ndarray | None, weight: np.ndarray) -> None:
        """Add one segment's estimates covering [start, start + len(weight)); samples before `base` are dropped."""
        skip = max(0, self.base - start)
        end = start + weight.shape[0]
        if end <= self.base:
            return
        self._grow(end)
        a, b = start + skip - self.base, end - self.base
        self.acc_vocals[:, a:b] += weight[skip:] * vocals[:, skip:]
        if self.acc_others is not None and others is not None:
            self.acc_others[:, a:b] += weight[skip:] * others[:, skip:]
        self.weight[a:b] += weight[skip:]

    def pop(self, end: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The normalised estimates for [base, end); releases them from the buffers."""
        n = end - self.base
        self._grow(end)
        w = self.weight[:n]
        if n and w.min() <= 0:
            raise RuntimeError("separation overlap-add left a sample without any segment")  # internal invariant
        vocals = self.acc_vocals[:, :n] / w
        others = self.acc_others[:, :n] / w if self.acc_others is not None else None
        self.acc_vocals = self.acc_vocals[:, n:].copy()
        if self.acc_others is not None:
            self.acc_others = self.acc_others[:, n:].copy()
        self.weight = self.weight[n:].copy()
        self.base = end
        return vocals, others


Reader = Callable[[int, int], np.ndarray]
Emitter = Callable[[int, np.ndarray, np.ndarray, np.ndarray | None], None]


def _mix_stats(read: Reader, n_samples: int, block: int = 1 << 20) -> tuple[float, float]:
    """Mean and std (N−1, as torch) of the mono mix, in float64, read block by block."""
    total = 0.0
    total_sq = 0.0
    for start in range(0, n_samples, block):
        mono = to_mono(read(start, min(n_samples, start + block)).astype(np.float64))
        total += float(mono.sum())
        total_sq += float(np.dot(mono, mono))
    mean = total / n_samples
    var = max(0.0, (total_sq - n_samples * mean * mean) / max(1, n_samples - 1))
    return mean, math.sqrt(var)


def _to_model_channels(x: np.ndarray, model_channels: int) -> np.ndarray:
    if x.shape[0] == model_channels:
        return x
    if x.shape[0] == 1:
        return np.repeat(x, model_channels, axis=0)
    if model_channels == 1:
        return to_mono(x, keepdims=True)
    raise ValueError(f"cannot feed {x.shape[0]}-channel audio to a {model_channels}-channel Demucs model")


def _from_model_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[0] == channels:
        return x
    if channels == 1:
        return to_mono(x, keepdims=True)
    return np.repeat(x, channels, axis=0)


def _stream(
    read: Reader, n_samples: int, channels: int, model: Any, cfg: SeparateConfig, emit: Emitter, keep_others: bool
) -> tuple[float, float]:
    """Separate the mix given by `read` and pass finished blocks to `emit(start, mix, vocals, others)`.

    `read(a, b)` returns the (channels, b − a) mix for 0 <= a < b <= n_samples at the model's rate.
    Returns the energies (sum of squares) of the mix and of the vocals.
    """
    import torch
    from demucs.apply import apply_model

    if n_samples <= 0:
        raise ValueError("cannot separate empty audio")
    if channels > 2:
        raise ValueError(f"Demucs separates mono or stereo audio, got {channels} channels")
    sources = model_sources(model)
    vocal_index = sources.index("vocals")
    other_index = [i for i in range(len(sources)) if i != vocal_index]
    rate = int(model.samplerate)
    model_channels = int(model.audio_channels)
    segment = _segment(model, cfg)
    seg_len = int(rate * segment)
    stride = max(1, int((1 - cfg.overlap) * seg_len))
    weight = _triangle(seg_len)
    mean, std = _mix_stats(read, n_samples)
    std += 1e-8  # as demucs.api: silence stays finite
    device = next(iter(model.parameters())).device
    batch_segments = cfg.batch_segments or (8 if device.type == "cuda" else 1)

    if cfg.shifts:
        rng = random.Random(_SHIFT_SEED)
        max_shift = int(0.5 * rate)
        grids = [_Grid(rng.randint(0, max_shift) - max_shift, model_channels, keep_others) for _ in range(cfg.shifts)]
    else:
        grids = [_Grid(0, model_channels, keep_others)]

    def model_input(start: int) -> np.ndarray:
        # The segment's real audio, centred in a zero-padded window of seg_len (TensorChunk.padded).
        length = min(seg_len, n_samples - start)
        left = start - (seg_len - length) // 2
        out = np.zeros((model_channels, seg_len), np.float32)
        a, b = max(0, left), min(n_samples, left + seg_len)
        if b > a:
            x = _to_model_channels(np.asarray(read(a, b), np.float32), model_channels)
            out[:, a - left : b - left] = (x - mean) / std
        return out

    energy_mix = 0.0
    energy_vocals = 0.0
    written = 0
    while written < n_samples:
        batch: list[tuple[_Grid, int]] = []
        while len(batch) < batch_segments:
            live = [g for g in grids if g.next_start < n_samples]
            if not live:
                break
            grid = min(live, key=lambda g: g.next_start)
            batch.append((grid, grid.next_start))
            grid.next_start += stride
        if batch:
            inputs = torch.from_numpy(np.stack([model_input(start) for _, start in batch])).to(device)
            with torch.no_grad():
                estimates = apply_model(model, inputs, shifts=0, split=False, segment=segment, device=device)
            estimates = estimates.float().cpu().numpy()
            for (grid, start), est in zip(batch, estimates):
                length = min(seg_len, n_samples - start)
                trim = (seg_len - length) // 2
                est = est[:, :, trim : trim + length]
                others = est[other_index].sum(axis=0) if keep_others else None
                grid.add(start, est[vocal_index], others, weight[:length])
        ready = min(n_samples, min(g.next_start for g in grids))
        if ready <= written:
            continue
        parts = [g.pop(ready) for g in grids]
        vocals = sum(p[0] for p in parts) / len(parts)
        vocals = _from_model_channels(vocals * std + mean, channels).astype(np.float32)
        others = None
        if keep_others:
            others = sum(p[1] for p in parts) / len(parts)
            others = _from_model_channels(others * std + mean * len(other_index), channels).astype(np.float32)
        mix = np.asarray(read(written, ready), np.float32)
        energy_mix += float(np.square(mix, dtype=np.float64).sum())
        energy_vocals += float(np.square(vocals, dtype=np.float64).sum())
        emit(written, mix, vocals, others)
        written = ready
    return energy_mix, energy_vocals


def vocal_ratio_db(energy_mix: float, energy_vocals: float) -> float | None:
    """10·log10(E_vocals / E_mix), floored at −120 dB; None for a silent mix."""
    if energy_mix <= 0:
        return None
    if energy_vocals <= 0:
        return _RATIO_FLOOR_DB
    return max(_RATIO_FLOOR_DB, 10.0 * math.log10(energy_vocals / energy_mix))


def _instrumental(cfg: SeparateConfig, mix: np.ndarray, vocals: np.ndarray, others: np.ndarray | None) -> np.ndarray:
    if cfg.instrumental == "sum":
        if others is None:
            raise RuntimeError("sum mode needs the non-vocal stems")
        return others
    return mix - vocals


def separate(mix: np.ndarray, model: Any, cfg: SeparateConfig, *, keep_vocals: bool = True) -> SeparationResult:
    """Separate a (C, N) mix at the model's sample rate into instrumental and vocals.

    Equals `apply_model(model, standardised_mix, split=True, shifts=0, overlap=cfg.overlap)` on the
    whole track; only a few segments of model output are held at a time.
    """
    mix = np.asarray(mix, np.float32)
    if mix.ndim != 2:
        raise ValueError(f"mix must be shaped (channels, samples), got {mix.shape}")
    channels, n = mix.shape
    instrumental = np.empty_like(mix)
    vocals_out = np.empty_like(mix) if keep_vocals else None

    def emit(start: int, block: np.ndarray, vocals: np.ndarray, others: np.ndarray | None) -> None:
        end = start + block.shape[1]
        instrumental[:, start:end] = _instrumental(cfg, block, vocals, others)
        if vocals_out is not None:
            vocals_out[:, start:end] = vocals

    e_mix, e_voc = _stream(lambda a, b: mix[:, a:b], n, channels, model, cfg, emit, cfg.instrumental == "sum")
    return SeparationResult(instrumental, vocals_out, vocal_ratio_db(e_mix, e_voc))


def separate_file(
    src: str | Path,
    instrumental_path: str | Path,
    model: Any,
    cfg: SeparateConfig,
    *,
    vocals_path: str | Path | None = None,
) -> SeparationResult:
    """Stream a file through Demucs: the instrumental (and optionally the vocals) are written as float WAV.

    Memory does not grow with the track's length. `src` must be at the model's sample rate. Float
    WAV keeps samples above full scale intact for the loudness stage that follows. The returned
    result carries only `vocal_ratio_db`.
    """
    import soundfile as sf

    from tunekit.atomic import atomic_path

    for p in (instrumental_path, vocals_path):
        if p is not None and Path(p).suffix.lower() != ".wav":
            raise ValueError(f"separation outputs are float WAV files; {p} must end in .wav")
    info = sf.info(str(src))
    if info.samplerate != int(model.samplerate):
        raise ValueError(f"{src} is at {info.samplerate} Hz; Demucs needs {model.samplerate} Hz, resample it first")
    channels, n = info.channels, info.frames
    fmt = _wav_format(n, channels)

    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(sf.SoundFile(str(src)))

        def writer(path: str | Path) -> Any:
            # Exits in reverse order: the file is closed before atomic_path renames it into place.
            tmp = stack.enter_context(atomic_path(path))
            return stack.enter_context(
                sf.SoundFile(str(tmp), "w", info.samplerate, channels, format=fmt, subtype="FLOAT")
            )

        inst_out = writer(instrumental_path)
        voc_out = writer(vocals_path) if vocals_path is not None else None

        def read(a: int, b: int) -> np.ndarray:
            reader.seek(a)
            return np.ascontiguousarray(reader.read(b - a, dtype="float32", always_2d=True).T)

        def emit(start: int, block: np.ndarray, vocals: np.ndarray, others: np.ndarray | None) -> None:
            inst_out.write(_instrumental(cfg, block, vocals, others).T)
            if voc_out is not None:
                voc_out.write(vocals.T)

        e_mix, e_voc = _stream(read, n, channels, model, cfg, emit, cfg.instrumental == "sum")
    return SeparationResult(None, None, vocal_ratio_db(e_mix, e_voc))


def _wav_format(frames: int, channels: int) -> str:
    """RF64 (a .wav that may exceed 4 GB) for very long float files, plain WAV otherwise."""
    return "RF64" if frames * channels * 4 > 3.5e9 else "WAV"


def vocal_rejection(ratio_db: float | None, cfg: SeparateConfig) -> str | None:
    """`mostly_vocals` when the policy `max_vocal_ratio_db` is set and the track exceeds it, else None."""
    if cfg.max_vocal_ratio_db is None or ratio_db is None:
        return None
    return REJECT_MOSTLY_VOCALS if ratio_db > cfg.max_vocal_ratio_db else None


# -- prep stage ---------------------------------------------------------------------------------

_loaded: dict[tuple[Any, ...], Any] = {}  # Demucs models loaded by this worker process


def as_separate_config(section: Any) -> SeparateConfig:
    """The `separate` section as a SeparateConfig (from a SeparateConfig, a dict or a DictConfig)."""
    return section_as(SeparateConfig, section)


def separate_model_digest(section: Any, models: Any) -> str:
    """Digest of the Demucs files the stage's output depends on ("" when the stage is off)."""
    from tunekit.models.demucs import demucs_folder
    from tunekit.models.digest import model_digest

    cfg = as_separate_config(section)
    if not cfg.enabled:
        return ""
    tiny, cache_dir = models_settings(models)
    return model_digest(demucs_folder(cfg.model, repo=cfg.repo, tiny=tiny, cache_dir=cache_dir))


def separate_preflight(section: Any, models: Any) -> list[str]:
    """The stage's settings checked against the Demucs model, before any work: a model without a
    vocals stem, or a segment longer than a transformer Demucs was trained on, would fail every track."""
    from tunekit.models.demucs import load_demucs

    cfg = as_separate_config(section)
    if not cfg.enabled:
        return []
    tiny, cache_dir = models_settings(models)
    model = load_demucs(cfg.model, repo=cfg.repo, tiny=tiny, cache_dir=cache_dir)
    problems = []
    for check in (model_sources, lambda m: _segment(m, cfg)):
        try:
            check(model)
        except (ConfigError, StageUnavailableError) as exc:
            problems.append(str(exc))
    return problems


def _separator(cfg: SeparateConfig, models: Any) -> Any:
    tiny, cache_dir = models_settings(models)
    key = (cfg.model, cfg.repo, tiny, models_root(models), resolve_device(cfg.device))
    if key not in _loaded:
        _loaded[key] = load_separator(cfg, tiny=tiny, cache_dir=cache_dir)
    return _loaded[key]


def _not_separated(row: Any) -> Any:
    import dataclasses

    return dataclasses.replace(
        row, extra={**row.extra, "separated": False, "vocal_ratio_db": None, "separation_model": None}
    )


def separate_track(row: Any, section: Any, ctx: Any) -> Any:
    """Replace the track's working audio by its instrumental (stage function, before loudness).

    Records `separated`, `vocal_ratio_db` and `separation_model`. Off (`enabled=false`), or skipped for
    a track whose metadata says instrumental (`skip_instrumental`), the audio passes through unchanged.
    """
    import dataclasses

    from tunekit.prep.rows import Rejection

    cfg = as_separate_config(section)
    if not cfg.enabled or (cfg.skip_instrumental and row.instrumental is True):
        return _not_separated(row)
    if not row.work_path:
        raise RuntimeError("no working audio: the decode stage must run before separate")
    model = _separator(cfg, ctx.models)
    target = ctx.artifact(".wav")
    work_rate = int(row.work_rate)
    if work_rate == int(model.samplerate):
        result = separate_file(row.work_path, target, model, cfg)
    else:
        result = _separate_resampled(row.work_path, target, work_rate, model, cfg)
    reason = vocal_rejection(result.vocal_ratio_db, cfg)
    if reason is not None:
        target.unlink(missing_ok=True)
        return Rejection(
            reason,
            f"vocal energy {result.vocal_ratio_db:.1f} dB relative to the mix exceeds "
            f"separate.max_vocal_ratio_db={cfg.max_vocal_ratio_db}",
        )
    return dataclasses.replace(
        row,
        work_path=str(target),
        extra={**row.extra, "separated": True, "vocal_ratio_db": result.vocal_ratio_db, "separation_model": cfg.model},
    )


def _separate_resampled(src: str, target: Path, work_rate: int, model: Any, cfg: SeparateConfig) -> SeparationResult:
    """Working audio at another rate than the model's: resample in memory, separate, resample back."""
    import soundfile as sf

    from tunekit.atomic import atomic_path

    audio, _ = sf.read(src, dtype="float32", always_2d=True)
    n = audio.shape[0]
    mix = resample(audio.T, work_rate, int(model.samplerate))
    del audio
    result = separate(mix, model, cfg, keep_vocals=False)
    del mix
    inst = resample(result.instrumental, int(model.samplerate), work_rate).T
    inst = inst[:n] if inst.shape[0] >= n else np.pad(inst, ((0, n - inst.shape[0]), (0, 0)))
    with atomic_path(target) as tmp:
        sf.write(str(tmp), inst, work_rate, format=_wav_format(n, inst.shape[1]), subtype="FLOAT")
    return SeparationResult(None, None, result.vocal_ratio_db)
