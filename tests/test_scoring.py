"""The scores of ``entangle predict`` against brute force and hand computations."""

import numpy as np
import pytest

from entangle_jax.scoring import (auroc, bootstrap_ci, precision_at, rank, roc_curve,
                                  sign_agreement, spearman)


def brute_auroc(scores, outcome):
    """Every (positive, negative) pair: 1 when the positive scores higher, ½ on a tie."""
    pos = [s for s, y in zip(scores, outcome) if y]
    neg = [s for s, y in zip(scores, outcome) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_matches_the_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, 5, n).astype(float)  # few values: many ties
        outcome = rng.random(n) < 0.4
        if outcome.all() or not outcome.any():
            continue
        assert auroc(scores, outcome) == pytest.approx(brute_auroc(scores, outcome))


def test_auroc_known_cases():
    y = np.array([0, 0, 1, 1], bool)
    assert auroc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert auroc([1, 1, 1, 1], y) == 0.5
    assert auroc([0.1, 0.5, 0.5, 0.9], y) == pytest.approx(0.875)  # one tie of four pairs
    assert np.isnan(auroc([0.1, 0.2], [True, True]))


def test_roc_curve_area_is_the_auroc():
    rng = np.random.default_rng(1)
    scores, outcome = rng.integers(0, 6, 50).astype(float), rng.random(50) < 0.5
    fpr, tpr = roc_curve(scores, outcome)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(scores, outcome))


def test_precision_at_top_fraction():
    scores = np.arange(20.0)  # the top 10% are items 19 and 18
    outcome = np.zeros(20, bool)
    outcome[19] = True
    assert precision_at(scores, outcome, 0.1) == 0.5
    outcome[18] = True
    assert precision_at(scores, outcome, 0.1) == 1.0
    assert precision_at(scores[:5], outcome[:5], 0.1) == 0.0  # k = ⌈0.5⌉ = 1: item 4
    assert precision_at(-scores, outcome, 0.1) == 0.0


def test_rank_shares_ties():
    assert rank([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_by_hand():
    # ranks x: 1 2 3 4 5, ranks y: 2 1 4 3 5 → Σd² = 4, ρ = 1 − 6·4/(5·24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50]) == pytest.approx(0.8)
    # with a tie in y: ranks y 1.5 1.5 3 4 5, Pearson of the ranks (hand: 0.9746794)
    x, y = [1, 2, 3, 4, 5], [1, 1, 2, 3, 4]
    ry = np.array([1.5, 1.5, 3, 4, 5]) - 3
    rx = np.array([1, 2, 3, 4, 5]) - 3
    hand = (rx * ry).sum() / np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    assert spearman(x, y) == pytest.approx(hand)
    assert hand == pytest.approx(0.9746794, abs=1e-6)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_sign_agreement():
    assert sign_agreement([1.0, -2.0, 3.0, -0.5], [0.1, -0.1, -1.0, 2.0]) == 0.5


def test_bootstrap_ci_is_reproducible_and_contains_the_estimate():
    rng = np.random.default_rng(2)
    outcome = rng.random(80) < 0.5
    scores = outcome + rng.normal(0, 1.0, 80)
    lo, hi = bootstrap_ci(auroc, scores, outcome, n_resamples=300, seed=7)
    assert (lo, hi) == bootstrap_ci(auroc, scores, outcome, n_resamples=300, seed=7)
    assert lo <= auroc(scores, outcome) <= hi
    assert 0 < hi - lo < 0.5
    assert bootstrap_ci(auroc, scores, outcome, n_resamples=300, seed=8) != (lo, hi)
