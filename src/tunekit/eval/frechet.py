"""The Fréchet distance between two Gaussians fitted to embedding frames, in float64.

FD = ‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2·tr √(Σ1Σ2). The trace of the matrix square root is computed
from the symmetric form √(√Σ1 Σ2 √Σ1), whose eigenvalues are real and non-negative for PSD inputs,
so no complex `sqrtm` result has to be trimmed and rank-deficient covariances stay well defined.
"""

from __future__ import annotations

import numpy as np


def stats(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1) of (frames, dim) embeddings, in float64."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (frames, dim); got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 frames for a covariance; got {x.shape[0]}")
    mu = x.mean(axis=0)
    centered = x - mu
    sigma = centered.T @ centered / (x.shape[0] - 1)
    return mu, sigma


def _as_cov(sigma: np.ndarray, dim: int) -> np.ndarray:
    s = np.asarray(sigma, dtype=np.float64)
    s = s.reshape(1, 1) if s.ndim == 0 else s
    if s.shape != (dim, dim):
        raise ValueError(f"covariance must be ({dim}, {dim}); got {s.shape}")
    return (s + s.T) / 2.0


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (tiny negative eigenvalues from rounding clipped to 0)."""
    w, v = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sqrt_sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr √(Σ1Σ2) given √Σ1: the sum of square roots of the eigenvalues of √Σ1 Σ2 √Σ1."""
    m = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    w = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    return FrechetReference(mu2, sigma2).distance(mu1, sigma1)


class FrechetReference:
    """A fixed reference Gaussian: √Σ is computed once, then many distances to it are cheap."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray) -> None:
        self.mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
        if self.mu.ndim != 1:
            raise ValueError(f"mean must be a vector; got shape {self.mu.shape}")
        self.sigma = _as_cov(sigma, self.mu.shape[0])
        self.sqrt_sigma = psd_sqrt(self.sigma)
        self.trace = float(np.trace(self.sigma))

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def distance(self, mu: np.ndarray, sigma: np.ndarray) -> float:
        """Fréchet distance from N(mu, sigma) to this reference."""
        mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
        if mu.shape != self.mu.shape:
            raise ValueError(f"mean must have shape {self.mu.shape}; got {mu.shape}")
        sigma = _as_cov(sigma, self.dim)
        diff = mu - self.mu
        tr_covmean = trace_sqrt_product(self.sqrt_sigma, sigma)
        return float(diff @ diff + np.trace(sigma) + self.trace - 2.0 * tr_covmean)

    def distance_to_frames(self, frames: np.ndarray) -> float:
        """Fréchet distance from the Gaussian fitted to (frames, dim) embeddings (one frame: zero covariance)."""
        x = np.asarray(frames, dtype=np.float64)
        if x.shape[0] == 1:
            return self.distance(x[0], np.zeros((self.dim, self.dim)))
        return self.distance(*stats(x))
