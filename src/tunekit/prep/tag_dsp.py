"""DSP tags with Essentia: tempo (BPM), key, danceability and loudness range, and the track/window rule
that decides which tempo and key a window states.

Track and window rule: the whole-track estimate is usually more reliable than a 30 s window's. A track
tempo is confident at `tempo_min_confidence`, or at the lower `tempo_confirm_confidence` when its windows
agree with it (`tempo_confirmed`). A window takes a confident track tempo unless its own estimate is
confident, differs from the track's by more than 4 % and is not an octave of it, and is at least as
confident (a real tempo change). A window always takes a confident track key (key changes are rare and
a window's key is the less reliable one). When the track value is uncertain a window uses its own if
that is confident. A value below its threshold is kept as an estimate (`bpm_estimate`, `key_estimate`)
but `bpm`/`key` are null and flagged uncertain, so captions never state it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tunekit.audio.channels import as_channels
from tunekit.audio.resample import resample
from tunekit.errors import MissingDependencyError
from tunekit.prep.tag_config import TagConfig

ESSENTIA_RATE = 44100
TEMPO_TOLERANCE = 0.04  # relative tempo difference still counted as the same tempo


def _essentia() -> Any:
    try:
        import essentia

        # Silenced before essentia.standard is imported: that import logs an [ INFO ] line per process.
        essentia.log.infoActive = False
        essentia.log.warningActive = False
        import essentia.standard as es
    except ImportError as e:
        raise MissingDependencyError("essentia", purpose="tempo/key tagging") from e
    return es


def _to_rate(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(C, N) float32 audio resampled to `target` (soxr HQ; no-op when already there)."""
    return resample(as_channels(audio), rate, target, quality="HQ")


def essentia_features(audio: np.ndarray, rate: int, key_profile: str = "bgate") -> dict[str, Any]:
    """Tempo (with confidence), key (with strength), danceability and loudness range of (C, N) audio.

    Runs at 44.1 kHz: RhythmExtractor2013 multifeature, KeyExtractor, Danceability on the mono mix,
    LoudnessEBUR128 on the stereo signal. Values that cannot be measured (silence, too short) are None.
    """
    es = _essentia()
    x = _to_rate(audio, rate, ESSENTIA_RATE)
    stereo = np.stack([x[0], x[0]]) if x.shape[0] == 1 else x[:2]
    mono = np.ascontiguousarray(stereo.mean(axis=0), dtype=np.float32)
    out: dict[str, Any] = {
        "bpm": None, "bpm_confidence": 0.0, "key": None, "key_strength": 0.0,
        "danceability": None, "loudness_range_lu": None,
    }  # fmt: skip
    seconds = mono.size / ESSENTIA_RATE
    if seconds < 1.0 or float(np.sqrt(np.mean(mono.astype(np.float64) ** 2))) < 1e-5:
        return out
    bpm, _beats, confidence, _estimates, _intervals = es.RhythmExtractor2013(method="multifeature")(mono)
    if np.isfinite(bpm) and bpm > 0:
        out["bpm"] = round(float(bpm), 2)
        out["bpm_confidence"] = round(float(confidence), 3)
    key, scale, strength = es.KeyExtractor(profileType=key_profile, sampleRate=ESSENTIA_RATE)(mono)
    if key and np.isfinite(strength):
        out["key"] = f"{key} {scale}"
        out["key_strength"] = round(float(strength), 4)
    out["danceability"] = round(float(es.Danceability(sampleRate=ESSENTIA_RATE)(mono)[0]), 4)
    if seconds >= 3.0:
        lra = es.LoudnessEBUR128(sampleRate=ESSENTIA_RATE)(np.ascontiguousarray(stereo.T, dtype=np.float32))[3]
        out["loudness_range_lu"] = round(float(lra), 3)
    return out


def same_tempo(a: float, b: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Whether two tempi agree within `tolerance` (relative)."""
    return abs(a - b) <= tolerance * b


def octave_related(a: float, b: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Whether `a` is a half/double/third/triple of `b` (the usual tempo octave errors)."""
    return any(same_tempo(a, b * f, tolerance) for f in (0.5, 2.0, 1 / 3, 3.0, 2 / 3, 1.5))


def tempo_confirmed(track: Mapping[str, Any], windows: Sequence[Mapping[str, Any]], cfg: TagConfig) -> bool:
    """Whether a track's windows confirm its tempo estimate.

    Needs two or more windows with a tempo, every one within 4 % of the track tempo or an octave of it,
    at least half within 4 %, and a track confidence of at least `tempo_confirm_confidence`.
    """
    bpm = track.get("bpm")
    if bpm is None or float(track.get("bpm_confidence") or 0.0) < cfg.tempo_confirm_confidence:
        return False
    tempi = [float(w["bpm"]) for w in windows if w.get("bpm") is not None]
    same = sum(same_tempo(t, bpm) for t in tempi)
    consistent = all(same_tempo(t, bpm) or octave_related(t, bpm) for t in tempi)
    return len(tempi) >= 2 and consistent and 2 * same >= len(tempi)


def dsp_tags(features: Mapping[str, Any], cfg: TagConfig, *, confirmed: bool = False) -> dict[str, Any]:
    """Essentia features as tag columns: `bpm`/`key` only when confident, estimates and flags always.

    A tempo is confident at `tempo_min_confidence`, or at `tempo_confirm_confidence` when `confirmed`
    (see `tempo_confirmed`); a key at `key_min_strength`.
    """
    bpm, conf = features.get("bpm"), float(features.get("bpm_confidence") or 0.0)
    key, strength = features.get("key"), float(features.get("key_strength") or 0.0)
    floor = cfg.tempo_confirm_confidence if confirmed else cfg.tempo_min_confidence
    bpm_ok = bpm is not None and conf >= floor
    key_ok = key is not None and strength >= cfg.key_min_strength
    return {
        "bpm": bpm if bpm_ok else None,
        "bpm_estimate": bpm,
        "bpm_confidence": conf,
        "bpm_uncertain": not bpm_ok,
        "key": key if key_ok else None,
        "key_estimate": key,
        "key_strength": strength,
        "key_uncertain": not key_ok,
        "danceability": features.get("danceability"),
        "loudness_range_lu": features.get("loudness_range_lu"),
    }


def track_dsp_tags(track: Mapping[str, Any], windows: Sequence[Mapping[str, Any]], cfg: TagConfig) -> dict[str, Any]:
    """A track's tag columns from its whole-track features, its tempo confirmed by its windows' features."""
    return dsp_tags(track, cfg, confirmed=tempo_confirmed(track, windows, cfg))


def window_dsp_tags(window: Mapping[str, Any], track: Mapping[str, Any] | None, cfg: TagConfig) -> dict[str, Any]:
    """A window's tag columns from its own features and its track's tag columns (see the module docstring).

    `window` is an `essentia_features` output; `track` a `track_dsp_tags` output, or None.
    """
    own = dsp_tags(window, cfg)
    if track is None:
        return own
    out = dict(own)
    if not track["bpm_uncertain"]:
        tb = track["bpm"]
        change = (not own["bpm_uncertain"] and not same_tempo(own["bpm"], tb) and not octave_related(own["bpm"], tb)
                  and own["bpm_confidence"] >= track["bpm_confidence"])  # fmt: skip
        if not change:
            out.update(bpm=tb, bpm_confidence=track["bpm_confidence"], bpm_uncertain=False)
    if not track["key_uncertain"]:
        out.update(key=track["key"], key_strength=track["key_strength"], key_uncertain=False)
    return out


def aggregate_features(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Track features from window features when no whole-track analysis exists (its first window was dropped).

    Tempo: the most confident window's; key: the key with the largest summed strength (mean strength);
    danceability and loudness range: medians.
    """
    out: dict[str, Any] = {"bpm": None, "bpm_confidence": 0.0, "key": None, "key_strength": 0.0,
                           "danceability": None, "loudness_range_lu": None}  # fmt: skip
    with_bpm = [w for w in windows if w.get("bpm") is not None]
    if with_bpm:
        best = max(with_bpm, key=lambda w: w["bpm_confidence"])
        out.update(bpm=best["bpm"], bpm_confidence=best["bpm_confidence"])
    votes: dict[str, list[float]] = {}
    for w in windows:
        if w.get("key"):
            votes.setdefault(w["key"], []).append(float(w["key_strength"]))
    if votes:
        key = max(votes, key=lambda k: sum(votes[k]))
        out.update(key=key, key_strength=round(float(np.mean(votes[key])), 4))
    for name in ("danceability", "loudness_range_lu"):
        values = [w[name] for w in windows if w.get(name) is not None]
        out[name] = round(float(np.median(values)), 4) if values else None
    return out
