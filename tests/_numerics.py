"""Tolerances for tests that compare two float computations of the same quantity, derived from the format's
epsilon and the sizes of the sums involved, and assertions whose messages say how large a mismatch is and where.

Two evaluations of a sum of n terms that differ only in their order (blocking, SIMD width, threads, FMA, another
BLAS) each lie within γ(n−1)·Σ|terms| of the exact sum, with γ(k) = k·u / (1 − k·u) and u = eps/2 (Higham,
*Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1 and §4.2), so they differ by at most
2·γ(n−1)·Σ|terms| ≈ (n−1)·eps·Σ|terms|. Along a chain of such sums the relative errors add, to first order.
These are worst-case bounds: rounding errors of many terms mostly cancel, and measured differences are
typically about √n times smaller, which leaves room for the sums' own cancellation (Σ|terms| > |Σ terms|).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2**-23
EPS64 = float(np.finfo(np.float64).eps)  # 2**-52


def gamma(k: int, eps: float = EPS32) -> float:
    """Higham's γ(k) = k·u / (1 − k·u), u = eps/2: the relative error bound of k chained roundings."""
    u = eps / 2
    if k * u >= 1:
        raise ValueError(f"{k} roundings of eps {eps:g} have no useful bound")
    return k * u / (1 - k * u)


def reorder_rtol(*sizes: int, eps: float = EPS32) -> float:
    """Largest difference between two evaluations of a chain of sums of `sizes` terms that differ only in
    summation order, relative to the sum of |terms| at each step (first order: the steps' bounds add)."""
    return sum(2 * gamma(max(n - 1, 0), eps) for n in sizes)


def as_array(x: Any) -> np.ndarray:
    """A float64 numpy copy of a number, numpy array or torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def worst(actual: Any, expected: Any) -> str:
    """Where two arrays differ most: 'max |Δ| 4.7e-07 at (3, 5): 2.1e-03 vs 2.1e-03'."""
    a, e = as_array(actual), as_array(expected)
    if a.shape != e.shape:
        return f"shapes differ: {a.shape} vs {e.shape}"
    if a.size == 0:
        return "empty"
    diff = np.abs(a - e)
    diff = np.where(np.isnan(diff), np.inf, diff)
    i = np.unravel_index(int(np.argmax(diff)), diff.shape)
    at = f" at {tuple(int(j) for j in i)}" if a.ndim else ""
    return f"max |Δ| {diff[i]:.3g}{at}: {a[i]:.6g} vs {e[i]:.6g}"


def assert_close(actual: Any, expected: Any, *, atol: float | np.ndarray, rtol: float = 0.0, what: str = "") -> None:
    """|actual − expected| <= atol + rtol·|expected| everywhere (`atol` may hold a bound per element); the
    message shows the element most over its bound and the largest difference."""
    a, e = as_array(actual), as_array(expected)
    assert a.shape == e.shape, f"{what}: shapes differ: {a.shape} vs {e.shape}"
    bound = np.broadcast_to(np.asarray(atol, dtype=np.float64), a.shape) + rtol * np.abs(e)
    excess = np.abs(a - e) - bound
    excess = np.where(np.isnan(excess), np.inf, excess)  # a NaN on either side fails
    if np.all(excess <= 0):
        return
    i = np.unravel_index(int(np.argmax(excess)), excess.shape)
    at = f" at {tuple(int(j) for j in i)}" if a.ndim else ""
    raise AssertionError(
        f"{what}: |Δ| {abs(a[i] - e[i]):.3g}{at} ({a[i]:.8g} vs {e[i]:.8g}) is over its tolerance {bound[i]:.3g}; "
        f"{worst(a, e)}"
    )


def norm_ratio(actual: Any, expected: Any, scale: Any = None) -> float:
    """‖actual − expected‖₂ / ‖scale‖₂ (scale defaults to expected); 0 for two zero arrays, inf for a
    difference against a zero scale."""
    a, e = as_array(actual), as_array(expected)
    s = e if scale is None else as_array(scale)
    num, den = float(np.linalg.norm(a - e)), float(np.linalg.norm(s))
    if num == 0.0:
        return 0.0
    return num / den if den > 0 else float("inf")


def assert_close_in_norm(
    actual: Mapping[str, Any], expected: Mapping[str, Any], *, rtol: float, scale: Mapping[str, Any] | None = None,
    what: str = "",
) -> dict[str, float]:
    """For every key: ‖actual − expected‖₂ <= rtol·‖scale‖₂ (scale defaults to expected). Returns each key's
    ratio ‖Δ‖/‖scale‖; the message names the worst key, its ratio and its largest element difference."""
    assert actual.keys() == expected.keys(), f"{what}: keys differ: {sorted(set(actual) ^ set(expected))[:5]}"
    ratios = {k: norm_ratio(actual[k], expected[k], None if scale is None else scale[k]) for k in expected}
    bad = {k: r for k, r in ratios.items() if not r <= rtol}
    if bad:
        k = max(bad, key=lambda key: bad[key])
        raise AssertionError(
            f"{what}: {len(bad)} of {len(ratios)} tensors differ by more than {rtol:.3g} in norm; worst {k}: "
            f"‖Δ‖/‖scale‖ = {bad[k]:.3g}, {worst(actual[k], expected[k])}"
        )
    return ratios
