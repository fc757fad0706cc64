"""Split stage: assign every kept track to train, valid or test, deterministically by content.

A track's bucket is a hash of (split.seed, its content hash) mapped to [0, 1): below
test_fraction is test, below test_fraction + valid_fraction is valid, the rest train. The same
file lands in the same split in every run and on every machine, whatever else is in the corpus.

Small corpora still get every split they need: with at least three kept tracks there is always one
train track, one valid track (when `valid_fraction` > 0) and one test track (when `test_fraction` > 0),
so a five-track corpus can be trained, validated and evaluated. A missing split takes the track whose
bucket lies closest to its range, from a split that keeps at least one track. Every window takes its
track's split, so no track is in two splits.

A Hugging Face dataset that comes with held-out splits keeps them (`split.keep_source`): its rows of
`validation`/`valid`/`dev` are valid, of `test`/`eval` test, so nothing its authors held out is trained on. A
held-out split the dataset lacks (valid, for a train + test dataset) is drawn from its train rows by bucket, with
the same guarantees; rows of other split names are bucketed too. A dataset with only a train split is bucketed
like files.
"""

from __future__ import annotations

import dataclasses
import hashlib

from tunekit.prep.config import SplitConfig
from tunekit.prep.rows import OK, StageContext, TrackRow


def bucket(content_hash: str, seed: int) -> float:
    """A track's position in [0, 1) from its content hash."""
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _ranges(cfg: SplitConfig) -> dict[str, tuple[float, float]]:
    """Each split's bucket range [lo, hi)."""
    edge = cfg.test_fraction + cfg.valid_fraction
    return {"test": (0.0, cfg.test_fraction), "valid": (cfg.test_fraction, edge), "train": (edge, 1.0)}


def _distance(b: float, lo: float, hi: float) -> float:
    return 0.0 if lo <= b < hi else min(abs(b - lo), abs(b - hi))


def split_by_bucket(buckets: dict[str, float], cfg: SplitConfig) -> dict[str, str]:
    """Map each key (a kept track) to its split, guaranteeing train/valid/test with three or more tracks."""
    ranges = _ranges(cfg)
    split = {k: next(s for s, (lo, hi) in ranges.items() if lo <= b < hi) for k, b in buckets.items()}
    if len(buckets) < 3:
        return split
    needed = ["train"] + [s for s, f in (("valid", cfg.valid_fraction), ("test", cfg.test_fraction)) if f > 0]
    for name in needed:
        if name in split.values():
            continue
        # Donors: tracks of a split that has more than one track (never empty a split that is needed).
        sizes = {s: list(split.values()).count(s) for s in ranges}
        donors = [k for k, s in split.items() if sizes[s] > 1 or s not in needed]
        lo, hi = ranges[name]
        chosen = min(donors, key=lambda k: (_distance(buckets[k], lo, hi), k))
        split[chosen] = name
    return split


SOURCE_SPLITS = {"train": "train", "training": "train", "validation": "valid", "valid": "valid", "val": "valid",
                 "dev": "valid", "test": "test", "testing": "test", "eval": "test",
                 "evaluation": "test"}  # a dataset's split names -> tunekit's (as prep.hf_source names them)


def source_splits(rows: list[TrackRow], kept: list[int]) -> dict[int, str]:
    """The kept rows' own splits (a dataset corpus's `hf_split`), when the source holds out valid or test rows."""
    named = {i: SOURCE_SPLITS.get(str(rows[i].extra.get("hf_split") or "").lower()) for i in kept}
    found = {i: s for i, s in named.items() if s is not None}
    return found if any(s != "train" for s in found.values()) else {}


def assign_splits(rows: list[TrackRow], cfg: SplitConfig, ctx: StageContext) -> list[TrackRow]:
    """Set `split` on every kept track and its windows (reduce function)."""
    rows = list(rows)
    kept = [i for i, r in enumerate(rows) if r.status == OK]
    given = source_splits(rows, kept) if cfg.keep_source else {}
    # A held-out split the source lacks (a train + test dataset has no valid) is drawn from its train rows.
    fill = dataclasses.replace(cfg, **{f"{s}_fraction": 0.0 for s in ("valid", "test") if s in given.values()})
    if given and (fill.valid_fraction or fill.test_fraction):
        given = {i: s for i, s in given.items() if s != "train"}
    # Keyed by source path so ties break the same way whatever the row order.
    keys = {i: f"{rows[i].source_path}\0{i}" for i in kept if i not in given}
    buckets = {keys[i]: bucket(rows[i].content_hash or rows[i].track_id, cfg.seed) for i in keys}
    split = split_by_bucket(buckets, fill if given else cfg)
    for i in kept:
        row = rows[i]
        s = given[i] if i in given else split[keys[i]]
        windows = [dataclasses.replace(w, split=s, license=row.license) for w in row.windows]
        rows[i] = dataclasses.replace(row, split=s, windows=windows)
    return rows
