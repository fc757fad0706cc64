"""Schema of `tunekit export` (configs/export.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMATS = ("audiocraft", "hf")
SPLITS = ("train", "valid", "test")
AUDIO_FORMATS = ("flac", "wav")


@dataclass
class ExportConfig:
    """`tunekit export format=audiocraft|hf data=<prep out> out=<dir>`: a prep output in another tool's format."""

    format: str = "audiocraft"  # audiocraft (data.jsonl + .json sidecars) | hf (Parquet shards, datasets Audio feature)
    data: str | None = None  # the prep output folder (tracks.parquet, windows.parquet, audio/, attribution.csv)
    out: str | None = None  # folder the export is written to
    split: str | None = None  # export only this split (train | valid | test); null: every split
    audio_format: str = "flac"  # window audio: flac | wav (both 24-bit PCM, at the prep's working rate)
    relative_to: str | None = None  # audiocraft: paths relative to this folder (where audiocraft runs); null: absolute
    shard_mb: float = 500.0  # hf: start a new Parquet shard once a shard holds this many MB of audio
    overwrite: bool = False  # write into a non-empty out (a previous export there is replaced)

    @classmethod
    def problems(cls, cfg: Any) -> list[str]:
        """Every invalid option, each naming its key. Paths are checked by `run_export`."""
        out: list[str] = []
        if cfg.format not in FORMATS:
            out.append(f"format={cfg.format!r} is unknown; choose one of {', '.join(FORMATS)}")
        if cfg.split is not None and cfg.split not in SPLITS:
            out.append(f"split={cfg.split!r} is unknown; choose one of {', '.join(SPLITS)} or null for all")
        if cfg.audio_format not in AUDIO_FORMATS:
            out.append(f"audio_format={cfg.audio_format!r} is unknown; choose one of {', '.join(AUDIO_FORMATS)}")
        if cfg.shard_mb <= 0:
            out.append(f"shard_mb={cfg.shard_mb} must be > 0")
        return out


def as_export_config(cfg: Any) -> ExportConfig:
    """A plain ExportConfig from a DictConfig, a dict or an ExportConfig."""
    from tunekit.config.compose import as_schema

    return as_schema(ExportConfig, cfg)
