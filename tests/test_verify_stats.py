"""verify.stats against independent computations (loops, numpy's corrcoef, known answers)."""

import numpy as np
import pytest

from entangle_jax.verify import stats


def _loop_ranks(x):
    """Average ranks by brute force: 1 + #smaller + (#equal − 1)/2."""
    x = np.asarray(x, float)
    return np.array([1 + np.sum(x < v) + (np.sum(x == v) - 1) / 2 for v in x])


@pytest.mark.parametrize("x", [[3.0, 1.0, 2.0, 5.0], [1, 2, 2, 3, 3, 3], [4, 4, 4, 4]])
def test_rank_matches_loop(x):
    np.testing.assert_allclose(stats.rank(np.array(x)), _loop_ranks(x))


def test_spearman_matches_pearson_of_ranks_rowwise():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (7, 9)).astype(float)  # many ties
    y = np.arange(9.0)
    got = stats.spearman(x, y)
    for row, value in zip(x, got):
        want = np.corrcoef(_loop_ranks(row), _loop_ranks(y))[0, 1]
        np.testing.assert_allclose(value, want)


def test_spearman_monotone_and_constant():
    y = np.arange(6.0)
    assert stats.spearman(np.exp(y), y) == pytest.approx(1.0)
    assert stats.spearman(-y ** 3, y) == pytest.approx(-1.0)
    assert np.isnan(stats.spearman(np.ones(6), y))


def test_bootstrap_ci_of_mean_matches_normal_approximation():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, 400)
    lo, hi = stats.bootstrap_ci(stats.mean, [x], n_boot=4000)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)


def test_two_level_bootstrap_counts_the_spread_between_seeds():
    rng = np.random.default_rng(2)
    same = [rng.normal(0, 1, 64) for _ in range(3)]
    shifted = [x + offset for x, offset in zip(same, (0.0, 5.0, 10.0))]
    lo_same, hi_same = stats.bootstrap_ci(stats.mean, same)
    lo_shift, hi_shift = stats.bootstrap_ci(stats.mean, shifted)
    assert hi_shift - lo_shift > 5 * (hi_same - lo_same)
    # resampled seeds can be all the lowest or all the highest one
    assert lo_shift < 2.5 and hi_shift > 7.5


def test_statistic_value_pools_seeds():
    assert stats.statistic_value(stats.fraction_true, [np.array([1, 0]), np.array([1, 1])]) \
        == pytest.approx(0.75)


def test_conditional_fraction():
    event = np.array([1, 0, 1, 1, 0])
    cond = np.array([1, 1, 0, 1, 0])
    samples = np.stack([event, cond], -1)[None]
    assert stats.conditional_fraction(samples)[0] == pytest.approx(2 / 3)
    with np.errstate(invalid="ignore"):
        assert np.isnan(stats.conditional_fraction(np.stack([event, 0 * cond], -1)[None])[0])


def test_bootstrap_drops_undefined_resamples():
    # the condition holds on one pair only: many resamples miss it and are undefined
    samples = np.stack([np.ones(20), np.r_[1, np.zeros(19)]], -1)
    lo, hi = stats.bootstrap_ci(stats.conditional_fraction, [samples], n_boot=500)
    assert (lo, hi) == (1.0, 1.0)


def test_min_column_fraction():
    x = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], bool)
    assert stats.min_column_fraction(x[None])[0] == pytest.approx(0.25)


def test_resolved_sign_treats_rounding_noise_as_zero():
    got = stats.resolved_sign([-1.0, 1e-12, -1e-12, 2.0], [10.0, 10.0, 10.0, 10.0], 1e-10)
    np.testing.assert_array_equal(got, [-1, 0, 0, 1])


def test_unequal_seed_sizes_are_rejected():
    with pytest.raises(ValueError, match="same number of pairs"):
        stats.bootstrap_ci(stats.mean, [np.zeros(3), np.zeros(4)])
