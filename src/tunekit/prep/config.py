"""Schema of `tunekit prep` (configs/prep.yaml + a pipeline from pipelines/).

Each stage's parameters live in their own top-level key with a dataclass schema here (model stages
define theirs next to their code). Adding a stage is one field on `PrepConfig` plus one line in
`tunekit.prep.registry.STAGES`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from tunekit.audio.loudness import LOUDNESS_POLICIES
from tunekit.models.config import ModelsConfig
from tunekit.prep.caption import CaptionConfig
from tunekit.prep.latents import LatentsConfig
from tunekit.prep.registry import ORDER, STAGES, stage_problems
from tunekit.prep.separate import SeparateConfig
from tunekit.prep.tag import TagConfig
from tunekit.prep.tokens import TokensConfig

LICENSE_POLICIES = ("any", "open", "commercial")
LICENSE_PREFERENCES = ("strict", "sidecar", "csv")
WINDOW_ALIGNS = ("none", "beats", "downbeats")
RESAMPLER_QUALITIES = ("VHQ", "HQ", "MQ", "LQ", "QQ")
AUDIO_FORMATS = ("flac", "wav")

DEFAULT_EXTENSIONS = ["wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "mp4", "aif", "aiff"]
# The stages that need no neural model, in pipeline order.
CORE_STAGES = [name for name in ORDER if STAGES[name].model_digest is None]
# The default pipeline (pipelines/musicgen.yaml): every stage in the registry's order but ACE-Step's `latents`.
DEFAULT_STAGES = [name for name in ORDER if name != "latents"]


@dataclass
class IngestConfig:
    """Scanning the corpus, hashing and fingerprinting; the dedupe stage reads the duplicate threshold."""

    extensions: list[str] = field(default_factory=lambda: list(DEFAULT_EXTENSIONS))  # audio file extensions scanned (m4a/aac/mp4 need ffmpeg)
    follow_symlinks: bool = False  # descend into symlinked folders while scanning
    fingerprint_seconds: float = 60.0  # seconds from the start analysed for the decoded-duplicate fingerprint
    fingerprint_max_ber: float = 0.2  # fingerprint bit error rate at or below which two files are the same audio

    def problems(self, key: str) -> list[str]:
        """Invalid values, each naming its key."""
        out = []
        if not self.extensions:
            out.append(f"{key}.extensions is empty; list the audio extensions to scan, e.g. [wav, flac, mp3]")
        if self.fingerprint_seconds < 5:
            out.append(f"{key}.fingerprint_seconds={self.fingerprint_seconds} is too short; use at least 5")
        if not 0 < self.fingerprint_max_ber < 0.5:
            out.append(f"{key}.fingerprint_max_ber={self.fingerprint_max_ber} must be between 0 and 0.5")
        return out


@dataclass
class DecodeConfig:
    """Decoding to the pipeline's working format (float32, fixed rate and channel count)."""

    sample_rate: int = 44100  # working sample rate every later stage sees (Hz)
    channels: int = 2  # working channels: 2 (mono becomes dual-mono, >2 downmixed per ITU-R BS.775) or 1
    resampler: str = "VHQ"  # soxr quality: VHQ | HQ | MQ | LQ | QQ

    def problems(self, key: str) -> list[str]:
        """Invalid values, each naming its key."""
        out = []
        if not 8000 <= self.sample_rate <= 192000:
            out.append(f"{key}.sample_rate={self.sample_rate} must be between 8000 and 192000")
        if self.channels not in (1, 2):
            out.append(f"{key}.channels={self.channels} must be 1 or 2")
        if self.resampler not in RESAMPLER_QUALITIES:
            out.append(f"{key}.resampler={self.resampler!r} is unknown; choose one of {', '.join(RESAMPLER_QUALITIES)}")
        return out


@dataclass
class QualityConfig:
    """Rejection thresholds applied to each decoded track."""

    min_seconds: float = 10.0  # tracks shorter than this are rejected (too_short)
    max_clip_ratio: float = 0.01  # fraction of samples at digital full scale above which a track is rejected (clipping)
    min_bitrate_kbps: float = 64.0  # lossy files (any codec) below this average bitrate are rejected (low_bitrate)
    min_sample_rate: int = 22050  # sources sampled below this rate are rejected (low_sample_rate)
    min_bandwidth_hz: float = 8000.0  # cutoff for the bandwidth check: a track needs real energy above it
    bandwidth_floor_db: float = -60.0  # energy above min_bandwidth_hz vs the total below which a track is low_bandwidth
    silence_lufs: float = -70.0  # integrated loudness below which a track is silent

    def problems(self, key: str) -> list[str]:
        """Invalid values, each naming its key."""
        out = []
        if self.min_seconds < 0:
            out.append(f"{key}.min_seconds={self.min_seconds} must be >= 0")
        if not 0 <= self.max_clip_ratio <= 1:
            out.append(f"{key}.max_clip_ratio={self.max_clip_ratio} must be between 0 and 1")
        if self.min_bitrate_kbps < 0:
            out.append(f"{key}.min_bitrate_kbps={self.min_bitrate_kbps} must be >= 0")
        if self.min_bandwidth_hz < 0:
            out.append(f"{key}.min_bandwidth_hz={self.min_bandwidth_hz} must be >= 0")
        if self.bandwidth_floor_db >= 0:
            out.append(
                f"{key}.bandwidth_floor_db={self.bandwidth_floor_db} must be negative (dB relative to the total)"
            )
        return out


@dataclass
class LoudnessConfig:
    """Loudness normalisation of each whole track (after separation, never per window)."""

    target_lufs: float = -14.0  # integrated loudness target (LUFS, ITU-R BS.1770)
    ceiling_dbtp: float = -1.0  # true-peak ceiling (dBTP, 4x oversampled)
    policy: str = "cap"  # cap: lower the gain to respect the ceiling (track ends quieter) | limit: true-peak limiter
    format: str = "flac"  # stored audio: flac (24-bit) | wav (32-bit float)

    def problems(self, key: str) -> list[str]:
        """Invalid values, each naming its key."""
        out = []
        if self.policy not in LOUDNESS_POLICIES:
            out.append(f"{key}.policy={self.policy!r} is unknown; choose one of {', '.join(LOUDNESS_POLICIES)}")
        if self.format not in AUDIO_FORMATS:
            out.append(f"{key}.format={self.format!r} is unknown; choose one of {', '.join(AUDIO_FORMATS)}")
        if not -70 < self.target_lufs < 0:
            out.append(f"{key}.target_lufs={self.target_lufs} must be between -70 and 0")
        if self.ceiling_dbtp > 0:
            out.append(f"{key}.ceiling_dbtp={self.ceiling_dbtp} must be <= 0 (24-bit audio clips above full scale)")
        return out


@dataclass
class WindowConfig:
    """Cutting each track into training windows (offsets into the track's audio; nothing is copied)."""

    seconds: float = 30.0  # window length
    hop_seconds: float | None = None  # distance between window starts; null: equal to seconds (no overlap)
    min_seconds: float = 10.0  # a final partial window is kept when at least this long (its true length is recorded)
    align: str = "none"  # none | beats | downbeats: start windows on detected beats or (estimated) downbeats
    silence_dbfs: float = -60.0  # windows whose RMS level is below this are dropped as silent

    @property
    def hop(self) -> float:
        """The hop in seconds (the window length when hop_seconds is null)."""
        return self.seconds if self.hop_seconds is None else self.hop_seconds

    def problems(self, key: str) -> list[str]:
        """Invalid values, each naming its key."""
        out = []
        if self.seconds <= 0:
            out.append(f"{key}.seconds={self.seconds} must be > 0")
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            out.append(f"{key}.hop_seconds={self.hop_seconds} must be > 0 (or null for no overlap)")
        if not 0 < self.min_seconds <= self.seconds:
            out.append(f"{key}.min_seconds={self.min_seconds} must be > 0 and <= {key}.seconds={self.seconds}")
        if self.align not in WINDOW_ALIGNS:
            out.append(f"{key}.align={self.align!r} is unknown; choose one of {', '.join(WINDOW_ALIGNS)}")
        return out


@dataclass
class SplitConfig:
    """Deterministic train/valid/test assignment by track (every window of a track shares its split)."""

    valid_fraction: float = 0.1  # share of tracks in the validation split
    test_fraction: float = 0.1  # share of tracks in the test split
    seed: int = 0  # salt of the hash that buckets tracks; change it to draw a different split

    def problems(self, key: str) -> list[str]:
        """Invalid values, each naming its key."""
        out = []
        for name in ("valid_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                out.append(f"{key}.{name}={value} must be in [0, 1)")
        if self.valid_fraction + self.test_fraction >= 1:
            out.append(f"{key}.valid_fraction + {key}.test_fraction must be < 1 (nothing left to train on)")
        return out


@dataclass
class PrepConfig:
    """`tunekit prep corpus=<dir> out=<dir>`: turn a folder of music into a training-ready dataset."""

    corpus: str | None = MISSING  # folder of audio files (searched recursively) with optional sidecars/metadata.csv
    out: str | None = MISSING  # dataset folder: tracks.parquet, windows.parquet, audio/, summary.json
    pipeline_name: str = "musicgen"  # name of the pipeline (set by the pipeline file)
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))  # the pipeline's stages, in order
    workers: int = 0  # worker processes; 0: one per CPU core
    quiet: bool = False  # plain progress lines instead of the live display (automatic when output is not a terminal)
    overwrite: bool = False  # allow reusing an `out` made from another corpus or working format
    cache_dir: str | None = None  # stage cache; null: <out>/.cache
    license_policy: str = "open"  # any | open (no NoDerivatives) | commercial (CC0/PD, BY, BY-SA only)
    allow_unknown_license: bool = False  # keep tracks whose licence is missing or unrecognised
    license_prefer: str = "strict"  # sidecar vs metadata.csv licence: strict (policy must admit both) | sidecar | csv
    max_failed_fraction: float = 0.5  # a stage raising for all its rows, or more than this share, fails the run
    models: ModelsConfig = field(default_factory=ModelsConfig)  # which weights the model stages load
    ingest: IngestConfig = field(default_factory=IngestConfig)  # scanning, hashing, duplicates
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # working format
    quality: QualityConfig = field(default_factory=QualityConfig)  # rejection thresholds
    loudness: LoudnessConfig = field(default_factory=LoudnessConfig)  # loudness normalisation
    window: WindowConfig = field(default_factory=WindowConfig)  # training windows
    split: SplitConfig = field(default_factory=SplitConfig)  # train/valid/test assignment
    separate: SeparateConfig = field(default_factory=SeparateConfig)  # Demucs vocal removal
    tag: TagConfig = field(default_factory=TagConfig)  # tempo, key, genre, mood and instrument tags
    caption: CaptionConfig = field(default_factory=CaptionConfig)  # natural-language captions
    tokens: TokensConfig = field(default_factory=TokensConfig)  # EnCodec tokens for training
    latents: LatentsConfig = field(default_factory=LatentsConfig)  # ACE-Step VAE latents and conditioning for training

    @classmethod
    def problems(cls, cfg: Any) -> list[str]:
        """Every invalid option in `cfg` (a DictConfig or a PrepConfig), each naming its key.

        Paths (corpus, out) are checked by `run_prep` (they must exist and be writable then).
        """
        obj = as_prep_config(cfg)
        out: list[str] = []
        if obj.license_policy not in LICENSE_POLICIES:
            out.append(f"license_policy={obj.license_policy!r} is unknown; choose one of {', '.join(LICENSE_POLICIES)}")
        if obj.license_prefer not in LICENSE_PREFERENCES:
            out.append(
                f"license_prefer={obj.license_prefer!r} is unknown; choose one of {', '.join(LICENSE_PREFERENCES)}"
            )
        if obj.workers < 0:
            out.append(f"workers={obj.workers} must be >= 0 (0: one per CPU core)")
        if not 0 <= obj.max_failed_fraction <= 1:
            out.append(f"max_failed_fraction={obj.max_failed_fraction} must be between 0 and 1")
        out += stage_problems(list(obj.stages))
        for name in obj.stages:
            for key in STAGES[name].config_keys if name in STAGES else ():
                if not hasattr(obj, key):
                    out.append(f"stages: stage {name!r} needs the config section {key!r}, which PrepConfig lacks")
        nyquist = obj.decode.sample_rate / 2
        if "quality" in obj.stages and obj.quality.min_bandwidth_hz >= nyquist:
            out.append(
                f"quality.min_bandwidth_hz={obj.quality.min_bandwidth_hz:g} must be below the working Nyquist "
                f"frequency ({nyquist:g} Hz for decode.sample_rate={obj.decode.sample_rate})"
            )
        for f in dataclasses.fields(obj):
            section = getattr(obj, f.name)
            check = getattr(section, "problems", None)
            if dataclasses.is_dataclass(section) and callable(check):
                out += check(f.name)
        return out


def as_prep_config(cfg: Any) -> PrepConfig:
    """A plain `PrepConfig` object (picklable, typed) from a DictConfig, a dict or a PrepConfig."""
    from tunekit.config.compose import as_schema

    return as_schema(PrepConfig, cfg)


def config_dict(cfg: PrepConfig) -> dict[str, Any]:
    """The config as plain JSON-able data (recorded in summary.json)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
