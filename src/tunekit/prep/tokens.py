"""Audio tokens: every training window encoded once with the codec (EnCodec 32 kHz for MusicGen).

Windows are resampled from the working rate to the codec's rate with soxr. A mono codec gets the mid
(L+R)/2, or, for MusicGen stereo models (`stereo=true`), the left and right channels encoded
separately and interleaved as transformers' MusicGen orders them (stream 2k = left codebook k,
2k+1 = right codebook k). Windows are batched only with windows of the same length, so a window's
tokens never depend on padding or on its batch. A track's windows are stored back to back in one
uint16 `.npy` file, `tokens/<codec_digest[:12]>/<track_id>.npy`, shaped (frames, streams).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.errors import ConfigError, ConfigErrors, StageUnavailableError
from tunekit.prep.rows import models_root, models_settings, section_as

TOKEN_DTYPE = np.uint16
TOKENS_DIR = "tokens"


@dataclass
class TokensConfig:
    """Codec tokens for training (prep stage `tokens`)."""

    enabled: bool = True  # encode every window with the codec and store its tokens
    codec: str = "facebook/encodec_32khz"  # codec id (Hugging Face id or local folder): MusicGen's audio tokenizer
    batch_size: int = 8  # codec inputs per forward pass (a stereo window counts twice)
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    bandwidth: float | None = None  # codec bandwidth in kbps; null: the codec's first (2.2 = 4 codebooks for 32 kHz)
    stereo: bool = False  # encode left and right separately (MusicGen stereo models); false: mono mid (L+R)/2

    def problems(self, key: str = "tokens") -> list[str]:
        """Every invalid value, each naming its key."""
        out: list[str] = []
        if self.batch_size < 1:
            out.append(f"{key}.batch_size={self.batch_size} must be >= 1")
        if self.bandwidth is not None and self.bandwidth <= 0:
            out.append(f"{key}.bandwidth={self.bandwidth} must be > 0 (or null for the codec's first)")
        return out


@dataclass(frozen=True)
class CodecInfo:
    """What the token files depend on, read from the codec's config."""

    sample_rate: int  # the codec's input rate (32000)
    hop_length: int  # samples per frame (640)
    frame_rate: float  # frames per second, sample_rate / hop_length (50.0)
    channels: int  # the codec's own input channels (1 for encodec_32khz)
    codebook_size: int  # entries per codebook (2048)


def codec_info(model: Any) -> CodecInfo:
    """Rates and sizes of a transformers `EncodecModel`; raises if its tokens cannot be cached as uint16 frames."""
    config = model.config
    problems = _storage_problems(config)
    if problems:
        raise StageUnavailableError("; ".join(problems))
    hop = int(config.hop_length)
    return CodecInfo(
        int(config.sampling_rate),
        hop,
        float(config.sampling_rate) / hop,
        int(config.audio_channels),
        int(config.codebook_size),
    )


def _storage_problems(config: Any) -> list[str]:
    """Why a codec's tokens cannot be stored as one uint16 frame sequence (empty when they can)."""
    out = []
    if config.chunk_length is not None:
        out.append(
            f"the codec encodes in overlapping {config.chunk_length_s} s chunks, which the token cache cannot store "
            "as one frame sequence; use an unchunked codec such as facebook/encodec_32khz (tokens.codec)"
        )
    if int(config.codebook_size) - 1 > np.iinfo(TOKEN_DTYPE).max:
        out.append(
            f"codebook size {config.codebook_size} does not fit uint16 token files (max 65536 entries); "
            "choose another codec (tokens.codec)"
        )
    if int(config.audio_channels) not in (1, 2):
        out.append(
            f"the codec takes {config.audio_channels} audio channels; the tokens stage encodes mono or stereo "
            "codecs only; choose another codec (tokens.codec)"
        )
    return out


def codec_bandwidth(config: Any, cfg: TokensConfig) -> float:
    """The bandwidth (kbps) windows are encoded at: `tokens.bandwidth`, or the codec's first."""
    return float(cfg.bandwidth) if cfg.bandwidth is not None else float(config.target_bandwidths[0])


def codec_problems(config: Any, feature_rate: int, cfg: TokensConfig, key: str = "tokens") -> list[str]:
    """Every setting the codec cannot honour, each naming the key to change (empty when it can run).

    `config` is the codec's EncodecConfig and `feature_rate` its feature extractor's sampling rate;
    checked before any work (`tokens_preflight`) and again by `encode_windows`.
    """
    out = _storage_problems(config)
    bandwidths = [float(b) for b in config.target_bandwidths]
    if codec_bandwidth(config, cfg) not in bandwidths:
        out.append(
            f"{key}.bandwidth={cfg.bandwidth} is not one of the bandwidths of codec {cfg.codec} ({bandwidths} kbps); "
            f"set {key}.bandwidth to one of them, or to null for the first"
        )
    if int(feature_rate) != int(config.sampling_rate):
        out.append(
            f"codec {cfg.codec}: its feature extractor is at {feature_rate} Hz but the model at "
            f"{config.sampling_rate} Hz; fix the checkpoint's preprocessor_config.json or choose another {key}.codec"
        )
    return out


def valid_frames(duration_s: float, frame_rate: float) -> int:
    """Frames a window of `duration_s` owns: round(duration × frame_rate); padding frames are never stored."""
    return int(round(duration_s * frame_rate))


def _codec_inputs(window: np.ndarray, working_rate: int, info: CodecInfo, stereo: bool) -> list[np.ndarray]:
    """The window as the codec's inputs at its rate: [mid], [left, right] (stereo) or [stereo pair]."""
    from tunekit.audio.channels import to_mono
    from tunekit.audio.resample import resample

    window = np.asarray(window, np.float32)
    if window.ndim != 2:
        raise ValueError(f"audio windows must be shaped (channels, samples), got {window.shape}")
    if info.channels == 2:
        x = window if window.shape[0] == 2 else np.repeat(window[:1], 2, axis=0)
        parts = [x]
    elif stereo:
        x = window if window.shape[0] == 2 else np.repeat(window[:1], 2, axis=0)
        parts = [x[:1], x[1:2]]
    else:
        parts = [to_mono(window, keepdims=True)]
    out = []
    for part in parts:
        y = resample(part, working_rate, info.sample_rate)
        out.append(np.ascontiguousarray(y[0] if info.channels == 1 else y, dtype=np.float32))
    return out


def encode_windows(
    audio_windows: list[np.ndarray], working_rate: int, model: Any, feature_extractor: Any, cfg: TokensConfig
) -> list[np.ndarray]:
    """Encode (C, N) windows at `working_rate` into uint16 token arrays shaped (frames, streams).

    Each array has exactly round(N / working_rate × frame_rate) frames. Runs on the model's device.
    """
    import torch

    info = codec_info(model)
    problems = codec_problems(model.config, feature_extractor.sampling_rate, cfg)
    if problems:
        raise ConfigErrors(problems)
    bandwidth = codec_bandwidth(model.config, cfg)
    device = next(iter(model.parameters())).device

    items: list[tuple[int, int, np.ndarray]] = []  # (window index, part index, codec input)
    frames: list[int] = []
    for w, window in enumerate(audio_windows):
        frames.append(valid_frames(np.asarray(window).shape[-1] / working_rate, info.frame_rate))
        for p, x in enumerate(_codec_inputs(window, working_rate, info, cfg.stereo)):
            items.append((w, p, x))

    by_length: dict[int, list[int]] = defaultdict(list)
    for i, (_, _, x) in enumerate(items):
        by_length[x.shape[-1]].append(i)
    codes: dict[tuple[int, int], np.ndarray] = {}
    for indices in by_length.values():
        for b in range(0, len(indices), cfg.batch_size):
            chunk = indices[b : b + cfg.batch_size]
            feats = feature_extractor(
                raw_audio=[items[i][2] for i in chunk], sampling_rate=info.sample_rate, return_tensors="pt"
            )
            with torch.no_grad():
                out = model.encode(
                    feats["input_values"].to(device),
                    feats["padding_mask"].to(device),
                    bandwidth=bandwidth,
                    return_dict=True,
                )
            audio_codes = out.audio_codes  # (1, batch, codebooks, frames)
            for k, i in enumerate(chunk):
                codes[items[i][:2]] = audio_codes[0, k].cpu().numpy()

    results = []
    for w in range(len(audio_windows)):
        parts = [codes[(w, p)] for p in range(2 if (cfg.stereo and info.channels == 1) else 1)]
        n = frames[w]
        if any(c.shape[-1] < n for c in parts):
            raise RuntimeError(f"codec returned {parts[0].shape[-1]} frames for a window that owns {n}")
        if len(parts) == 2:
            stacked = np.empty((2 * parts[0].shape[0], n), dtype=np.int64)
            stacked[0::2] = parts[0][:, :n]  # left codebook k → stream 2k (transformers' MusicGen stereo order)
            stacked[1::2] = parts[1][:, :n]
        else:
            stacked = parts[0][:, :n]
        results.append(np.ascontiguousarray(stacked.T.astype(TOKEN_DTYPE)))
    return results


def decode_tokens(codes: np.ndarray, model: Any, *, stereo: bool | None = None) -> np.ndarray:
    """Decode (frames, streams) tokens back to (C, N) float32 audio at the codec's rate.

    Interleaved stereo (stream 2k left, 2k+1 right) is recognised when there are more streams than
    the codec has quantizers, unless `stereo` says otherwise.
    """
    import torch

    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"tokens must be shaped (frames, streams), got {codes.shape}")
    if stereo is None:
        stereo = codes.shape[1] > int(model.config.num_quantizers)
    device = next(iter(model.parameters())).device
    groups = [codes[:, 0::2], codes[:, 1::2]] if stereo else [codes]
    channels = []
    for group in groups:
        t = torch.from_numpy(np.ascontiguousarray(group.T.astype(np.int64)))[None, None].to(device)
        with torch.no_grad():
            audio = model.decode(t, [None], return_dict=True).audio_values  # (1, C, N)
        channels.append(audio[0].float().cpu().numpy())
    return np.concatenate(channels, axis=0)


def tokens_relpath(codec_hash: str, track_id: str) -> str:
    """Where a track's tokens live, relative to the prep output."""
    return f"{TOKENS_DIR}/{codec_hash[:12]}/{track_id}.npy"


def write_track_tokens(
    out_dir: str | os.PathLike[str],
    track_id: str,
    window_codes: list[np.ndarray],
    *,
    codec: str,
    codec_hash: str,
    frame_rate: float,
) -> list[dict[str, Any]]:
    """Store a track's windows back to back in one uint16 .npy (atomically); returns each window's token columns."""
    from tunekit.atomic import atomic_path

    if not window_codes:
        raise ValueError(f"track {track_id} has no windows to store")
    streams = {c.shape[1] for c in window_codes}
    if len(streams) != 1:
        raise ValueError(f"track {track_id}: windows have different stream counts {sorted(streams)}")
    rel = tokens_relpath(codec_hash, track_id)
    array = np.concatenate([np.asarray(c, TOKEN_DTYPE) for c in window_codes], axis=0)
    target = Path(out_dir) / rel
    if not _same_array(target, array):
        with atomic_path(target) as tmp:
            np.save(tmp, array, allow_pickle=False)
    rows = []
    offset = 0
    for c in window_codes:
        rows.append(
            {
                "tokens_path": rel,
                "tokens_offset": offset,
                "tokens_frames": int(c.shape[0]),
                "tokens_codec": codec,
                "tokens_codec_hash": codec_hash,
                "tokens_frame_rate": float(frame_rate),
                "tokens_streams": int(c.shape[1]),
            }
        )
        offset += int(c.shape[0])
    return rows


def _same_array(path: Path, array: np.ndarray) -> bool:
    """True when `path` already holds exactly `array` (a rerun then leaves the file untouched)."""
    try:
        existing = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return existing.dtype == array.dtype and existing.shape == array.shape and bool(np.array_equal(existing, array))


def read_window_tokens(out_dir: str | os.PathLike[str], row: dict[str, Any]) -> np.ndarray:
    """One window's (frames, streams) tokens, memory-mapped from its track file."""
    array = np.load(Path(out_dir) / row["tokens_path"], mmap_mode="r")
    start = int(row["tokens_offset"])
    return array[start : start + int(row["tokens_frames"])]


# -- prep stage ---------------------------------------------------------------------------------

WINDOW_TOKENS_KEY = "tokens_window_path"  # window extra: the map step's per-window tokens, until the reduce
_loaded: dict[tuple[Any, ...], Any] = {}  # codecs loaded by this worker process


def as_tokens_config(section: Any) -> TokensConfig:
    """The `tokens` section as a TokensConfig (from a TokensConfig, a dict or a DictConfig)."""
    return section_as(TokensConfig, section)


def tokens_model_digest(section: Any, models: Any) -> str:
    """Digest of the codec's files ("" when the stage is off); names the token folder."""
    from tunekit.models.digest import model_digest
    from tunekit.models.registry import resolve

    cfg = as_tokens_config(section)
    if not cfg.enabled:
        return ""
    tiny, cache_dir = models_settings(models)
    path = resolve(cfg.codec, tiny=tiny, cache_dir=cache_dir)
    try:
        return model_digest(path)
    except StageUnavailableError:
        # A Hub id not downloaded yet: loading it fetches the files (or says why it cannot).
        from tunekit.models.encodec import load_encodec

        load_encodec(cfg.codec, tiny=tiny, cache_dir=cache_dir)
        return model_digest(path)


def tokens_preflight(section: Any, models: Any) -> list[str]:
    """The tokens stage's settings checked against the codec's own config files, before any work:
    a bandwidth the codec lacks would otherwise fail every window."""
    from tunekit.models.encodec import load_encodec_config

    cfg = as_tokens_config(section)
    if not cfg.enabled:
        return []
    tiny, cache_dir = models_settings(models)
    try:
        config, feature_rate = load_encodec_config(cfg.codec, tiny=tiny, cache_dir=cache_dir)
    except ConfigError as exc:
        return [f"tokens.codec: {exc}"]
    return codec_problems(config, feature_rate, cfg)


def _codec(cfg: TokensConfig, models: Any) -> tuple[Any, Any]:
    from tunekit.models.device import resolve_device

    tiny, cache_dir = models_settings(models)
    device = resolve_device(cfg.device)
    key = (cfg.codec, tiny, models_root(models), device)
    if key not in _loaded:
        from tunekit.models.encodec import load_encodec

        _loaded[key] = load_encodec(cfg.codec, tiny=tiny, cache_dir=cache_dir, device=device)
    return _loaded[key]


def _window_key(row: Any, cfg: TokensConfig, model_digest: str) -> str:
    from tunekit.prep.cache import params_digest

    return params_digest(
        {
            "audio": row.audio_key,
            "path": row.audio_path,
            "offset": row.offset_frames,
            "frames": row.frames,
            "rate": row.sample_rate,
            "codec": cfg.codec,
            "bandwidth": cfg.bandwidth,
            "stereo": cfg.stereo,
            "model": model_digest,
        }
    )[:40]


def tokenize_window(rows: Any, section: Any, ctx: Any) -> Any:
    """Map step: encode windows (one WindowRow, or a list for batched execution) into cached .npy files.

    Each window gets `tokens_window_path` plus its codec columns; `write_tokens` (the stage's reduce)
    gathers a track's windows into its token file.
    """
    import dataclasses

    from tunekit.atomic import atomic_path
    from tunekit.audio.io import read_audio

    cfg = as_tokens_config(section)
    batch = list(rows) if isinstance(rows, list) else [rows]
    if not cfg.enabled:
        return rows
    model, feature_extractor = _codec(cfg, ctx.models)
    info = codec_info(model)
    audio = [read_audio(ctx.out_path(w.audio_path), start=int(w.offset_frames), frames=int(w.frames)) for w in batch]
    codes: list[np.ndarray | None] = [None] * len(batch)
    for rate in sorted({r for _, r in audio}):
        idx = [i for i, (_, r) in enumerate(audio) if r == rate]
        for i, c in zip(idx, encode_windows([audio[i][0] for i in idx], rate, model, feature_extractor, cfg)):
            codes[i] = c
    out = []
    for w, c in zip(batch, codes):
        if c is None:
            raise RuntimeError(f"window {w.window_id} was not encoded")
        path = ctx.artifact(".npy", stage="tokens", key=_window_key(w, cfg, ctx.model_digest))
        with atomic_path(path) as tmp:
            np.save(tmp, c, allow_pickle=False)
        extra = {
            **w.extra,
            WINDOW_TOKENS_KEY: str(path),
            "tokens_frames": int(c.shape[0]),
            "tokens_codec": cfg.codec,
            "tokens_codec_hash": ctx.model_digest,
            "tokens_frame_rate": info.frame_rate,
            "tokens_streams": int(c.shape[1]),
        }
        out.append(dataclasses.replace(w, extra=extra))
    return out if isinstance(rows, list) else out[0]


def write_tokens(rows: list[Any], section: Any, ctx: Any) -> list[Any]:
    """Reduce step: write each kept track's window tokens back to back into its `.npy` under `out`."""
    import dataclasses

    from tunekit.prep.rows import OK

    cfg = as_tokens_config(section)
    if not cfg.enabled:
        return rows
    if not ctx.model_digest:
        raise RuntimeError("the tokens stage needs its codec digest (StageSpec.model_digest)")
    result = []
    for row in rows:
        windows = [w for w in row.windows if WINDOW_TOKENS_KEY in w.extra]
        if row.status != OK or not windows:
            result.append(row)
            continue
        arrays = [np.load(w.extra[WINDOW_TOKENS_KEY]) for w in windows]
        columns = write_track_tokens(
            ctx.out_dir,
            row.track_id,
            arrays,
            codec=cfg.codec,
            codec_hash=ctx.model_digest,
            frame_rate=float(windows[0].extra["tokens_frame_rate"]),
        )
        by_id = {w.window_id: cols for w, cols in zip(windows, columns)}
        new_windows = []
        for w in row.windows:
            if w.window_id in by_id:
                extra = {k: v for k, v in w.extra.items() if k != WINDOW_TOKENS_KEY}
                w = dataclasses.replace(w, extra={**extra, **by_id[w.window_id]})
            new_windows.append(w)
        result.append(dataclasses.replace(row, windows=new_windows))
    return result
