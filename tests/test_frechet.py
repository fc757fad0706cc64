"""Fréchet distance: the exact test vectors of facts.md §5, its invariances, and an independent sqrtm check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from tunekit.eval.frechet import FrechetReference, frechet_distance, stats

S = np.array([[2.0, 1.0], [1.0, 2.0]])

VECTORS = [
    ("1-D N(0,1) vs N(1,4)", np.zeros(1), np.eye(1), np.ones(1), 4 * np.eye(1), 2.0),
    ("d=128 N(0,I) vs N(0,4I)", np.zeros(128), np.eye(128), np.zeros(128), 4 * np.eye(128), 128.0),
    ("diagonal 4-D", np.zeros(4), np.diag([1.0, 2, 3, 4]), np.array([1.0, 2, 0, 0]), np.diag([4.0, 1, 9, 16]),
     11.779268029840546),
    ("[[2,1],[1,2]] vs I", np.zeros(2), S, np.zeros(2), np.eye(2), 4 - 2 * math.sqrt(3)),
    ("[[2,1],[1,2]] vs diag(3,1), dmu=(1,-1)", np.array([1.0, -1.0]), S, np.zeros(2), np.diag([3.0, 1.0]),
     10 - 2 * math.sqrt(14)),
    ("diag(1,4) vs diag(4,1), dmu=(1,1)", np.array([1.0, 1.0]), np.diag([1.0, 4.0]), np.zeros(2), np.diag([4.0, 1.0]), 4.0),
]


@pytest.mark.parametrize("name,mu1,s1,mu2,s2,expected", VECTORS, ids=[v[0] for v in VECTORS])
def test_exact_vectors(name, mu1, s1, mu2, s2, expected):
    assert abs(frechet_distance(mu1, s1, mu2, s2) - expected) < 1e-9
    assert abs(frechet_distance(mu2, s2, mu1, s1) - expected) < 1e-9


def test_literal_values_of_the_closed_forms():
    # The closed forms above equal the decimal values given in facts.md.
    assert abs((4 - 2 * math.sqrt(3)) - 0.5358983848622456) < 1e-15
    assert abs((10 - 2 * math.sqrt(14)) - 2.516685226452117) < 1e-15


def _sample(seed: int, n: int = 400, d: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / math.sqrt(d)
    return rng.standard_normal((n, d)) @ a + rng.standard_normal(d)


def test_invariances_on_sample_statistics():
    x, y = _sample(0), _sample(1)
    fd = frechet_distance(*stats(x), *stats(y))
    assert fd > 0.1
    assert abs(frechet_distance(*stats(x), *stats(x))) < 1e-9
    assert abs(fd - frechet_distance(*stats(y), *stats(x))) < 1e-9 * max(1.0, fd)
    for c in (0.5, 3.0):
        assert abs(frechet_distance(*stats(c * x), *stats(c * y)) - c**2 * fd) < 1e-9 * c**2 * max(1.0, fd)
    perm = np.random.default_rng(2).permutation(len(x))
    assert abs(frechet_distance(*stats(x[perm]), *stats(y)) - fd) < 1e-9 * max(1.0, fd)


def test_stats_use_ddof_1_in_float64():
    x = _sample(3).astype(np.float32)
    mu, sigma = stats(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False, ddof=1), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        stats(x[:1])


def _scipy_fd(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_an_independent_sqrtm_implementation(seed):
    rng = np.random.default_rng(seed)
    d = 24
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s1, s2 = a @ a.T / d + 0.1 * np.eye(d), b @ b.T / d + 0.1 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - _scipy_fd(mu1, s1, mu2, s2)) < 1e-8


def test_rank_deficient_covariances_stay_finite_and_non_negative():
    x = np.random.default_rng(4).standard_normal((10, 64))  # n < d: covariance of rank 9
    y = np.random.default_rng(5).standard_normal((12, 64))
    fd = frechet_distance(*stats(x), *stats(y))
    assert math.isfinite(fd) and fd > 0


def test_single_frame_clip_against_a_reference():
    ref = FrechetReference(np.zeros(3), np.eye(3))
    # One frame: zero covariance, so FD = |x|^2 + tr(I) = 4 + 3.
    assert abs(ref.distance_to_frames(np.array([[2.0, 0.0, 0.0]])) - 7.0) < 1e-12


def test_shape_errors_are_reported():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
