"""Kernel Audio Distance (KAD): the unbiased MMD² between embedding frames under a Gaussian RBF kernel.

Chung et al. 2025, "KAD: No More FAD!" (arXiv 2502.15602), with the conventions of its toolkit, kadtk:

    KAD = 100 · [ Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (n(n−1)) − 2 Σ_{i,j} k(x_i, y_j) / (mn) ]
    k(a, b) = exp(−‖a − b‖² / (2σ²)),  σ = median Euclidean distance over the pairs i < j of reference frames y

The bandwidth comes from the reference alone, so KAD(A, B) ≠ KAD(B, A) and every set scored against one
reference is measured on one scale. The estimator is unbiased: two samples of one distribution score about 0,
possibly slightly below, at any sample size; it needs no covariance, so it holds on sets too small for FAD.
(kadtk adds 1e-8 to 2σ² and takes the lower of the two middle distances as the median; both change nothing
that float64 figures show at realistic sizes.)

Sums run in float64 over square blocks of `block` × `block` kernel values, so memory does not grow with the
number of frames, on whatever torch device is given (a GPU when there is one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SCALE = 100.0  # kadtk reports MMD² × 100
BLOCK = 2048  # rows and columns of the kernel computed at once: 32 MiB of float64 per block
MEDIAN_FRAMES = 4096  # the bandwidth's median is taken over all pairs of at most this many reference frames


def _as_frames(frames: Any, what: str) -> np.ndarray:
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what}: frames must be (frames, dim); got shape {x.shape}")
    return x


def _tensor(x: np.ndarray, device: str) -> Any:
    import torch

    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64, device=device)


def _sq_distances(a: Any, a_sq: Any, b: Any, b_sq: Any) -> Any:
    """Squared Euclidean distances between the rows of a and b (rounding below 0 clipped)."""
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_(min=0.0)


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def median_pairwise_distance(
    frames: np.ndarray, *, max_frames: int = MEDIAN_FRAMES, block: int = BLOCK, device: str = "cpu"
) -> float:
    """The median Euclidean distance over pairs i < j of frames: kadtk's bandwidth.

    Exact over all pairs up to `max_frames` frames; beyond that, over all pairs of `max_frames` evenly spaced
    frames (8.4 million pairs at the default: a sample median of that size is steady to well under 1 %).
    """
    import torch

    x = _as_frames(frames, "reference")
    if x.shape[0] < 2:
        raise ValueError(f"the bandwidth needs at least 2 reference frames; got {x.shape[0]}")
    x = x[evenly_spaced(x.shape[0], max_frames)]
    t = _tensor(x, device)
    sq = (t * t).sum(dim=1)
    parts = []
    for i0 in range(0, t.shape[0], block):
        a, a_sq = t[i0 : i0 + block], sq[i0 : i0 + block]
        for j0 in range(i0, t.shape[0], block):
            d = _sq_distances(a, a_sq, t[j0 : j0 + block], sq[j0 : j0 + block]).sqrt_()
            if j0 == i0:
                rows, cols = torch.triu_indices(d.shape[0], d.shape[1], offset=1, device=d.device)
                d = d[rows, cols]
            parts.append(d.reshape(-1).cpu().numpy())
    return float(np.median(np.concatenate(parts)))


def _segment_sums(t: Any, bounds: np.ndarray, start: int, stop: int, dim: int) -> tuple[int, Any]:
    """Sums of `t` along `dim` over each group's part of rows/columns [start, stop).

    Groups are contiguous: group g is [bounds[g], bounds[g+1]). Returns the first group touched and the sums,
    one slice along `dim` per group from it.
    """
    import torch

    g0 = int(np.searchsorted(bounds, start, side="right")) - 1
    g1 = int(np.searchsorted(bounds, stop, side="left"))
    if g1 - g0 <= 1:
        return g0, t.sum(dim=dim, keepdim=True)
    edges = torch.as_tensor(np.clip(bounds[g0 : g1 + 1], start, stop) - start, device=t.device)
    shape = list(t.shape)
    shape[dim] = 1
    c = torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t.cumsum(dim=dim)], dim=dim)
    return g0, c.index_select(dim, edges[1:]) - c.index_select(dim, edges[:-1])


def kernel_sums(
    x: Any, x_bounds: np.ndarray, y: Any, y_bounds: np.ndarray, gamma: float, *, same: bool, block: int = BLOCK
) -> np.ndarray:
    """Σ exp(−γ‖x_i − y_j‖²) for each pair of groups: a (groups of x, groups of y) float64 array.

    `x` and `y` are float64 tensors; `*_bounds` the groups' start offsets followed by the number of rows.
    With `same` (y is x) the pairs i = j are left out and each off-diagonal block is computed once.
    """
    import torch

    out = torch.zeros(len(x_bounds) - 1, len(y_bounds) - 1, dtype=torch.float64, device=x.device)
    x_sq, y_sq = (x * x).sum(dim=1), (y * y).sum(dim=1)
    for i0 in range(0, x.shape[0], block):
        i1 = min(i0 + block, x.shape[0])
        for j0 in range(i0 if same else 0, y.shape[0], block):
            j1 = min(j0 + block, y.shape[0])
            k = _sq_distances(x[i0:i1], x_sq[i0:i1], y[j0:j1], y_sq[j0:j1]).mul_(-gamma).exp_()
            if same and j0 == i0:
                k.fill_diagonal_(0.0)
            r0, rows = _segment_sums(k, x_bounds, i0, i1, dim=0)
            c0, s = _segment_sums(rows, y_bounds, j0, j1, dim=1)
            out[r0 : r0 + s.shape[0], c0 : c0 + s.shape[1]] += s
            if same and j0 != i0:
                out[c0 : c0 + s.shape[1], r0 : r0 + s.shape[0]] += s.T
    return out.cpu().numpy()


def bounds_of(clips: Sequence[np.ndarray]) -> np.ndarray:
    """Start offsets of each clip's frames in their concatenation, followed by the total."""
    return np.concatenate([[0], np.cumsum([len(c) for c in clips])]).astype(np.int64)


@dataclass
class KadGroups:
    """Kernel sums of a set whose frames come in groups (clips), against one reference.

    KAD of any multiset of whole groups (a bootstrap resample over prompts) follows from these sums
    without touching the frames again: `value(counts)`.
    """

    within: np.ndarray  # (g, g): Σ k over frame pairs of groups a and b, the pairs of a frame with itself left out
    cross: np.ndarray  # (g,): Σ k between each group's frames and every reference frame
    frames: np.ndarray  # (g,): frames per group
    reference_within: float  # mean k over pairs of distinct reference frames
    reference_n: int

    def value(self, counts: np.ndarray) -> np.ndarray:
        """KAD of the multiset holding group g `counts[r, g]` times, for each row r ((R, g) → (R,)); NaN below 2 frames.

        A frame repeated by the resample pairs with its own copies (k = 1), as it would in the concatenated frames.
        """
        c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        m = c @ self.frames
        pairs = np.einsum("rg,gh,rh->r", c, self.within, c) + (c * (c - 1.0)) @ self.frames
        with np.errstate(divide="ignore", invalid="ignore"):
            xx = pairs / (m * (m - 1.0))
            xy = (c @ self.cross) / (m * self.reference_n)
            out = SCALE * (xx + self.reference_within - 2.0 * xy)
        return np.where(m >= 2, out, np.nan)


class KadReference:
    """A fixed reference set for KAD: its bandwidth and within-set kernel mean are computed once.

    `bandwidth` fixes σ instead of the reference's median pairwise distance (for comparisons on one scale).
    """

    def __init__(
        self,
        frames: np.ndarray,
        *,
        bandwidth: float | None = None,
        device: str = "cpu",
        block: int = BLOCK,
        median_frames: int = MEDIAN_FRAMES,
    ) -> None:
        y = _as_frames(frames, "reference")
        if y.shape[0] < 2:
            raise ValueError(f"KAD needs at least 2 reference frames; got {y.shape[0]}")
        if bandwidth is None:
            bandwidth = median_pairwise_distance(y, max_frames=median_frames, block=block, device=device)
        if not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"KAD bandwidth must be positive; got {bandwidth} (are the reference frames all equal?)")
        self.bandwidth = float(bandwidth)
        self.gamma = 1.0 / (2.0 * self.bandwidth**2)
        self.device, self.block = device, block
        self.n, self.dim = int(y.shape[0]), int(y.shape[1])
        self._y = _tensor(y, device)
        self._within: float | None = None

    @property
    def within_mean(self) -> float:
        """Mean kernel value over pairs of distinct reference frames (computed on first use)."""
        if self._within is None:
            one = np.array([0, self.n])
            total = kernel_sums(self._y, one, self._y, one, self.gamma, same=True, block=self.block)[0, 0]
            self._within = float(total) / (self.n * (self.n - 1))
        return self._within

    def groups(self, clips: Sequence[np.ndarray]) -> KadGroups:
        """Kernel sums of a set given as one (frames, dim) array per clip (clips may be empty)."""
        x = np.concatenate([_as_frames(c, "generated") for c in clips]) if clips else np.zeros((0, self.dim))
        if x.shape[1] != self.dim:
            raise ValueError(f"frames have dimension {x.shape[1]}; the reference has {self.dim}")
        bounds = bounds_of(clips)
        t = _tensor(x, self.device)
        within = kernel_sums(t, bounds, t, bounds, self.gamma, same=True, block=self.block)
        cross = kernel_sums(t, bounds, self._y, np.array([0, self.n]), self.gamma, same=False, block=self.block)[:, 0]
        return KadGroups(within=within, cross=cross, frames=np.diff(bounds).astype(np.float64),
                         reference_within=self.within_mean, reference_n=self.n)

    def distance(self, frames: np.ndarray) -> float:
        """KAD of (frames, dim) embeddings against this reference (NaN below 2 frames)."""
        return float(self.groups([frames]).value(np.ones((1, 1)))[0])


def kad(
    frames: np.ndarray, reference: np.ndarray, *, bandwidth: float | None = None, device: str = "cpu", block: int = BLOCK
) -> float:
    """KAD of generated (frames, dim) embeddings against reference ones, the bandwidth from the reference."""
    return KadReference(reference, bandwidth=bandwidth, device=device, block=block).distance(frames)


def thin(clips: Sequence[np.ndarray], max_frames: int) -> tuple[list[np.ndarray], int]:
    """Every k-th frame of each clip, k the smallest stride that leaves at most `max_frames` in all (0: no limit).

    A common stride keeps every clip's share and each frame's clip, so resamples over clips stay possible.
    Returns the thinned clips and k.
    """
    total = sum(len(c) for c in clips)
    if max_frames <= 0 or total <= max_frames:
        return list(clips), 1
    stride = math.ceil(total / max_frames)
    while sum(math.ceil(len(c) / stride) for c in clips) > max_frames:
        stride += 1
    return [c[::stride] for c in clips], stride
