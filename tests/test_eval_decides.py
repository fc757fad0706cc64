"""Evaluation that decides: KAD against its definition and a closed form, the paired bootstrap's coverage and
verdicts, FAD∞ subsets of at least 2·d frames, and generated and reference clips of equal length."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from _numerics import EPS64, assert_close
from tunekit.eval.fad import FadGroups, fad, fad_inf, smallest_subset, subset_sizes
from tunekit.eval.frechet import FrechetReference, stats
from tunekit.eval.kad import KadReference, evenly_spaced, kad, median_pairwise_distance, thin
from tunekit.eval.paired import (
    MIN_PROMPTS,
    paired_bootstrap,
    percentile_interval,
    resample_counts,
    verdict,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Thousands of tiny matrix products: one BLAS thread spares handing each to a second one (7× slower here
    on two busy cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _kad_by_definition(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """kadtk's formula written out with scipy distances: the unbiased MMD² × 100."""
    g = 1.0 / (2.0 * sigma**2)
    kxx, kyy, kxy = (np.exp(-g * cdist(a, b, "sqeuclidean")) for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return 100.0 * (xx + yy - 2.0 * kxy.mean())


def _rtol(n_terms: int) -> float:
    """Two float64 sums of n non-negative kernel values in different orders, then a difference of three means
    of size ~1 each: a relative bound of a few n·eps on the terms, taken on the result's O(1) scale."""
    return 4 * n_terms * EPS64


# ----------------------------------------------------------------------------- KAD


def test_kad_matches_its_definition_with_the_reference_median_bandwidth():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((120, 6)), rng.standard_normal((90, 6)) * 1.3 + 0.2
    sigma = float(np.median(pdist(y)))  # all pairs i < j of the reference
    assert median_pairwise_distance(y) == pytest.approx(sigma, rel=1e-12)
    ref = KadReference(y)
    assert ref.bandwidth == pytest.approx(sigma, rel=1e-12)
    expected = _kad_by_definition(x, y, sigma)
    assert_close(kad(x, y), expected, atol=_rtol(120 * 90) * 100, what="KAD against scipy")


def test_kad_of_a_set_against_itself_is_zero_or_slightly_below():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 8))
    value = kad(x, x)
    # Unbiased estimator on one sample: 2·(A − 1)/m × 100, A the mean kernel over pairs i ≠ j (A < 1).
    g = 1.0 / (2.0 * np.median(pdist(x)) ** 2)
    a = (np.exp(-g * cdist(x, x, "sqeuclidean")).sum() - 200) / (200 * 199)
    assert -200.0 / 200 <= value < 0.0
    assert_close(value, 200.0 * (a - 1.0) / 200, atol=_rtol(200 * 200) * 100, what="KAD(X, X)")
    # Two independent samples of one distribution: about 0 on either side.
    y = rng.standard_normal((200, 8))
    assert abs(kad(x, y)) < 0.5


def _expected_kernel(delta: np.ndarray, cov: np.ndarray, sigma: float) -> float:
    """E exp(−‖z‖²/(2σ²)) for z ~ N(delta, cov)."""
    d = len(delta)
    scale = np.linalg.det(np.eye(d) + cov / sigma**2) ** -0.5
    return float(scale * np.exp(-0.5 * delta @ np.linalg.solve(cov + sigma**2 * np.eye(d), delta)))


def _mmd2(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, sigma: float) -> float:
    """Population MMD² of N(mu1, s1) and N(mu2, s2) under the Gaussian kernel of bandwidth sigma."""
    zero = np.zeros_like(mu1)
    return (_expected_kernel(zero, 2 * s1, sigma) + _expected_kernel(zero, 2 * s2, sigma)
            - 2 * _expected_kernel(mu1 - mu2, s1 + s2, sigma))


def test_kad_of_two_gaussians_is_unbiased_for_the_closed_form():
    mu1, s1 = np.zeros(3), np.diag([1.0, 0.5, 2.0])
    mu2 = np.array([0.5, 0.0, -0.3])
    s2 = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 1.5]])
    sigma, m, reps = 1.7, 40, 400
    truth = 100.0 * _mmd2(mu1, s1, mu2, s2, sigma)
    l1, l2 = np.linalg.cholesky(s1), np.linalg.cholesky(s2)
    unbiased, biased = [], []
    for r in range(reps):
        rng = np.random.default_rng(1000 + r)
        x = mu1 + rng.standard_normal((m, 3)) @ l1.T
        y = mu2 + rng.standard_normal((m, 3)) @ l2.T
        groups = KadReference(y, bandwidth=sigma).groups([x])
        unbiased.append(groups.value(np.ones((1, 1)))[0])
        # The V-statistic keeps the pairs i = j (k = 1): biased upwards by about (2 − E k_xx − E k_yy)/m.
        v_xx = (groups.within[0, 0] + m) / m**2
        v_yy = (groups.reference_within * m * (m - 1) + m) / m**2
        biased.append(100.0 * (v_xx + v_yy - 2 * groups.cross[0] / m**2))
    se = np.std(unbiased, ddof=1) / math.sqrt(reps)
    assert abs(np.mean(unbiased) - truth) < 4 * se, (np.mean(unbiased), truth, se)
    assert np.mean(biased) - truth > 4 * se, "the check could not tell a biased estimator from the unbiased one"


def test_kad_is_invariant_to_frame_order():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((150, 5)), rng.standard_normal((130, 5)) + 0.4
    a = kad(x, y)
    b = kad(x[rng.permutation(150)], y[rng.permutation(130)])
    assert_close(b, a, atol=_rtol(150 * 130) * 100, what="KAD under permutation")


def test_kad_is_asymmetric_only_through_the_reference_bandwidth():
    rng = np.random.default_rng(3)
    narrow, wide = rng.standard_normal((150, 4)), 2.0 * rng.standard_normal((160, 4))
    forward, backward = kad(narrow, wide), kad(wide, narrow)
    assert abs(forward - backward) > 0.1 * max(abs(forward), abs(backward)), (forward, backward)
    sigma = float(np.median(pdist(wide)))
    assert kad(narrow, wide) == pytest.approx(kad(narrow, wide, bandwidth=sigma), rel=1e-12)
    # With one fixed bandwidth, the estimator is symmetric.
    assert_close(kad(wide, narrow, bandwidth=sigma), kad(narrow, wide, bandwidth=sigma),
                 atol=_rtol(160 * 160) * 100, what="KAD(A, B) vs KAD(B, A) at one bandwidth")


def test_blocked_sums_equal_the_unblocked_ones():
    rng = np.random.default_rng(4)
    y = rng.standard_normal((101, 3))
    clips = [rng.standard_normal((k, 3)) for k in (5, 0, 17, 1, 40, 9)]
    whole = KadReference(y, block=10_000).groups(clips)
    for block in (3, 7, 16, 64):
        part = KadReference(y, block=block).groups(clips)
        n = 101 + sum(map(len, clips))
        assert_close(part.within, whole.within, atol=_rtol(n) * np.abs(whole.within).max(), what=f"within, block {block}")
        assert_close(part.cross, whole.cross, atol=_rtol(n) * np.abs(whole.cross).max(), what=f"cross, block {block}")
        assert part.reference_within == pytest.approx(whole.reference_within, rel=_rtol(101 * 101))
    assert whole.within[1].sum() == 0 and whole.cross[1] == 0  # the empty clip
    assert whole.within[3, 3] == 0  # one frame: no pair of distinct frames


def test_kad_of_a_resample_equals_kad_of_its_frames():
    """What the bootstrap recomputes from sums by clip is KAD of the resampled clips' frames, copies included."""
    rng = np.random.default_rng(5)
    y = rng.standard_normal((80, 4))
    clips = [rng.standard_normal((k, 4)) + 0.2 for k in (6, 3, 11, 1, 8)]
    ref = KadReference(y, block=7)
    groups = ref.groups(clips)
    counts = np.array([[2, 0, 1, 3, 1], [1, 1, 1, 1, 1], [0, 0, 5, 0, 0]])
    got = groups.value(counts)
    for row, value in zip(counts, got, strict=True):
        frames = np.concatenate([c for c, k in zip(clips, row, strict=True) for _ in range(k)])
        assert_close(value, _kad_by_definition(frames, y, ref.bandwidth), atol=_rtol(80 * 80) * 100,
                     what=f"resample {row}")
    assert np.isnan(groups.value(np.array([[0, 0, 0, 1, 0]]))[0])  # one frame: undefined


def test_the_bandwidth_of_a_large_reference_comes_from_evenly_spaced_frames():
    rng = np.random.default_rng(6)
    y = rng.standard_normal((900, 3))
    idx = evenly_spaced(900, 300)
    assert len(idx) == 300 and idx[0] == 0 and idx[-1] == 899
    assert median_pairwise_distance(y, max_frames=300) == pytest.approx(float(np.median(pdist(y[idx]))), rel=1e-12)
    assert median_pairwise_distance(y, max_frames=300) == pytest.approx(float(np.median(pdist(y))), rel=0.02)


def test_thinning_keeps_every_clip_and_a_common_stride():
    clips = [np.arange(n)[:, None].astype(float) for n in (10, 3, 25)]
    thinned, stride = thin(clips, 12)
    assert sum(len(c) for c in thinned) <= 12 and stride == 4
    assert [c[:, 0].tolist() for c in thinned] == [[0, 4, 8], [0], [0, 4, 8, 12, 16, 20, 24]]
    assert thin(clips, 0) == (clips, 1) and thin(clips, 38)[1] == 1


def test_kad_refuses_a_reference_without_spread():
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        KadReference(np.ones((5, 3)))
    with pytest.raises(ValueError, match="at least 2 reference frames"):
        KadReference(np.ones((1, 3)))


# ----------------------------------------------------------------------------- FAD of a resample


@pytest.mark.parametrize("frames_per_clip", [2, 12])  # below d: frames kept; at least d: scatter matrices kept
def test_fad_of_a_resample_equals_fad_of_its_frames(frames_per_clip):
    rng = np.random.default_rng(7)
    d = 6
    reference = FrechetReference(*stats(rng.standard_normal((500, d))))
    clips = [rng.standard_normal((frames_per_clip, d)) * 0.8 + 100.0 for _ in range(7)]
    groups = FadGroups(clips, reference)
    counts = np.array([[1] * 7, [3, 0, 1, 0, 2, 1, 0]])
    for row, value in zip(counts, groups.value(counts), strict=True):
        frames = np.concatenate([c for c, k in zip(clips, row, strict=True) for _ in range(k)])
        expected = reference.distance(*stats(frames))
        # Two summation orders of the same float64 sums over n frames of values ~100: the means and scatter move
        # by up to ~n·eps of their ~100² scale per dimension, and FD (~6e4 here: squared mean distances) by that
        # over d dimensions plus its own relative rounding; 16·d·n·eps·(100² + FD) bounds both with room.
        bound = 16 * d * len(frames) * np.finfo(np.float64).eps * (100.0**2 + abs(expected))
        assert_close(value, expected, atol=bound, what=f"FAD of resample {row}")


# ----------------------------------------------------------------------------- the paired bootstrap


def test_resample_counts_draw_n_prompts_per_row_reproducibly():
    counts = resample_counts(7, 500, seed=3)
    assert counts.shape == (500, 7) and (counts.sum(axis=1) == 7).all()
    assert (resample_counts(7, 500, seed=3) == counts).all() and not (resample_counts(7, 500, seed=4) == counts).all()
    assert abs(counts.mean() - 1.0) < 0.05  # each prompt drawn once per resample on average
    assert resample_counts(7, 0, seed=3).shape == (0, 7)


def test_verdict_rule():
    assert verdict(-0.5, -0.1, lower_is_better=True) == "better"
    assert verdict(0.1, 0.5, lower_is_better=True) == "worse"
    assert verdict(0.1, 0.5, lower_is_better=False) == "better"
    assert verdict(-0.5, -0.1, lower_is_better=False) == "worse"
    assert verdict(-0.5, 0.1, lower_is_better=True) == "no clear difference"
    assert verdict(0.0, 0.3, lower_is_better=True) == "no clear difference"  # an end at 0 still spans it
    assert percentile_interval(np.arange(1001.0)) == pytest.approx((25.0, 975.0), rel=1e-12)


def _mean(values: np.ndarray):
    return lambda counts: (np.atleast_2d(counts) @ values) / np.atleast_2d(counts).sum(axis=1)


SEEDS, PROMPTS = 400, 40
# 95% nominal; a percentile interval over 40 prompts covers ~93.5% (simulated, 1,000 trials of the mean of
# normal differences), and 400 trials add a binomial standard error of √(0.95·0.05/400) ≈ 0.011: three of them.
COVERAGE_LOW = 0.935 - 3 * math.sqrt(0.95 * 0.05 / SEEDS)
COVERAGE_HIGH = 0.95 + 3 * math.sqrt(0.95 * 0.05 / SEEDS)


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_bootstrap_interval_covers_a_known_difference(shift):
    covered, verdicts = 0, []
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        difficulty = rng.standard_normal(PROMPTS)  # shared by both sides: the pairing removes it
        base = difficulty + 0.5 * rng.standard_normal(PROMPTS)
        tuned = difficulty + shift + 0.5 * rng.standard_normal(PROMPTS)
        delta = paired_bootstrap(_mean(base), _mean(tuned), resample_counts(PROMPTS, 1000, seed),
                                 lower_is_better=False)
        assert delta.value == pytest.approx(tuned.mean() - base.mean(), rel=1e-12)
        covered += delta.ci95[0] <= shift <= delta.ci95[1]
        verdicts.append(delta.verdict)
    assert COVERAGE_LOW <= covered / SEEDS <= COVERAGE_HIGH, covered / SEEDS
    if shift == 0.0:  # no difference: "no clear difference" exactly when the interval covers the truth
        assert verdicts.count("no clear difference") == covered
    else:
        assert verdicts.count("worse") == 0 and verdicts.count("better") > SEEDS / 2


def test_unpaired_noise_would_hide_the_difference_pairing_reveals():
    """The same data resampled without pairing (base and fine-tuned drawn independently) gives a wider interval."""
    rng = np.random.default_rng(11)
    difficulty = 3.0 * rng.standard_normal(PROMPTS)
    base, tuned = difficulty + 0.2 * rng.standard_normal(PROMPTS), difficulty + 0.3 + 0.2 * rng.standard_normal(PROMPTS)
    counts = resample_counts(PROMPTS, 1000, seed=1)
    paired = paired_bootstrap(_mean(base), _mean(tuned), counts, lower_is_better=False)
    unpaired = _mean(tuned)(counts) - _mean(base)(resample_counts(PROMPTS, 1000, seed=2))
    lo, hi = percentile_interval(unpaired)
    assert paired.verdict == "better" and lo <= 0 <= hi


def test_no_verdict_below_the_minimum_prompts_or_without_resamples():
    values = np.linspace(0, 1, MIN_PROMPTS - 1)
    few = paired_bootstrap(_mean(values), _mean(values + 5), resample_counts(len(values), 200, 0), lower_is_better=True)
    assert few.verdict is None and few.ci95 is not None and "n_samples" in few.note
    off = paired_bootstrap(_mean(values), _mean(values + 5), resample_counts(len(values), 0, 0), lower_is_better=True)
    assert off.ci95 is None and off.verdict is None and off.value == pytest.approx(5.0)
    d = off.to_dict()
    assert set(d) >= {"value", "ci95", "n", "verdict"}


def _sets(rng: np.random.Generator, shift: float, clips: int = 20, frames: int = 10, d: int = 4):
    from tunekit.eval.clap_score import ClapScore
    from tunekit.eval.score import SetScores
    from tunekit.eval.sets import AudioItem, AudioSet

    out = []
    for name, offset in (("base", 0.0), ("finetuned", shift)):
        per_clip = {f"p{i:02d}": rng.standard_normal((frames, d)) + offset for i in range(clips)}
        items = [AudioItem(id=cid, path=Path(f"{cid}.wav")) for cid in per_clip]
        clap = ClapScore(mean=0.0, std=0.0, n=clips,
                         per_item={cid: float(rng.normal(3 * offset, 0.3)) for cid in per_clip})
        out.append(SetScores(name=name, audio_set=AudioSet(name, Path("."), "folder", items), metrics={},
                             frames={"emb": per_clip}, clap=clap))
    return out


def _references(rng: np.random.Generator, d: int = 4):
    from tunekit.eval.score import Reference

    y = rng.standard_normal((300, d))
    return {"emb": Reference(fad=FrechetReference(*stats(y)), n=300, kad=KadReference(y))}


def test_paired_deltas_recompute_every_metric_on_the_same_resamples():
    from tunekit.eval.score import paired_deltas

    rng = np.random.default_rng(12)
    refs = _references(rng)
    base, tuned = _sets(rng, shift=0.6)
    for s in (base, tuned):
        ids = sorted(s.frames["emb"])
        s.kad_groups["emb"] = refs["emb"].kad.groups([s.frames["emb"][i] for i in ids])
    deltas = paired_deltas(base, tuned, refs, ["emb"], resamples=300, seed=0)
    assert set(deltas) == {"fad_emb", "kad_emb", "clap_score"}

    def fad_of(s):
        return refs["emb"].fad.distance(*stats(np.concatenate([s.frames["emb"][i] for i in sorted(s.frames["emb"])])))

    def kad_of(s):
        return refs["emb"].kad.distance(np.concatenate([s.frames["emb"][i] for i in sorted(s.frames["emb"])]))

    assert deltas["fad_emb"].value == pytest.approx(fad_of(tuned) - fad_of(base), rel=1e-9)
    assert deltas["kad_emb"].value == pytest.approx(kad_of(tuned) - kad_of(base), rel=1e-9)
    clap = [np.mean(list(s.clap.per_item.values())) for s in (base, tuned)]
    assert deltas["clap_score"].value == pytest.approx(clap[1] - clap[0], rel=1e-9)
    # A fine-tune shifted away from the reference: FAD and KAD worse, the CLAP stand-in (shifted up) better.
    assert deltas["fad_emb"].verdict == "worse" and deltas["kad_emb"].verdict == "worse"
    assert deltas["clap_score"].verdict == "better"
    assert all(d.n == 20 and d.resamples == 300 for d in deltas.values())


def test_paired_deltas_find_no_difference_between_two_samples_of_one_distribution():
    from tunekit.eval.score import paired_deltas

    unclear = {"fad_emb": 0, "kad_emb": 0}
    trials = 20
    for seed in range(trials):
        rng = np.random.default_rng(100 + seed)
        refs = _references(rng)
        base, tuned = _sets(rng, shift=0.0)
        for s in (base, tuned):
            s.kad_groups["emb"] = refs["emb"].kad.groups([s.frames["emb"][i] for i in sorted(s.frames["emb"])])
        deltas = paired_deltas(base, tuned, refs, ["emb"], resamples=200, seed=seed)
        for key in unclear:
            unclear[key] += deltas[key].verdict == "no clear difference"
    # About 95% expected; with 20 trials, 16 or more holds with probability > 0.99 at a true rate of 0.93.
    assert all(v >= 16 for v in unclear.values()), unclear


def test_paired_deltas_need_the_same_prompts_on_both_sides():
    from tunekit.errors import TunekitError
    from tunekit.eval.score import paired_deltas

    rng = np.random.default_rng(13)
    base, tuned = _sets(rng, 0.0)
    tuned.audio_set.items.pop()
    with pytest.raises(TunekitError, match="same prompts"):
        paired_deltas(base, tuned, _references(rng), ["emb"], resamples=10, seed=0)


# ----------------------------------------------------------------------------- FAD∞ sample sizes


def test_fad_inf_subsets_never_go_below_twice_the_dimension():
    assert subset_sizes(1000, steps=4, dim=128)[0] == 256
    assert subset_sizes(1000, steps=4, dim=100)[0] == 250  # n/4 already above 2d
    assert subset_sizes(1000, steps=3, min_n=100, dim=128)[0] == 256  # fad_inf_min_n cannot go below 2d
    assert smallest_subset(500, dim=128) == 256 and subset_sizes(200, steps=3, dim=128) == []
    rng = np.random.default_rng(14)
    pool = rng.standard_normal((1000, 32))
    fit = fad_inf(pool, FrechetReference(np.zeros(32), np.eye(32)), steps=4)
    assert min(fit.sizes) >= 64


def test_a_pool_too_small_for_fad_inf_gets_plain_fad_and_a_warning():
    rng = np.random.default_rng(15)
    ref = FrechetReference(np.zeros(16), np.eye(16))
    small = fad(rng.standard_normal((40, 16)), ref, reference_n=1000, steps=5)  # 40 < 1.5 × 32
    assert small.fad_inf is None and np.isfinite(small.fad)
    assert any("FAD∞ needs at least 48 frames" in w and "plain FAD only" in w for w in small.warnings), small.warnings
    enough = fad(rng.standard_normal((48, 16)), ref, reference_n=1000, steps=5)
    assert enough.fad_inf is not None and min(enough.fad_inf.sizes) == 32


def test_subsets_of_at_least_2d_shrink_the_small_pool_bias():
    """Pool of 500 frames at d = 128 from the reference's own distribution (true FAD 0): subsets from n/4 = 125
    (below d) drag FAD∞ far below 0; from 2d = 256 much less."""
    d, n = 128, 500
    population = FrechetReference(np.zeros(d), np.eye(d))
    quarter, doubled = [], []
    for seed in range(5):
        pool = np.random.default_rng(seed).standard_normal((n, d))
        quarter.append(fad_inf(pool, population, sizes=subset_sizes(n, steps=10, min_n=n // 4), seed=seed).a)
        doubled.append(fad_inf(pool, population, steps=10, seed=seed).a)
        assert abs(doubled[-1]) < 0.5 * abs(quarter[-1]), (seed, quarter[-1], doubled[-1])
    assert np.mean(quarter) < -2.0 and -1.2 < np.mean(doubled) < 0.0, (np.mean(quarter), np.mean(doubled))


# ----------------------------------------------------------------------------- sample sizes and lengths


class _Windows:
    """A stand-in embedder for the pre-generation check: one frame per whole second."""

    name, sample_rate, policy = "toy", 100, "one frame per second"

    def windows(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        return [audio[:, i : i + rate] for i in range(0, audio.shape[1] - rate + 1, rate)]


def test_the_pre_generation_check_names_fad_and_kad():
    from tunekit.eval.evaluate import sample_size_problems

    problems = sample_size_problems([_Windows()], {"generated": ([1.5], "duration=1.5"), "reference": ([3.0, 3.0], "x")})
    assert len(problems) == 1 and "FAD and KAD need at least 2" in problems[0] and "duration=1.5" in problems[0]


def test_duration_defaults_to_the_reference_windows_and_crops_only_longer_ones():
    from tunekit.eval.config import EvalConfig
    from tunekit.eval.run_mode import clip_seconds, crop_reference
    from tunekit.eval.sets import AudioItem, AudioSet

    config = EvalConfig()
    assert config.duration is None
    items = [AudioItem(id=f"w{i}", path=Path("a.flac"), offset_s=30.0 * i, duration_s=s)
             for i, s in enumerate((30.0, 30.0, 12.0))]
    reference = AudioSet("reference", Path("."), "prep", items, splits=("test",))
    assert clip_seconds(config, reference) == 30.0  # generated at the windows' own length: nothing cropped
    assert crop_reference(reference, 30.0)[1] == 0
    config.duration = 10.0
    cropped, n = crop_reference(reference, clip_seconds(config, reference))
    assert n == 3 and cropped.seconds() == [10.0, 10.0, 10.0]
    assert [i.offset_s for i in cropped.items] == [0.0, 30.0, 60.0]  # each keeps its first 10 s
    assert cropped._hash is None  # a new extent: a new cache key for its statistics
    assert EvalConfig.problems(EvalConfig(run="r", duration=-1.0))[0].endswith("(key: duration)")
