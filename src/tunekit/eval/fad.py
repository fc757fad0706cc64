"""FAD over embedding frames: the plain score with its N, FAD∞, per-clip distances and rank checks.

FAD is biased by the number of frames N (≈ c/N for two samples of one distribution). FAD∞
(Chong & Forsyth, "Effectively Unbiased FID and Inception Score and where to find them") fits
FAD(n) = a + b/n over random subsets of the generated frames and reports the intercept a. The
subsets are drawn **without** replacement: drawn with replacement they converge to the finite
pool's own FAD and keep its bias (`replace=True` exists only to show that contrast). Every subset has at
least 2·d frames (d the embedding dimension): a smaller one has a rank-deficient covariance whose FAD falls off
the a + b/n line and drags the intercept below zero. A pool too small for such subsets gets plain FAD and a
warning instead of a fit.

`FadGroups` recomputes FAD for any resample of whole clips from per-clip sums (the paired bootstrap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from tunekit.eval.frechet import FrechetReference, stats


@dataclass
class FadInf:
    """The fit FAD(n) = a + b/n: `a` is FAD∞; `values[i]` is the mean FAD over draws at `sizes[i]`."""

    a: float
    b: float
    r2: float
    sizes: list[int]
    values: list[float]
    draws: int
    replace: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FadResult:
    """Plain FAD with its frame count N and dimension d, the FAD∞ fit, and any warnings."""

    fad: float
    n: int
    dim: int
    fad_inf: FadInf | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fad_inf"] = self.fad_inf.to_dict() if self.fad_inf else None
        return d


def rank_warning(n: int, dim: int, what: str) -> str | None:
    """A warning when n frames cannot give a full-rank dim×dim covariance (needs n > dim)."""
    if n > dim:
        return None
    return (
        f"{what}: {n} frames for {dim}-dimensional embeddings (need n > d = {dim} for a full-rank covariance); "
        f"this FAD is dominated by sample-size bias: evaluate more or longer clips"
    )


MIN_SUBSET_DIMS = 2  # FAD∞ subsets hold at least this many times d frames
MIN_SPAN = 1.5  # the whole pool is at least this many times the smallest subset, so 1/n spans a line worth fitting


def smallest_subset(n: int, *, min_n: int = 0, dim: int = 0) -> int:
    """The smallest FAD∞ subset: `min_n` (default n//4), never below 2·dim frames nor 2."""
    lo = min_n if min_n > 0 else n // 4
    return max(2, lo, MIN_SUBSET_DIMS * dim)


def subset_sizes(n: int, *, steps: int, min_n: int = 0, dim: int = 0) -> list[int]:
    """`steps` distinct subset sizes from `smallest_subset` to n, evenly spaced (empty when n is below it)."""
    lo = smallest_subset(n, min_n=min_n, dim=dim)
    if lo > n:
        return []
    return sorted({int(round(s)) for s in np.linspace(lo, n, max(2, steps))})


def fad_inf_problem(n: int, *, steps: int, min_n: int = 0, dim: int = 0, what: str = "generated") -> str | None:
    """Why a pool of n frames gets no FAD∞ fit (None when it does): too few frames above the smallest subset."""
    lo = smallest_subset(n, min_n=min_n, dim=dim)
    if n >= MIN_SPAN * lo and len(subset_sizes(n, steps=steps, min_n=min_n, dim=dim)) >= 2:
        return None
    need = int(np.ceil(MIN_SPAN * lo))
    return (
        f"{what}: FAD∞ needs at least {need} frames ({MIN_SPAN:g}× its smallest subset of {lo} frames, "
        f"max(2·d, fad_inf_min_n)); {n} frames give plain FAD only: evaluate more or longer clips"
    )


def fit_inverse_n(sizes: list[int] | np.ndarray, values: list[float] | np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit of values = a + b/size; returns (a, b, R²)."""
    x = 1.0 / np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - (a + b * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return float(a), float(b), r2


def fad_inf(
    frames: np.ndarray,
    reference: FrechetReference,
    *,
    sizes: list[int] | None = None,
    steps: int = 10,
    min_n: int = 0,
    draws: int = 3,
    seed: int = 0,
    replace: bool = False,
) -> FadInf:
    """FAD∞ of generated (frames, dim) embeddings against a reference Gaussian.

    At each subset size, `draws` random subsets are scored; the fit uses every draw. Subsets are drawn
    without replacement unless `replace=True` (fadtk's bootstrap, biased; for comparison only). Without
    `sizes`, they run from `smallest_subset` (≥ 2·d) to every frame; explicit `sizes` are used as given.
    """
    x = np.asarray(frames, dtype=np.float64)
    n = x.shape[0]
    sizes = sorted(set(sizes)) if sizes else subset_sizes(n, steps=steps, min_n=min_n, dim=x.shape[1])
    if len(sizes) < 2:
        raise ValueError(f"FAD∞ needs at least 2 subset sizes; {n} frames give {sizes}")
    if not replace and sizes[-1] > n:
        raise ValueError(f"subset size {sizes[-1]} exceeds the {n} frames available without replacement")
    rng = np.random.default_rng(seed)
    xs: list[int] = []
    ys: list[float] = []
    means: list[float] = []
    for size in sizes:
        vals = []
        for _ in range(max(1, draws)):
            idx = rng.choice(n, size=size, replace=replace)
            vals.append(reference.distance(*stats(x[idx])))
        xs += [size] * len(vals)
        ys += vals
        means.append(float(np.mean(vals)))
    a, b, r2 = fit_inverse_n(xs, ys)
    return FadInf(a=a, b=b, r2=r2, sizes=[int(s) for s in sizes], values=means, draws=max(1, draws), replace=replace)


def fad(
    frames: np.ndarray,
    reference: FrechetReference,
    *,
    reference_n: int,
    what: str = "generated",
    with_inf: bool = True,
    steps: int = 10,
    min_n: int = 0,
    draws: int = 3,
    seed: int = 0,
) -> FadResult:
    """Plain FAD of (frames, dim) against the reference, plus FAD∞ and rank warnings for both sides."""
    x = np.asarray(frames, dtype=np.float64)
    n, dim = x.shape
    warnings = [w for w in (rank_warning(n, dim, what), rank_warning(reference_n, dim, "reference")) if w]
    if n < 2:
        raise ValueError(f"{what}: need at least 2 embedding frames for FAD; got {n}")
    value = reference.distance(*stats(x))
    inf = None
    if with_inf:
        problem = fad_inf_problem(n, steps=steps, min_n=min_n, dim=dim, what=what)
        if problem:
            warnings.append(problem)
        else:
            sizes = subset_sizes(n, steps=steps, min_n=min_n, dim=dim)
            inf = fad_inf(x, reference, sizes=sizes, draws=draws, seed=seed)
    return FadResult(fad=value, n=n, dim=dim, fad_inf=inf, warnings=warnings)


def per_item_distances(items: Mapping[str, np.ndarray], reference: FrechetReference) -> dict[str, float]:
    """Fréchet distance of each clip's own frames to the reference: large values flag outlier clips."""
    return {key: reference.distance_to_frames(frames) for key, frames in items.items() if len(frames) > 0}


class FadGroups:
    """FAD of any multiset of whole clips against one reference, from per-clip sums (no re-stacking of frames).

    A clip with at least d frames keeps its d×d scatter matrix (no larger than its frames); a shorter one keeps
    its frames. Frames are centred on the pool's mean first, so the covariance loses no digits to a large mean.
    """

    def __init__(self, clips: Sequence[np.ndarray], reference: FrechetReference) -> None:
        self.reference = reference
        d = reference.dim
        arrays = [np.asarray(c, dtype=np.float64).reshape(-1, d) for c in clips]
        self.frames = np.array([len(a) for a in arrays], dtype=np.float64)
        pool = np.concatenate(arrays) if arrays else np.zeros((0, d))
        self.shift = pool.mean(axis=0) if len(pool) else np.zeros(d)
        centred = [a - self.shift for a in arrays]
        self.sums = np.stack([a.sum(axis=0) for a in centred]) if arrays else np.zeros((0, d))
        self.big = np.array([i for i, a in enumerate(centred) if len(a) >= d], dtype=np.int64)
        self.scatter = np.stack([centred[i].T @ centred[i] for i in self.big]) if len(self.big) else np.zeros((0, d, d))
        small = [i for i, a in enumerate(centred) if 0 < len(a) < d]
        self.small_frames = np.concatenate([centred[i] for i in small]) if small else np.zeros((0, d))
        self.small_owner = np.repeat(np.array(small, dtype=np.int64), [len(centred[i]) for i in small])

    def value(self, counts: np.ndarray) -> np.ndarray:
        """FAD of the multiset holding clip g `counts[r, g]` times, for each row r ((R, g) → (R,)); NaN below 2 frames."""
        c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        out = np.full(c.shape[0], np.nan)
        for r, w in enumerate(c):
            n = float(w @ self.frames)
            if n < 2:
                continue
            mean = (w @ self.sums) / n
            scatter = np.tensordot(w[self.big], self.scatter, axes=1) if len(self.big) else 0.0
            if len(self.small_owner):
                x = self.small_frames
                scatter = scatter + x.T @ (x * w[self.small_owner][:, None])
            sigma = (scatter - n * np.outer(mean, mean)) / (n - 1)
            out[r] = self.reference.distance(mean + self.shift, sigma)
        return out
