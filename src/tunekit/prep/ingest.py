"""Ingest: scan the corpus, read licence and provenance metadata, hash and fingerprint each file.

`scan_corpus` (main process) lists the audio files and attaches each one's metadata (sidecar JSON
and metadata.csv via tunekit.corpus.metadata). The `ingest_track` stage hashes the file (sha256,
streamed; reused while path, size and mtime are unchanged), reads its header and embedded tags
and fingerprints its decoded audio. Duplicates are resolved later, once the licence and quality
verdicts are known (tunekit.prep.dedupe).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.prep import audio_fingerprint
from tunekit.prep.cache import StageCache, cached_sha256, stage_key
from tunekit.prep.config import IngestConfig
from tunekit.prep.rows import Rejection, StageContext, TrackRow
from tunekit.prep.sources import CorruptError, UndecodableError, header

INGEST_CACHE_VERSION = 1


def track_id_for(source_path: str) -> str:
    """Stable id from the path relative to the corpus."""
    return "trk_" + hashlib.sha256(source_path.encode("utf-8")).hexdigest()[:12]


@dataclasses.dataclass
class ScanReport:
    """What the scan found besides audio files."""

    audio_files: int = 0  # files with an audio extension (a dataset: rows with audio)
    other_files: int = 0  # files ignored (sidecars, images, …)
    metadata_problems: list[str] = dataclasses.field(default_factory=list)  # corpus-level metadata problems
    root: str | None = None  # the folder `source_path` is relative to when not the corpus (a dataset's rows)


def iter_audio_files(corpus: Path, cfg: IngestConfig, exclude: Iterable[Path] = ()) -> tuple[list[Path], int]:
    """Audio files under `corpus` (sorted by relative path) and the count of other files.

    Hidden files and folders and the `exclude` folders (the output and cache, when inside the
    corpus) are skipped.
    """
    exts = {e.lower().lstrip(".") for e in cfg.extensions}
    skip = {p.resolve() for p in exclude}
    found: list[Path] = []
    others = 0
    for dirpath, dirnames, filenames in os.walk(corpus, followlinks=cfg.follow_symlinks):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip)
        for name in filenames:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower().lstrip(".") in exts:
                found.append(here / name)
            else:
                others += 1
    found.sort(key=lambda p: p.relative_to(corpus).as_posix())
    return found, others


def _metadata_fields(meta: Any) -> dict[str, Any]:
    """TrackRow fields from a tunekit.corpus.metadata.TrackMetadata."""
    info = getattr(meta, "license_info", None)
    tags = getattr(meta, "tags", None) or []
    date = getattr(meta, "date_observed", None)
    fields: dict[str, Any] = {
        "artist": getattr(meta, "artist", None),
        "title": getattr(meta, "title", None),
        "attribution": getattr(meta, "attribution", None),
        "source": getattr(meta, "source", None),
        "source_id": None if getattr(meta, "source_id", None) is None else str(meta.source_id),
        "url": getattr(meta, "url", None),
        "genre": getattr(meta, "genre", None),
        "tags": [str(t) for t in tags],
        "instrumental": getattr(meta, "instrumental", None),
        "date_observed": None if date is None else str(date),
        "license_source": getattr(meta, "license_source", None),
        "license_conflict": getattr(meta, "license_conflict", None),
        "license_candidates": dict(getattr(meta, "license_candidates", None) or {}),
        "metadata_problems": [str(p) for p in (getattr(meta, "problems", None) or [])],
    }
    if info is not None:
        fields.update(license_fields(info))
    return fields


def license_fields(info: Any) -> dict[str, Any]:
    """TrackRow licence fields of a tunekit.corpus.license.LicenseInfo."""
    return {
        "license": info.id,
        "license_raw": info.raw,
        "license_family": info.family,
        "requires_attribution": bool(info.requires_attribution),
        "share_alike": bool(info.share_alike),
    }


def scan_corpus(corpus: Path, cfg: IngestConfig, exclude: Iterable[Path] = ()) -> tuple[list[TrackRow], ScanReport]:
    """One TrackRow per audio file, sorted by path, with metadata attached."""
    from tunekit.corpus.metadata import load_corpus_metadata

    files, others = iter_audio_files(corpus, cfg, exclude)
    report = ScanReport(audio_files=len(files), other_files=others)
    # Embedded tags are read by the ingest stage (in the workers, cached by content hash), not here.
    metadata = load_corpus_metadata(corpus, read_embedded_tags=False)
    report.metadata_problems = [str(p) for p in (getattr(metadata, "problems", None) or [])]
    rows = []
    for path in files:
        rel = path.relative_to(corpus).as_posix()
        row = TrackRow(track_id=track_id_for(rel), source_path=rel, extension=path.suffix.lower().lstrip("."))
        row = dataclasses.replace(row, **_metadata_fields(metadata.for_track(path)))
        rows.append(row)
    return rows, report


def _ingest_key(content_hash: str, cfg: IngestConfig) -> str:
    return stage_key("ingest", INGEST_CACHE_VERSION, {"fingerprint_seconds": cfg.fingerprint_seconds}, content_hash)


def _read_fingerprint(path: Path, seconds: float) -> str | None:
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            frames = min(int(f.frames), int(seconds * f.samplerate)) if f.frames > 0 else int(seconds * f.samplerate)
            audio = f.read(frames, dtype="float32", always_2d=True)
            rate = int(f.samplerate)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return None
    if audio.size == 0:
        return None
    return audio_fingerprint.compute(np.ascontiguousarray(audio.T), rate)


def _embedded_fields(row: TrackRow, tags: dict[str, str]) -> dict[str, Any]:
    """Fill missing artist/title, and a missing licence, from embedded tags."""
    from tunekit.corpus.license import normalize_license

    out: dict[str, Any] = {}
    if not row.artist and tags.get("artist"):
        out["artist"] = tags["artist"].strip()
    if not row.title and tags.get("title"):
        out["title"] = tags["title"].strip()
    if not row.genre and tags.get("genre"):
        out["genre"] = tags["genre"].strip()
    if row.license_family in (None, "unknown"):
        for name in ("license", "copyright", "comment"):
            text = tags.get(name)
            if not text:
                continue
            info = normalize_license(text.strip())
            if info.family not in ("unknown", "other") or (name == "license" and info.family == "other"):
                out.update(license_fields(info))
                out["license_source"] = f"embedded:{name}"
                break
    return out


def _ingest(row: TrackRow, cfg: IngestConfig, ctx: StageContext, compute: bool) -> TrackRow | Rejection | None:
    path = ctx.source(row)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return Rejection("unreadable", f"cannot stat {row.source_path}: {exc}")
    if size == 0:
        return Rejection("empty", "the file has 0 bytes")
    content_hash = cached_sha256(path, ctx.cache_dir, compute=compute)
    if content_hash is None:
        return None
    row = dataclasses.replace(row, file_size=size, content_hash=content_hash, audio_key=content_hash)
    cache = StageCache(ctx.cache_dir, ctx.out_dir)
    key = _ingest_key(content_hash, cfg)
    entry = cache.get("ingest", key)
    if entry is None:
        if not compute:
            return None
        entry = _analyse(path, row, cfg, ctx, cache, key)
    if entry.get("rejection"):
        return Rejection(**entry["rejection"])
    info = dict(entry["update"])
    tags = info.pop("tags_embedded", {})
    row = dataclasses.replace(row, **info)
    return dataclasses.replace(row, **_embedded_fields(row, tags))


def _analyse(
    path: Path, row: TrackRow, cfg: IngestConfig, ctx: StageContext, cache: StageCache, key: str
) -> dict[str, Any]:
    """Header, embedded tags and fingerprint of one file, stored in the cache by content hash."""
    try:
        h, readable = header(path, ctx.cache_dir, row.content_hash or "")
    except UndecodableError as exc:  # not cached: installing a decoder fixes it
        return {"update": None, "rejection": {"reason": "undecodable", "detail": str(exc)}}
    except CorruptError as exc:
        return cache.put("ingest", key, None, {"reason": "unreadable", "detail": str(exc)}, 0.0)
    duration = h.frames / h.sample_rate if h.sample_rate > 0 else 0.0
    bitrate = None
    if h.lossy and duration > 0:
        bitrate = round(row.file_size * 8 / duration / 1000.0, 1)
    update = {
        "container": h.container,
        "codec": h.codec,
        "lossy": h.lossy,
        "decoder": h.decoder,
        "sample_rate_in": h.sample_rate,
        "channels_in": h.channels,
        "frames_in": h.frames,
        "duration_s": duration,
        "bitrate_kbps": bitrate,
        "fingerprint": _read_fingerprint(readable, cfg.fingerprint_seconds),
        "tags_embedded": h.tags,
    }
    return cache.put("ingest", key, update, None, 0.0)


def ingest_track(row: TrackRow, cfg: IngestConfig, ctx: StageContext) -> TrackRow | Rejection:
    """Hash, header, embedded tags and fingerprint of one file (stage function)."""
    result = _ingest(row, cfg, ctx, compute=True)
    if result is None:
        raise RuntimeError(f"ingest produced no result for {row.source_path}")
    return result


def probe_ingest(row: TrackRow, cfg: IngestConfig, ctx: StageContext) -> TrackRow | Rejection | None:
    """`ingest_track` answered from the caches alone, or None when the file must be read."""
    return _ingest(row, cfg, ctx, compute=False)
