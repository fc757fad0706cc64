"""Window stage: cut each normalised track into training windows (offsets; no audio is copied).

Windows start every `window.hop_seconds` (default: `window.seconds`, no overlap) in whole
samples, so a track of exactly 60.000 s gives exactly two full 30 s windows. A final partial window
is kept when at least `window.min_seconds` long, with its true length (training pads and masks
it). Windows quieter than `window.silence_dbfs` RMS are dropped and counted. With
`window.align=beats` each window starts on the first detected beat at or after one hop from the
previous start (librosa's dynamic-programming beat tracker on an onset envelope computed block by
block); `downbeats` picks every fourth beat, in the phase whose beats carry the most onset
strength (an estimate that assumes 4/4).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np

from tunekit.prep.cache import params_digest
from tunekit.prep.config import WindowConfig
from tunekit.prep.rows import Rejection, StageContext, TrackRow, WindowRow

log = logging.getLogger("tunekit.prep")

BEAT_RATE = 22050
BEAT_HOP = 512
_CORE_FRAMES = 2048  # onset-envelope frames per block (~47 s)
_CONTEXT_FRAMES = 64  # frames of context on each side of a block
_TEMPO_SECONDS = 600.0  # tempo is estimated from the first 10 minutes (bounded memory)


def window_starts(n_frames: int, win: int, hop: int, min_frames: int) -> list[int]:
    """Unaligned window starts (in samples): 0, hop, 2·hop… while at least `min_frames` remain."""
    starts = []
    s = 0
    while n_frames - s >= min_frames and n_frames - s > 0:
        starts.append(s)
        s += hop
    return starts


def aligned_starts(n_frames: int, hop: int, min_frames: int, beats: np.ndarray) -> list[int]:
    """Window starts on beats: the first beat, then the first beat at least one hop later, and so on."""
    starts: list[int] = []
    beats = np.asarray(beats, dtype=np.int64)
    beats = beats[(beats >= 0) & (n_frames - beats >= min_frames)]
    if beats.size == 0:
        return starts
    s = int(beats[0])
    while True:
        starts.append(s)
        later = beats[beats >= s + hop]
        if later.size == 0:
            return starts
        s = int(later[0])


def onset_envelope(path: str | Path) -> np.ndarray:
    """librosa onset strength of the mono track at 22050 Hz, computed in overlapping blocks."""
    import librosa
    import soundfile as sf

    from tunekit.audio.channels import to_mono
    from tunekit.audio.resample import resample

    with sf.SoundFile(str(path)) as f:
        rate, n = int(f.samplerate), int(f.frames)
        n_frames = 1 + int(round(n * BEAT_RATE / rate)) // BEAT_HOP
        env = np.zeros(n_frames, dtype=np.float32)
        for core_start in range(0, n_frames, _CORE_FRAMES):
            f0 = max(0, core_start - _CONTEXT_FRAMES)
            f1 = min(n_frames, core_start + _CORE_FRAMES + _CONTEXT_FRAMES)
            s0 = int(f0 * BEAT_HOP * rate / BEAT_RATE)
            s1 = min(n, int(f1 * BEAT_HOP * rate / BEAT_RATE))
            f.seek(s0)
            y = to_mono(f.read(s1 - s0, dtype="float32", always_2d=True).T)
            y = resample(y, rate, BEAT_RATE, quality="HQ")
            part = librosa.onset.onset_strength(y=y, sr=BEAT_RATE, hop_length=BEAT_HOP)
            lo = core_start - f0
            hi = min(lo + _CORE_FRAMES, part.size, n_frames - core_start + lo)
            env[core_start : core_start + hi - lo] = part[lo:hi]
    return env


def detect_beats(path: str | Path, downbeats: bool = False) -> tuple[np.ndarray, float]:
    """(beat or downbeat positions in samples of the file's rate, tempo in BPM)."""
    import librosa
    import soundfile as sf

    rate = int(sf.info(str(path)).samplerate)
    env = onset_envelope(path)
    head = env[: int(_TEMPO_SECONDS * BEAT_RATE / BEAT_HOP)]
    tempo = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=head, sr=BEAT_RATE, hop_length=BEAT_HOP))[0])
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=BEAT_RATE, hop_length=BEAT_HOP, bpm=tempo, units="frames")
    beats = np.asarray(beats, dtype=np.int64)
    if downbeats and beats.size >= 4:
        strength = [float(env[beats[p::4]].sum()) for p in range(4)]
        beats = beats[int(np.argmax(strength)) :: 4]
    samples = np.round(beats * BEAT_HOP * rate / BEAT_RATE).astype(np.int64)
    return samples, tempo


def _rms_dbfs(x: np.ndarray) -> float:
    ms = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10.0 * math.log10(ms) if ms > 0 else float("-inf")


def window_track(row: TrackRow, cfg: WindowConfig, ctx: StageContext) -> TrackRow | Rejection:
    """Cut the track's normalised audio into windows; drop silent ones (stage function)."""
    import soundfile as sf

    if not row.audio_path:
        raise RuntimeError("no normalised audio: the loudness stage must run before window")
    path = ctx.out_path(row.audio_path)
    info = sf.info(str(path))
    rate, n = int(info.samplerate), int(info.frames)
    win = int(round(cfg.seconds * rate))
    hop = int(round(cfg.hop * rate))
    min_frames = int(round(cfg.min_seconds * rate))
    extra = dict(row.extra)
    if cfg.align == "none":
        starts = window_starts(n, win, hop, min_frames)
    else:
        beats, tempo = detect_beats(path, downbeats=cfg.align == "downbeats")
        starts = aligned_starts(n, hop, min_frames, beats)
        extra["tempo_bpm"] = round(tempo, 2)
        if not starts:
            log.warning("no beats found in %s; windows are not aligned", row.source_path)
            starts = window_starts(n, win, hop, min_frames)
    windows: list[WindowRow] = []
    silent = 0
    with sf.SoundFile(str(path)) as f:
        for index, start in enumerate(starts):
            frames = min(win, n - start)
            f.seek(start)
            level = _rms_dbfs(f.read(frames, dtype="float32", always_2d=True))
            if level < cfg.silence_dbfs:
                silent += 1
                continue
            windows.append(
                WindowRow(
                    window_id=f"{row.track_id}_{index:04d}",
                    track_id=row.track_id,
                    window_index=index,
                    audio_path=row.audio_path,
                    offset_s=start / rate,
                    duration_s=frames / rate,
                    start_s=start / rate,
                    offset_frames=start,
                    frames=frames,
                    sample_rate=rate,
                    license=row.license,
                    rms_dbfs=round(level, 3),
                    audio_key=params_digest({"audio": row.audio_key, "offset": start, "frames": frames})[:40],
                )
            )
    if not windows:
        why = f"all {silent} windows are silent" if silent else f"shorter than window.min_seconds={cfg.min_seconds:g}"
        return Rejection("no_windows", why)
    return dataclasses.replace(row, windows=windows, windows_silent=silent, extra=extra)
