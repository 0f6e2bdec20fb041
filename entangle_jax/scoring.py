"""Scores of a risk predictor against a binary outcome: pure numpy, one function per score.

A predictor gives every item a risk ``s_i`` (higher: more likely positive) and the outcome is
``y_i ∈ {0, 1}`` (here: ``y_i = 1`` when the chosen log-prob of pair i fell). Every function takes
host arrays and returns a float, NaN where the score is undefined (one class absent, a constant
ranking), which reports write as ``null``.
"""

from __future__ import annotations

import numpy as np


def _as_outcome(scores, outcome) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, np.float64).ravel(), np.asarray(outcome).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} outcomes")
    return s, y.astype(bool)


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1..n, ties given their average rank (the mid-ranks of
    Spearman's ρ and of the Mann–Whitney U)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, axis=-1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=-1)
    ranks = np.empty_like(x)
    flat_x, flat_r, flat_o = (a.reshape(-1, x.shape[-1]) for a in (ordered, ranks, order))
    for row, (vals, idx) in enumerate(zip(flat_x, flat_o)):
        # runs of equal values share the mean of their positions
        starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
        ends = np.r_[starts[1:], len(vals)]
        mean_rank = (starts + ends + 1) / 2.0
        flat_r[row, idx] = np.repeat(mean_rank, ends - starts)
    return flat_r.reshape(x.shape)


def spearman(x, y) -> np.ndarray:
    """Spearman's ρ along the last axis: the Pearson correlation of the mid-ranks r, q,

        ρ = Σ (r_i − r̄)(q_i − q̄) / √(Σ (r_i − r̄)² Σ (q_i − q̄)²)

    (= 1 − 6 Σ d_i² / (n(n²−1)) without ties). NaN where either side is constant."""
    rx, ry = rank(np.asarray(x)), rank(np.asarray(y))
    rx, ry = np.broadcast_arrays(rx, ry)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(-1) / denom, np.nan)


def auroc(scores, outcome) -> float:
    """Area under the ROC curve: the probability that a random positive outranks a random
    negative, ties counting one half,

        AUROC = (1 / (n₊ n₋)) Σ_{i: y=1} Σ_{j: y=0} ( [s_i > s_j] + ½ [s_i = s_j] ),

    computed from the Mann–Whitney U of the mid-ranks r: ``(Σ_{y=1} r_i − n₊(n₊+1)/2) / (n₊ n₋)``.
    NaN when a class is absent."""
    s, y = _as_outcome(scores, outcome)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rank(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_ci(statistic, scores, outcome, *, n_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(scores, outcome)``: the ``(1−level)/2`` and
    ``(1+level)/2`` quantiles of the statistic over ``n_resamples`` resamples of the items with
    replacement (``numpy.random.default_rng(seed)``: reproducible). Resamples where the statistic
    is NaN (a class drawn empty) are left out; ``(nan, nan)`` when every one is."""
    s, y = _as_outcome(scores, outcome)
    rng = np.random.default_rng(seed)
    values = np.array([statistic(s[idx], y[idx]) for idx in
                       rng.integers(0, s.size, size=(n_resamples, s.size))])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def precision_at(scores, outcome, fraction: float = 0.1) -> float:
    """Precision among the ``k = ⌈fraction · n⌉`` highest-risk items,
    ``(1/k) Σ_{i ∈ top_k(s)} y_i``; ties at the cut are broken by item order (stable sort), so
    the value is deterministic. NaN for no items."""
    s, y = _as_outcome(scores, outcome)
    if s.size == 0:
        return float("nan")
    k = max(1, int(np.ceil(fraction * s.size)))
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean())


def sign_agreement(predicted, actual) -> float:
    """Fraction of items whose predicted change has the sign of the real one,
    ``(1/n) Σ_i [sign(p_i) = sign(a_i)]``."""
    p, a = np.asarray(predicted, np.float64).ravel(), np.asarray(actual, np.float64).ravel()
    if p.shape != a.shape:
        raise ValueError(f"{p.size} predictions but {a.size} outcomes")
    return float(np.mean(np.sign(p) == np.sign(a))) if p.size else float("nan")


def roc_curve(scores, outcome) -> tuple[np.ndarray, np.ndarray]:
    """``(false positive rate, true positive rate)`` at every threshold from above the highest
    score down (tied scores enter together), starting at (0, 0) and ending at (1, 1)."""
    s, y = _as_outcome(scores, outcome)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each tied run
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


__all__ = ["auroc", "bootstrap_ci", "precision_at", "rank", "roc_curve", "sign_agreement",
           "spearman"]
