"""FAD's sample-size bias, FAD∞ (subsets without replacement) against fadtk's bootstrap, outliers (z > 3, only in sets
large enough to have any), warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunekit.eval.fad import fad, fad_inf, fit_inverse_n, per_item_distances, rank_warning, subset_sizes
from tunekit.eval.outliers import find_outliers
from tunekit.eval.frechet import FrechetReference, stats

D = 128


def _bias(n: int, d: int = D) -> float:
    """Leading-order expectation of FD between two independent N(0, I_d) samples of n frames each."""
    return d * d / (2 * n) + 2 * d / n


@pytest.mark.parametrize("n,low,high", [(1000, 7.6, 9.4), (5000, 1.45, 1.95)])
def test_plain_fad_of_one_distribution_is_about_c_over_n(n, low, high):
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal((n, D)), rng.standard_normal((n, D))
    value = FrechetReference(*stats(y)).distance(*stats(x))
    assert low < value < high  # facts.md: ≈ 8.7 at N=1000, ≈ 1.7 at N=5000
    assert abs(value / _bias(n) - 1) < 0.1


def test_fad_inf_without_replacement_removes_the_bias_and_with_replacement_keeps_it():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((2000, D))
    population = FrechetReference(np.zeros(D), np.eye(D))
    plain = population.distance(*stats(pool))
    assert 1.8 < plain < 2.5  # the finite pool's own bias (facts.md: 2.18 with replacement)
    sizes = list(range(500, 2001, 250))
    without = fad_inf(pool, population, sizes=sizes, draws=2, seed=1)
    bootstrap = fad_inf(pool, population, sizes=sizes, draws=2, seed=1, replace=True)
    assert abs(without.a) < 0.3  # facts.md: −0.06
    assert without.r2 > 0.98
    assert without.b > 0
    assert bootstrap.a > 1.7  # converges to the pool's FAD: the bias stays
    assert without.sizes == sizes and len(without.values) == len(sizes)


def test_fit_inverse_n_recovers_exact_coefficients():
    sizes = [100, 200, 400, 800]
    a, b, r2 = fit_inverse_n(sizes, [3.0 + 50.0 / s for s in sizes])
    assert abs(a - 3.0) < 1e-12 and abs(b - 50.0) < 1e-9 and abs(r2 - 1.0) < 1e-12


def test_subset_sizes_and_limits():
    assert subset_sizes(1000, steps=4) == [250, 500, 750, 1000]
    assert subset_sizes(1000, steps=3, min_n=100) == [100, 550, 1000]
    ref = FrechetReference(np.zeros(2), np.eye(2))
    with pytest.raises(ValueError):
        fad_inf(np.zeros((10, 2)), ref, sizes=[5, 20])  # 20 > 10 frames, impossible without replacement


def test_fad_reports_n_and_rank_warnings():
    rng = np.random.default_rng(1)
    ref = FrechetReference(np.zeros(8), np.eye(8))
    result = fad(rng.standard_normal((6, 8)), ref, reference_n=100, steps=3)
    assert result.n == 6 and result.dim == 8
    assert any("6 frames for 8-dimensional" in w and "n > d = 8" in w for w in result.warnings)
    assert rank_warning(9, 8, "x") is None
    ok = fad(rng.standard_normal((400, 8)), ref, reference_n=1000, steps=4)
    assert ok.warnings == [] and ok.fad_inf is not None and ok.fad_inf.sizes[-1] == 400


def test_outliers_find_the_clip_from_another_distribution():
    rng = np.random.default_rng(2)
    clips = {f"c{i:02d}": rng.standard_normal((20, 4)) for i in range(12)}
    clips["odd"] = rng.standard_normal((20, 4)) + 3.0
    ref = FrechetReference(*stats(rng.standard_normal((2000, 4))))
    distances = per_item_distances(clips, ref)
    found = find_outliers(distances, 2)
    assert found["check"]["ran"] and [o["id"] for o in found["outliers"]] == ["odd"], found
    assert found["outliers"][0]["distance"] > 5 * max(d for k, d in distances.items() if k != "odd")


def test_no_set_below_min_clips_can_hold_a_value_three_deviations_out():
    """(n − 1)/√n is the largest z-score n values allow, reached by n − 1 equal values and one other."""
    from tunekit.eval.outliers import MIN_CLIPS, Z, max_z, min_clips

    for n in range(2, 30):
        values = np.r_[np.zeros(n - 1), 1.0]
        z = (values[-1] - values.mean()) / values.std(ddof=1)
        assert z == pytest.approx(max_z(n), rel=1e-12), n
        rng = np.random.default_rng(n)
        other = rng.standard_normal((200, n))
        zs = (other - other.mean(axis=1, keepdims=True)) / other.std(axis=1, ddof=1, keepdims=True)
        assert zs.max() <= max_z(n) * (1 + 1e-12), n  # no draw beats the bound
    assert Z == 3.0 and MIN_CLIPS == min_clips(3.0) == 11
    assert max_z(10) < 3.0 < max_z(11)


def test_outliers_are_listed_only_for_sets_large_enough_to_have_any():
    from tunekit.eval.outliers import MIN_CLIPS, find_outliers

    # Ten equal distances and one far away: z = 10/√11 ≈ 3.015 > 3, an outlier.
    big = {f"c{i:02d}": 1.0 for i in range(MIN_CLIPS - 1)} | {"far": 50.0}
    found = find_outliers(big, 5)
    assert [o["id"] for o in found["outliers"]] == ["far"] and found["check"]["ran"] is True
    assert found["outliers"][0]["z"] == pytest.approx(10 / math.sqrt(11), rel=1e-12)
    # One clip fewer: the far clip cannot pass z > 3 (at most 9/√10 ≈ 2.85), and no list is made.
    small = dict(list(big.items())[1:])
    assert len(small) == MIN_CLIPS - 1
    found = find_outliers(small, 5)
    assert found["outliers"] == [] and found["check"] == {**found["check"], "ran": False, "n": 10, "min_n": 11}
    # outliers=0: nothing is looked for, and the check says so rather than "no outliers".
    off = find_outliers(big, 0)
    assert off["outliers"] == [] and (off["check"]["ran"], off["check"]["limit"]) == (False, 0)


def test_outliers_of_a_large_set_are_the_planted_ones_only():
    from scipy.stats import norm

    from tunekit.eval.outliers import find_outliers

    # Forty evenly spread normal quantiles: the largest is ≈ 2.2 deviations out, so none is an outlier.
    spread = {f"c{i:02d}": 10.0 + float(norm.ppf((i + 0.5) / 40)) for i in range(40)}
    found = find_outliers(spread, 5)
    assert found["check"]["ran"] and found["outliers"] == []
    planted = spread | {"odd": 30.0, "odder": 40.0}
    found = find_outliers(planted, 1)
    assert [o["id"] for o in found["outliers"]] == ["odder"]  # `limit` keeps the furthest
    found = find_outliers(planted, 5)
    assert [o["id"] for o in found["outliers"]] == ["odder", "odd"] and all(o["z"] > 3 for o in found["outliers"])
    values = np.array(list(planted.values()))
    assert found["outliers"][1]["z"] == pytest.approx((30.0 - values.mean()) / values.std(ddof=1), rel=1e-12)
    # Equal distances: checked, none out.
    found = find_outliers({f"c{i}": 2.0 for i in range(20)}, 5)
    assert found["check"]["ran"] and found["outliers"] == []
