"""Dedupe: keep one track per recording, chosen among the copies that are usable.

Exact copies share a content hash; re-encodings (a WAV and its FLAC, a resampled copy) share a
fingerprint (both computed by ingest). The reduce runs after the licence, decode and quality
stages and looks only at rows still ok, so a copy without a licence, or one that failed a quality
check, never makes another copy a duplicate: the usable copy is kept. Among usable copies the
keeper is the lossless one, then the one with the higher source sample rate, then the one with
more provenance metadata, then the first by path; the others are rejected as `duplicate_of:<id>`.
"""

from __future__ import annotations

import logging

from tunekit.prep import audio_fingerprint
from tunekit.prep.config import IngestConfig
from tunekit.prep.rows import OK, Rejection, StageContext, TrackRow

log = logging.getLogger("tunekit.prep")

# Metadata that says where a track comes from and how to credit it; more of it makes a better keeper.
PROVENANCE_FIELDS = ("license", "artist", "title", "attribution", "source", "source_id", "url", "date_observed")


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _same_length(a: TrackRow, b: TrackRow) -> bool:
    da, db = a.duration_s or 0.0, b.duration_s or 0.0
    return abs(da - db) <= max(0.5, 0.01 * max(da, db))


def provenance(row: TrackRow) -> int:
    """How many of PROVENANCE_FIELDS the row has filled."""
    return sum(1 for name in PROVENANCE_FIELDS if str(getattr(row, name) or "").strip())


def keeper_order(row: TrackRow) -> tuple[bool, int, int, str]:
    """Sort key of the copies of one recording: the smallest is kept."""
    return bool(row.lossy), -(row.sample_rate_in or 0), -provenance(row), row.source_path


def _why_kept(keep: TrackRow, other: TrackRow) -> str:
    """The first preference on which the keeper beats `other`."""
    if not keep.lossy and other.lossy:
        return "lossless"
    if (keep.sample_rate_in or 0) > (other.sample_rate_in or 0):
        return f"higher sample rate, {keep.sample_rate_in} Hz"
    if provenance(keep) > provenance(other):
        return f"more provenance metadata, {provenance(keep)} of {len(PROVENANCE_FIELDS)} fields"
    return "first by path"


def duplicate_groups(rows: list[TrackRow], cfg: IngestConfig) -> list[list[int]]:
    """Indices of the ok rows that hold the same recording, one list per recording with 2+ copies."""
    live = sorted((i for i, r in enumerate(rows) if r.status == OK), key=lambda i: rows[i].source_path)
    uf = _UnionFind(len(rows))
    first_by_hash: dict[str | None, int] = {}
    for i in live:
        h = rows[i].content_hash
        if h in first_by_hash:
            uf.union(first_by_hash[h], i)
        else:
            first_by_hash[h] = i
    # Decoded duplicates: candidates from a fingerprint index, confirmed by bit error rate and length.
    reps = sorted(first_by_hash.values())
    for a_pos, b_pos in sorted(audio_fingerprint.candidate_pairs([rows[i].fingerprint for i in reps])):
        a, b = reps[a_pos], reps[b_pos]
        if uf.find(a) == uf.find(b) or not _same_length(rows[a], rows[b]):
            continue
        ber = audio_fingerprint.bit_error_rate(rows[a].fingerprint or "", rows[b].fingerprint or "")
        if ber <= cfg.fingerprint_max_ber:
            uf.union(a, b)
            log.info("decoded duplicate: %s ~ %s (BER %.3f)", rows[a].source_path, rows[b].source_path, ber)
    groups: dict[int, list[int]] = {}
    for i in live:
        groups.setdefault(uf.find(i), []).append(i)
    return [members for members in groups.values() if len(members) > 1]


def mark_duplicates(rows: list[TrackRow], cfg: IngestConfig, ctx: StageContext) -> list[TrackRow]:
    """Reject all but the best usable copy of each recording (reduce of the dedupe stage)."""
    rows = list(rows)
    for members in duplicate_groups(rows, cfg):
        members.sort(key=lambda i: keeper_order(rows[i]))
        keep = rows[members[0]]
        for i in members[1:]:
            how = "same bytes" if rows[i].content_hash == keep.content_hash else "same audio, decoded,"
            detail = f"{how} as {keep.source_path}, which is kept ({_why_kept(keep, rows[i])})"
            rows[i] = rows[i].rejected(Rejection(f"duplicate_of:{keep.track_id}", detail), "dedupe")
    return rows
