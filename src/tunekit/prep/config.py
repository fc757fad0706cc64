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
    keep_source: bool = True  # a dataset corpus with held-out splits keeps them (validation/dev -> valid, test)

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


SOURCE_KINDS = ("auto", "files", "dataset")


@dataclass
class SourceColumns:
    """Which dataset column holds each field (`corpus=` a Hugging Face dataset); null: detected by name,
    "": not read. Detection matches names case-insensitively (data/README.md, "Hugging Face datasets")."""

    audio: str | None = None  # audio (an Audio feature, bytes or a path); null: the Audio column, else audio/file/path
    id: str | None = None  # the row's own id, recorded as hf_row_id; null: id/row_id/uid/_id/window_id
    license: str | None = None  # licence (SPDX id, CC URL or title); null: license/licence/license_url/license_title
    attribution: str | None = None  # credit text the licensor asked for; null: attribution/credit/credits
    artist: str | None = None  # artist; null: artist/artist_name/artists/author/creator/username
    title: str | None = None  # title; null: title/track_title/song/name
    source: str | None = None  # where the track was obtained; null: source (else the rows say hf:<dataset id>)
    source_id: str | None = None  # the track's id at its source; null: source_id/original_id/track_id
    url: str | None = None  # the track's page; null: url/link/page/source_url/track_url
    lyrics: str | None = None  # lyrics for ACE-Step (plain or LRC); null: lyrics/lyric/lrc
    language: str | None = None  # language of the lyrics; null: language/lang
    genre: str | None = None  # genre; null: genre
    instrumental: str | None = None  # true/false: the track has no vocals; null: instrumental/is_instrumental
    split: str | None = None  # the row's split, recorded as hf_split (else the split of its file); null: split


@dataclass
class SourceConfig:
    """How `corpus=` is read: a folder of audio files, or a Hugging Face dataset (a local Parquet or
    `save_to_disk` folder, or `hf://org/name[@revision]`) whose rows become tracks."""

    kind: str = "auto"  # auto: a dataset when the folder holds Parquet or save_to_disk files | files | dataset
    columns: SourceColumns = field(default_factory=SourceColumns)  # the dataset's columns for each field
    splits: list[str] | None = None  # dataset splits to read; null: every split
    license_from_card: bool = False  # rows without a licence take the dataset card's `license` (license_source hf_card)
    paths_outside: bool = False  # rows may name audio files outside the dataset's folder (a dataset built here)

    def problems(self, key: str) -> list[str]:
        """Invalid values, each naming its key."""
        out = []
        if self.kind not in SOURCE_KINDS:
            out.append(f"{key}.kind={self.kind!r} is unknown; choose one of {', '.join(SOURCE_KINDS)}")
        if self.columns.audio == "":
            out.append(f"{key}.columns.audio is empty; name the audio column, or null to detect it")
        if self.splits is not None and not [s for s in self.splits if str(s).strip()]:
            out.append(f"{key}.splits is empty; list the splits to read, or null for every split")
        return out


EXECUTORS = ("local", "ray")
RAY_INSTALL = "pip install 'tunekit[ray]'"


@dataclass
class StageGpus:
    """GPUs each Ray actor of one model stage reserves; null: `executor.model_gpus`."""

    separate: float | None = None  # ray: GPUs per Demucs actor; null: model_gpus
    tag: float | None = None  # ray: GPUs per tagging actor (CLAP; tempo and key are DSP on its CPU); null: model_gpus
    caption: float | None = None  # ray: GPUs per caption actor (the LLM; templates need none); null: model_gpus
    tokens: float | None = None  # ray: GPUs per EnCodec actor; null: model_gpus
    latents: float | None = None  # ray: GPUs per ACE-Step VAE actor (conditioning runs here); null: model_gpus


@dataclass
class ExecutorConfig:
    """Where the stage functions run (`executor=local|ray`); the engine, cache and tables stay in this process."""

    name: str = "local"  # local: `workers` processes on this machine | ray: tasks and actors on a Ray cluster
    address: str | None = None  # ray: cluster to join (auto, or ray://host:10001); null: start a local Ray instance
    num_cpus: int | None = None  # ray, local instance: CPUs it may use; null: every core of this machine
    object_store_mb: int = 256  # ray, local instance: object store size in MiB (rows and paths travel, never audio)
    max_in_flight: int = 0  # ray: task chunks submitted at once; 0: two per CPU of the cluster
    chunk_size: int = 8  # ray: most items per task or actor call (a crashed chunk's items are retried one by one)
    threads: int = 1  # ray: OMP/OpenBLAS/MKL threads per worker (the parallelism is the workers)
    model_gpus: float = 0.0  # ray: GPUs per model-stage actor (0.25: four actors share a GPU); 0: actors on CPUs
    stage_gpus: StageGpus = field(default_factory=StageGpus)  # ray: model_gpus per stage (null: model_gpus)
    model_actors: int = 0  # ray: actors per model stage; 0: as many as the cluster's GPUs (or CPUs) hold
    model_cpus: float = 1.0  # ray: CPUs each model-stage actor reserves (and its threads, when above `threads`)
    start_timeout_s: float = 300.0  # ray: longest wait for the cluster, the storage check or a stage's first actor

    def gpus_for(self, stage: str) -> float:
        """GPUs each actor of `stage` reserves."""
        own = getattr(self.stage_gpus, stage, None)
        return float(self.model_gpus if own is None else own)

    def problems(self, key: str = "executor") -> list[str]:
        """Invalid values, each naming its key; `executor=ray` without Ray installed says how to install it."""
        import importlib.util

        out: list[str] = []
        if self.name not in EXECUTORS:
            return [f"{key}.name={self.name!r} is unknown; choose {key}=local or {key}=ray"]
        if self.name == "local":
            if self.address is not None:
                out.append(f"{key}.address={self.address} is for Ray; add {key}=ray (or remove {key}.address)")
            return out
        if importlib.util.find_spec("ray") is None:
            out.append(f"{key}=ray needs Ray, which is not installed: {RAY_INSTALL} (or use {key}=local)")
        if self.num_cpus is not None and self.num_cpus < 1:
            out.append(f"{key}.num_cpus={self.num_cpus} must be >= 1 (or null for every core)")
        elif self.num_cpus is not None and self.address:
            out.append(
                f"{key}.num_cpus sizes a local Ray instance; a cluster ({key}.address={self.address}) has its own "
                f"(set it with `ray start --num-cpus`), so remove {key}.num_cpus"
            )
        if self.object_store_mb < 100:
            out.append(f"{key}.object_store_mb={self.object_store_mb} must be >= 100 (Ray's minimum is 75 MiB)")
        if self.max_in_flight < 0:
            out.append(f"{key}.max_in_flight={self.max_in_flight} must be >= 0 (0: two per CPU)")
        if self.chunk_size < 1:
            out.append(f"{key}.chunk_size={self.chunk_size} must be >= 1")
        if self.threads < 1:
            out.append(f"{key}.threads={self.threads} must be >= 1")
        per_stage = [(f"stage_gpus.{f.name}", getattr(self.stage_gpus, f.name)) for f in dataclasses.fields(StageGpus)]
        for name, gpus in [("model_gpus", self.model_gpus), *per_stage]:
            if gpus is not None and (gpus < 0 or (gpus > 1 and gpus != int(gpus))):
                out.append(f"{key}.{name}={gpus} must be 0, a fraction of one GPU, or a whole number of GPUs")
        if self.model_actors < 0:
            out.append(f"{key}.model_actors={self.model_actors} must be >= 0 (0: as many as the cluster holds)")
        if self.model_cpus <= 0:
            out.append(f"{key}.model_cpus={self.model_cpus} must be > 0")
        if self.start_timeout_s <= 0:
            out.append(f"{key}.start_timeout_s={self.start_timeout_s} must be > 0")
        return out


def ray_device_problems(cfg: Any) -> list[str]:
    """On Ray a model stage's device comes from the GPUs its actors reserve: a fixed `cuda:N` (N is a local
    index, 0 for every actor) or `cuda` for a stage given no GPU would fail on the workers, so they are refused."""
    out = []
    for name in cfg.stages:
        section = getattr(cfg, name, None)
        device = str(getattr(section, "device", "auto"))
        if name not in STAGES or STAGES[name].model_digest is None or not device.startswith("cuda"):
            continue
        gpus = cfg.executor.gpus_for(name)
        if device != "cuda":
            out.append(
                f"{name}.device={device}: on Ray each actor sees only the GPU it reserved; "
                f"set {name}.device=auto and give GPUs with executor.model_gpus or executor.stage_gpus.{name}"
            )
        elif gpus == 0:
            out.append(
                f"{name}.device=cuda but its Ray actors reserve no GPU; set executor.model_gpus "
                f"(or executor.stage_gpus.{name}) above 0, or {name}.device=auto"
            )
    return out


@dataclass
class PrepConfig:
    """`tunekit prep corpus=<dir> out=<dir>`: turn a folder of music into a training-ready dataset."""

    corpus: str | None = MISSING  # audio folder (+ sidecars/metadata.csv), HF dataset folder or hf://org/name[@rev]
    out: str | None = MISSING  # dataset folder: tracks.parquet, windows.parquet, audio/, summary.json
    pipeline_name: str = "musicgen"  # name of the pipeline (set by the pipeline file)
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))  # the pipeline's stages, in order
    workers: int = 0  # executor=local: worker processes; 0: one per CPU core
    quiet: bool = False  # plain progress lines instead of the live display (automatic when output is not a terminal)
    overwrite: bool = False  # allow reusing an `out` made from another corpus or working format
    cache_dir: str | None = None  # stage cache; null: <out>/.cache
    license_policy: str = "open"  # any | open (no NoDerivatives) | commercial (CC0/PD, BY, BY-SA only)
    allow_unknown_license: bool = False  # keep tracks whose licence is missing or unrecognised
    license_prefer: str = "strict"  # sidecar vs metadata.csv licence: strict (policy must admit both) | sidecar | csv
    max_failed_fraction: float = 0.5  # a stage raising for all its rows, or more than this share, fails the run
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where stages run: local processes or Ray
    source: SourceConfig = field(default_factory=SourceConfig)  # how corpus is read: audio files or a HF dataset
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
        if obj.executor.name == "ray":
            out += ray_device_problems(obj)
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
