"""Typed rows that flow through the prep stages, and what a stage returns when it rejects one.

A stage is a pure function `stage(row, section, ctx) -> row | Rejection`: it gets a row, the
config section it declares and a `StageContext`, and returns an enriched copy of the row (use
`dataclasses.replace`) or a `Rejection`. Columns a later stage adds without a field of its own go
in `extra` and become columns of the output tables.

Files: a stage writes what it produces under `ctx.artifact(suffix)` (content-addressed in the
cache) or under `out`, and names it in a field ending in `_path` (top level or in `extra`), which
the cache records and checks. A stage that changes the audio (decode, separate) writes a float WAV
at the working rate and sets `work_path` to it; the next stage reads `work_path`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK = "ok"
REJECTED = "rejected"
FAILED = "failed"


@dataclass(frozen=True)
class Rejection:
    """A stage's verdict that a row must not go on: a reason code and a human-readable detail."""

    reason: str  # short code grouped in the summary, e.g. "too_short", "duplicate_of:trk_1a2b3c4d5e6f"
    detail: str = ""  # what was measured, e.g. "6.2 s < quality.min_seconds=10"
    update: dict[str, Any] | None = None  # fields the stage settled before rejecting (e.g. the licence it judged)

    @property
    def code(self) -> str:
        """The reason without its argument ("duplicate_of:trk_…" -> "duplicate_of")."""
        return self.reason.split(":", 1)[0]


@dataclass
class WindowRow:
    """One training window: an offset into its track's normalised audio file."""

    window_id: str  # "<track_id>_<index:04d>"
    track_id: str  # the track this window comes from
    window_index: int  # position of the window within its track, from 0
    audio_path: str  # the track's normalised audio, relative to `out`
    offset_s: float  # where the window starts in audio_path
    duration_s: float  # true length; shorter than window.seconds only for a track's final partial window
    start_s: float  # where the window starts in the source track
    offset_frames: int  # offset_s in samples at the working rate
    frames: int  # duration_s in samples at the working rate
    sample_rate: int  # working rate of audio_path
    license: str | None = None  # the track's licence id (TrackRow.license)
    split: str | None = None  # train | valid | test, the track's split
    rms_dbfs: float | None = None  # RMS level of the window (silence check)
    audio_key: str = ""  # cache key identifying this window's audio (track audio key + offset + length)
    extra: dict[str, Any] = field(default_factory=dict)  # columns added by later stages (tags, caption, tokens…)


@dataclass
class TrackRow:
    """One input file and everything the stages learn about it."""

    track_id: str  # "trk_" + 12 hex digits of sha256(source_path): stable across runs
    source_path: str  # path relative to the corpus, with forward slashes
    status: str = OK  # ok | rejected | failed
    reason: str | None = None  # rejection/failure code (null when ok)
    reason_detail: str | None = None  # what was measured or which error occurred
    failed_stage: str | None = None  # stage that rejected or failed the row

    # ingest: the file
    extension: str = ""  # lower-case file extension without the dot
    file_size: int = 0  # bytes
    content_hash: str | None = None  # sha256 of the file's bytes
    container: str | None = None  # container format reported by the decoder (WAV, FLAC, MP3, OGG…)
    codec: str | None = None  # codec/subtype reported by the decoder (PCM_16, VORBIS…)
    lossy: bool | None = None  # whether the codec is lossy
    decoder: str | None = None  # soundfile | ffmpeg
    sample_rate_in: int | None = None  # source sample rate
    channels_in: int | None = None  # source channel count
    frames_in: int | None = None  # source length in samples, from the header
    duration_s: float | None = None  # source duration in seconds (decoded length once decoded)
    bitrate_kbps: float | None = None  # average bitrate (file size / duration), lossy files only
    fingerprint: str | None = None  # decoded-audio fingerprint (hex), for duplicate detection; not exported

    # ingest: licence and provenance
    license: str | None = None  # licence id, the one name used in every output (LicenseInfo.id); null when unknown
    license_raw: str | None = None  # the licence string as found
    license_family: str | None = None  # licence family from tunekit.corpus.license (cc0, pd, by, by-sa, …)
    requires_attribution: bool | None = None  # whether the licence asks for credit
    share_alike: bool | None = None  # whether derivatives must carry the same licence
    license_source: str | None = None  # where the licence string came from (sidecar, csv, embedded:<tag>)
    license_conflict: str | None = None  # "sidecar: <id>; csv: <id>" when the two name different licences
    license_candidates: dict[str, str] = field(default_factory=dict)  # source -> licence string in a conflict; internal
    artist: str | None = None  # artist name
    title: str | None = None  # track title
    attribution: str | None = None  # attribution text to reproduce
    source: str | None = None  # where the track was obtained (fma, jamendo, freesound, …)
    source_id: str | None = None  # the track's id at its source
    url: str | None = None  # the track's page at its source
    genre: str | None = None  # genre from metadata
    tags: list[str] = field(default_factory=list)  # free-form tags from metadata
    instrumental: bool | None = None  # whether metadata says the track has no vocals
    date_observed: str | None = None  # when the licence was observed (licences can change over time)
    metadata_problems: list[str] = field(default_factory=list)  # problems found reading this track's metadata

    # decode
    work_path: str | None = None  # current working audio (float WAV at the working rate, in the cache)
    work_rate: int | None = None  # sample rate of work_path
    work_frames: int | None = None  # length of work_path in samples
    nan_count: int | None = None  # non-finite source samples
    clip_ratio: float | None = None  # fraction of source samples at digital full scale
    peak_dbfs: float | None = None  # source sample peak
    lufs_decoded: float | None = None  # integrated loudness of the decoded audio (silence check)
    spectrum: list[float] = field(default_factory=list)  # mean power per 250 Hz band of the decoded audio; internal
    hf_energy_db: float | None = None  # energy above quality.min_bandwidth_hz relative to the total, dB
    bandwidth_hz: float | None = None  # highest frequency within 60 dB of the spectrum's peak band

    # loudness
    lufs_in: float | None = None  # integrated loudness before gain (LUFS)
    lufs_out: float | None = None  # integrated loudness of the stored audio (LUFS)
    true_peak_in_dbtp: float | None = None  # true peak before gain (dBTP, 4x oversampled)
    true_peak_dbtp: float | None = None  # true peak of the stored audio (dBTP)
    gain_db: float | None = None  # gain applied (dB)
    loudness_policy: str | None = None  # cap | limit
    loudness_capped: bool | None = None  # whether the ceiling reduced the gain (cap) or engaged the limiter (limit)
    limiter_gain_reduction_db: float | None = None  # deepest limiter gain reduction (limit policy), dB
    audio_path: str | None = None  # normalised audio relative to `out`
    audio_rate: int | None = None  # sample rate of audio_path

    # window
    windows: list[WindowRow] = field(default_factory=list)  # windows cut from this track
    windows_silent: int = 0  # silent windows dropped

    # split
    split: str | None = None  # train | valid | test

    audio_key: str = ""  # cache key of the current audio (content hash, then each audio-producing stage's key)
    extra: dict[str, Any] = field(default_factory=dict)  # columns added by later stages

    def rejected(self, rejection: Rejection, stage: str) -> TrackRow:
        """A copy of this row marked rejected by `stage`, with the fields the rejection settled."""
        row = apply(self, rejection.update) if rejection.update else self
        return dataclasses.replace(
            row, status=REJECTED, reason=rejection.reason, reason_detail=rejection.detail, failed_stage=stage
        )

    def failed(self, error: str, detail: str, stage: str) -> TrackRow:
        """A copy of this row marked failed by `stage` (an unexpected error, traceback in prep.log)."""
        return dataclasses.replace(self, status=FAILED, reason=error, reason_detail=detail, failed_stage=stage)


@dataclass(frozen=True)
class StageContext:
    """What a stage may know about the run besides its row and its config section.

    Paths are absolute strings so the context pickles to worker processes unchanged.
    """

    corpus_dir: str  # the corpus root (source_path is relative to it)
    out_dir: str  # the dataset folder
    cache_dir: str  # content-addressed stage cache
    stage: str = ""  # the running stage's name
    key: str = ""  # the running stage's cache key for this row (names its artifacts)
    work_rate: int = 44100  # working sample rate of the pipeline
    work_channels: int = 2  # working channel count of the pipeline
    models: Any = None  # tunekit.models.config.ModelsConfig, for model stages
    model_digest: str = ""  # digest of the running stage's model files, when it has one

    def source(self, row: TrackRow) -> Path:
        """Absolute path of the row's source file."""
        return Path(self.corpus_dir) / row.source_path

    def artifact(self, suffix: str, stage: str | None = None, key: str | None = None) -> Path:
        """Content-addressed path for an artifact of this stage and key, e.g. `.wav`."""
        k = key or self.key
        if not k:
            raise ValueError("artifact paths need a stage key; this stage is not cached")
        return Path(self.cache_dir) / "artifacts" / (stage or self.stage) / k[:2] / f"{k}{suffix}"

    def out_path(self, relative: str) -> Path:
        """Absolute path of a file under `out`."""
        return Path(self.out_dir) / relative


def to_dict(row: TrackRow | WindowRow) -> dict[str, Any]:
    """A row as plain JSON-able data (windows become lists of dicts)."""
    return dataclasses.asdict(row)


def window_from_dict(data: dict[str, Any]) -> WindowRow:
    """Inverse of `to_dict` for a WindowRow; unknown keys are an error (a stale cache entry)."""
    return WindowRow(**data)


def diff(before: TrackRow | WindowRow, after: TrackRow | WindowRow) -> dict[str, Any]:
    """The fields `after` changed, as JSON-able data (what a cache entry stores)."""
    a, b = to_dict(before), to_dict(after)
    return {k: v for k, v in b.items() if k not in a or a[k] != v}


def apply(row: TrackRow | WindowRow, update: dict[str, Any]) -> TrackRow | WindowRow:
    """`row` with `update` (from `diff`) applied."""
    update = dict(update)
    if isinstance(row, TrackRow) and "windows" in update:
        update["windows"] = [window_from_dict(w) for w in update["windows"]]
    return dataclasses.replace(row, **update)


def section_as(cls: type, section: Any) -> Any:
    """A stage's config section as an instance of its dataclass `cls` (from an instance, a dict or a DictConfig)."""
    if isinstance(section, cls):
        return section
    data = dict(section.items()) if hasattr(section, "items") else dict(vars(section))
    return cls(**data)


def models_settings(models: Any) -> tuple[bool, str | None]:
    """(tiny, cache_dir) from the `models` section, for the model loaders."""
    return bool(getattr(models, "tiny", False)), getattr(models, "cache_dir", None)


def models_root(models: Any) -> str:
    """The folder `models.cache_dir` (else $TUNEKIT_CACHE, else the user cache) resolves to now: part of every
    in-process model cache's key, so a model loaded from one cache is never reused for another."""
    from tunekit.paths import cache_dir

    configured = getattr(models, "cache_dir", None)
    return str(Path(configured).expanduser().resolve() if configured else cache_dir().resolve())
