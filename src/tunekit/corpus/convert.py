"""`tunekit corpus fma` and `tunekit corpus jamendo`: a public corpus's metadata as tunekit's metadata.csv.

    tunekit corpus fma tracks=fma/fma_metadata/tracks.csv audio=fma/fma_full out=fma/metadata.csv observed=2024-05-01
    tunekit corpus jamendo tsv=mtg/data/autotagging.tsv audio=mtg/audio out=mtg/metadata.csv \
        licenses=mtg/audio_licenses.txt meta=mtg/data/raw.meta.tsv observed=2024-06-30

Thin wrappers over `tunekit.corpus.adapters`; the folder of `out` is then the corpus: `tunekit prep corpus=<it>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from tunekit.errors import RunFailedError


@dataclass
class FmaConfig:
    """Schema of `tunekit corpus fma` (configs/corpus_fma.yaml)."""

    tracks: str = MISSING  # FMA's fma_metadata/tracks.csv (genres.csv beside it names the genres)
    audio: str = MISSING  # folder of the mp3s, e.g. fma/fma_full (…/000/000002.mp3)
    out: str = MISSING  # metadata.csv to write; its folder must contain `audio` and is the corpus for prep
    observed: str | None = None  # YYYY-MM-DD you downloaded the metadata (licences can change)
    only_existing: bool = True  # keep only tracks whose audio file is present

    @classmethod
    def problems(cls, cfg: Any) -> list[str]:
        """Input files that do not exist, each naming its key."""
        return _exists(cfg, {"tracks": "file", "audio": "folder"})


@dataclass
class JamendoConfig:
    """Schema of `tunekit corpus jamendo` (configs/corpus_jamendo.yaml)."""

    tsv: str = MISSING  # an MTG-Jamendo split TSV, e.g. mtg-jamendo-dataset/data/autotagging.tsv
    audio: str = MISSING  # folder of the downloaded audio (raw_30s/audio or raw_30s/audio-low)
    out: str = MISSING  # metadata.csv to write; its folder must contain `audio` and is the corpus for prep
    licenses: str | None = None  # audio_licenses.txt, or a CSV/TSV of TRACK_ID and licence; null: a LICENSE column in tsv
    meta: str | None = None  # raw.meta.tsv: adds artist, title and URL
    observed: str | None = None  # YYYY-MM-DD the licences were read (Jamendo licences can change)
    only_existing: bool = True  # keep only tracks whose audio file is present

    @classmethod
    def problems(cls, cfg: Any) -> list[str]:
        """Input files that do not exist, each naming its key."""
        return _exists(cfg, {"tsv": "file", "audio": "folder", "licenses": "file", "meta": "file"})


def _exists(cfg: Any, kinds: dict[str, str]) -> list[str]:
    out = []
    for key, kind in kinds.items():
        value = cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key)
        if not value:
            continue
        path = Path(str(value)).expanduser()
        ok = path.is_file() if kind == "file" else path.is_dir()
        if not ok:
            out.append(f"{key}={value} is not an existing {kind}")
    return out


def _finish(report: Any, what: str) -> int:
    """Print what was written; a conversion that wrote no row fails (exit 1)."""
    for problem in report.problems[:20]:
        print(f"tunekit corpus {what}: warning: {problem}")
    if len(report.problems) > 20:
        print(f"tunekit corpus {what}: … and {len(report.problems) - 20} more warnings")
    if report.written == 0:
        raise RunFailedError(
            f"no track written to {report.out_csv}: {report.missing_audio} tracks have no audio under the given "
            "folder (check audio=, or only_existing=false to keep them)"
        )
    print(f"tunekit corpus {what}: wrote {report.written} tracks to {report.out_csv} "
          f"({report.missing_audio} without audio skipped)")
    print(f"next: tunekit prep corpus={report.out_csv.parent} out=out/{what}")
    return 0


def run_fma(cfg: Any) -> int:
    """Write metadata.csv from FMA's tracks.csv."""
    from tunekit.corpus.adapters import fma_to_metadata_csv

    report = fma_to_metadata_csv(Path(cfg.tracks).expanduser(), Path(cfg.audio).expanduser(),
                                 Path(cfg.out).expanduser(), observed=cfg.observed, only_existing=cfg.only_existing)
    return _finish(report, "fma")


def run_jamendo(cfg: Any) -> int:
    """Write metadata.csv from an MTG-Jamendo split TSV and its licences."""
    from tunekit.corpus.adapters import jamendo_to_metadata_csv

    report = jamendo_to_metadata_csv(
        Path(cfg.tsv).expanduser(), Path(cfg.audio).expanduser(), Path(cfg.out).expanduser(),
        observed=cfg.observed, licenses=Path(cfg.licenses).expanduser() if cfg.licenses else None,
        meta_tsv=Path(cfg.meta).expanduser() if cfg.meta else None, only_existing=cfg.only_existing,
    )
    return _finish(report, "jamendo")
