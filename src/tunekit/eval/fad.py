"""FAD over embedding frames: the plain score with its N, FAD∞, per-clip distances and rank checks.

FAD is biased by the number of frames N (≈ c/N for two samples of one distribution). FAD∞
(Chong & Forsyth, "Effectively Unbiased FID and Inception Score and where to find them") fits
FAD(n) = a + b/n over random subsets of the generated frames and reports the intercept a. The
subsets are drawn **without** replacement: drawn with replacement they converge to the finite
pool's own FAD and keep its bias (`replace=True` exists only to show that contrast).
"""

from __future__ import annotations

from collections.abc import Mapping
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


def subset_sizes(n: int, *, steps: int, min_n: int = 0) -> list[int]:
    """`steps` distinct subset sizes from `min_n` (default n//4, at least 2) to n, evenly spaced."""
    lo = min_n if min_n > 0 else max(2, n // 4)
    lo = max(2, min(lo, n))
    sizes = sorted({int(round(s)) for s in np.linspace(lo, n, max(2, steps))})
    return sizes


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
    without replacement unless `replace=True` (fadtk's bootstrap, biased; for comparison only).
    """
    x = np.asarray(frames, dtype=np.float64)
    n = x.shape[0]
    sizes = sorted(set(sizes)) if sizes else subset_sizes(n, steps=steps, min_n=min_n)
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
        sizes = subset_sizes(n, steps=steps, min_n=min_n)
        if len(sizes) >= 2:
            inf = fad_inf(x, reference, sizes=sizes, draws=draws, seed=seed)
        else:
            warnings.append(f"{what}: {n} frames are too few for a FAD∞ fit (need at least 2 subset sizes)")
    return FadResult(fad=value, n=n, dim=dim, fad_inf=inf, warnings=warnings)


def per_item_distances(items: Mapping[str, np.ndarray], reference: FrechetReference) -> dict[str, float]:
    """Fréchet distance of each clip's own frames to the reference: large values flag outlier clips."""
    return {key: reference.distance_to_frames(frames) for key, frames in items.items() if len(frames) > 0}


def top_outliers(distances: Mapping[str, float], k: int) -> list[tuple[str, float]]:
    """The k clips furthest from the reference, largest distance first (ties broken by id)."""
    return sorted(distances.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, k)]
