"""Split stage: assign every kept track to train, valid or test, deterministically by content.

A track's bucket is a hash of (split.seed, its content hash) mapped to [0, 1): below
test_fraction is test, below test_fraction + valid_fraction is valid, the rest train. The same
file lands in the same split in every run and on every machine, whatever else is in the corpus.
With at least three kept tracks the split also guarantees one valid track and one train track
(moving the tracks whose buckets are closest to the boundary). Every window takes its track's
split, so no track is in two splits.
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


def assign_splits(rows: list[TrackRow], cfg: SplitConfig, ctx: StageContext) -> list[TrackRow]:
    """Set `split` on every kept track and its windows (reduce function)."""
    rows = list(rows)
    kept = [i for i, r in enumerate(rows) if r.status == OK]
    b = {i: bucket(rows[i].content_hash or rows[i].track_id, cfg.seed) for i in kept}
    split: dict[int, str] = {}
    for i in kept:
        if b[i] < cfg.test_fraction:
            split[i] = "test"
        elif b[i] < cfg.test_fraction + cfg.valid_fraction:
            split[i] = "valid"
        else:
            split[i] = "train"
    if len(kept) >= 3 and cfg.valid_fraction > 0 and "valid" not in split.values():
        # The track closest to the valid range moves into it (from train, or from test if all are test).
        pool = [i for i in kept if split[i] == "train"] or [i for i in kept if split[i] == "test"]
        edge = cfg.test_fraction + cfg.valid_fraction
        split[min(pool, key=lambda i: (abs(b[i] - edge), rows[i].source_path))] = "valid"
    if len(kept) >= 3 and "train" not in split.values():
        pool = [i for i in kept if split[i] == "test"]
        valid = [i for i in kept if split[i] == "valid"]
        if len(valid) > 1:
            pool += valid
        split[max(pool, key=lambda i: (b[i], rows[i].source_path))] = "train"
    for i in kept:
        row = rows[i]
        windows = [dataclasses.replace(w, split=split[i], license=row.license) for w in row.windows]
        rows[i] = dataclasses.replace(row, split=split[i], windows=windows)
    return rows
