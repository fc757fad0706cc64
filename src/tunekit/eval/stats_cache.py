"""Cached reference statistics, keyed by (embedding model + window policy, reference set content).

Stored as `.npz` (no pickle) under `<tunekit cache>/eval-stats/<embedding>/<key>.npz`, written
atomically: the mean, covariance and frame count for FAD, plus one mean vector per clip (the
CLAP ceiling score uses them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunekit.atomic import atomic_path
from tunekit.eval.frechet import stats


@dataclass
class SetStats:
    """FAD statistics of one embedded set, with per-clip mean vectors (rows follow `item_ids`)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    item_ids: list[str]
    item_means: np.ndarray
    item_frames: np.ndarray
    frames: np.ndarray | None = None  # all frames, kept only where FAD∞ needs them (the reconstruction floor)

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def clip_vectors(self) -> dict[str, np.ndarray]:
        return {cid: self.item_means[i] for i, cid in enumerate(self.item_ids) if self.item_frames[i] > 0}


def from_frames(frames: dict[str, np.ndarray], keep_frames: bool = False) -> SetStats:
    """Statistics of {clip id: (frames, dim)} embeddings (and the frames themselves with `keep_frames`)."""
    ids = sorted(frames)
    stacked = np.concatenate([frames[i] for i in ids]) if ids else np.zeros((0, 0))
    if stacked.shape[0] < 2:
        raise ValueError(f"need at least 2 embedding frames for statistics; got {stacked.shape[0]}")
    mu, sigma = stats(stacked)
    dim = stacked.shape[1]
    means = np.stack([frames[i].mean(axis=0) if len(frames[i]) else np.zeros(dim) for i in ids]).astype(np.float64)
    counts = np.array([len(frames[i]) for i in ids], dtype=np.int64)
    return SetStats(
        mu=mu,
        sigma=sigma,
        n=int(stacked.shape[0]),
        item_ids=ids,
        item_means=means,
        item_frames=counts,
        frames=stacked.astype(np.float32) if keep_frames else None,
    )


def cache_path(root: Path, embedder_name: str, embedder_key: str, set_hash: str, variant: str = "") -> Path:
    """Where the statistics for this (embedder, set, variant) live."""
    key = hashlib.sha256(f"{embedder_key}\0{set_hash}\0{variant}".encode()).hexdigest()[:40]
    return root / "eval-stats" / embedder_name / f"{key}.npz"


def save(path: Path, s: SetStats) -> None:
    """Write the statistics atomically as .npz."""
    extra = {"frames": s.frames} if s.frames is not None else {}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                **extra,
                mu=s.mu,
                sigma=s.sigma,
                n=np.array(s.n),
                item_ids=np.array(s.item_ids, dtype=str),
                item_means=s.item_means,
                item_frames=s.item_frames,
            )


def load(path: Path) -> SetStats | None:
    """The cached statistics, or None when absent or unreadable (they are then recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return SetStats(
                mu=z["mu"],
                sigma=z["sigma"],
                n=int(z["n"]),
                item_ids=[str(i) for i in z["item_ids"]],
                item_means=z["item_means"],
                item_frames=z["item_frames"],
                frames=z["frames"] if "frames" in z.files else None,
            )
    except (OSError, ValueError, KeyError):
        return None
