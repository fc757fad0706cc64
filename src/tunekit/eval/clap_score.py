"""CLAP score: the mean cosine similarity between each clip's audio embedding and its own prompt's.

Audio and text embeddings are matched by clip id, never by position, so a shuffled directory
listing cannot misalign them (a bug of one existing tool). A clip's audio embedding is the mean of
its CLAP window embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class ClapScore:
    """Mean and spread of cos(audio_i, text_i) over `n` id-matched pairs, with per-clip values."""

    mean: float
    std: float
    n: int
    per_item: dict[str, float] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    def to_dict(self, with_items: bool = False) -> dict:
        d = asdict(self)
        if not with_items:
            d.pop("per_item")
        d["unmatched"] = self.unmatched[:20]
        return d


def clip_vectors(frames: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One vector per clip: the mean of its window embeddings (clips without windows are left out)."""
    return {cid: np.asarray(f, dtype=np.float64).mean(axis=0) for cid, f in frames.items() if len(f)}


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def clap_score(audio: Mapping[str, np.ndarray], text: Mapping[str, np.ndarray]) -> ClapScore:
    """CLAP score over the ids present in both mappings; ids with audio but no text are listed as unmatched."""
    ids = sorted(set(audio) & set(text))
    if not ids:
        raise ValueError("no clip id has both an audio and a text embedding: check that prompt ids match file ids")
    per_item = {cid: float(_unit(np.asarray(audio[cid], np.float64)) @ _unit(np.asarray(text[cid], np.float64))) for cid in ids}
    values = np.array(list(per_item.values()))
    return ClapScore(
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        n=len(ids),
        per_item=per_item,
        unmatched=sorted(set(audio) - set(text)),
    )
