"""Statistics of the checks: hierarchical bootstrap intervals, Spearman correlation, resolved signs.

Every check pools per-pair values from several seeds (independently trained models, each with its
own eval sample). The 95% interval of a statistic is a two-level percentile bootstrap that resamples
seeds with replacement and then pairs within each drawn seed, so that the spread between seeds
counts as well as the spread between pairs:

    for b = 1..B:  s_1..s_S ~ U{seeds},  x* = ∪_k (n pairs of seed s_k drawn with replacement)
    ci = [q_2.5(T(x*)), q_97.5(T(x*))]

A statistic ``T`` is written once for a batch of resamples: it takes an array ``[B, N, ...]`` (B
resamples of N pairs) and reduces axis 1, returning ``[B]``. With one seed the scheme is the
ordinary pair bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from entangle_jax.scoring import rank, spearman  # noqa: F401  (the claims' statistics)

Statistic = Callable[[np.ndarray], np.ndarray]  # [B, N, ...] -> [B]

#: Relative resolution of an inner product ⟨a, b⟩ against ‖a‖‖b‖ in each precision: smaller
#: magnitudes are rounding noise and count as ≈ 0, neither negative nor positive. float64 rounding
#: of a sum over ~10⁵ terms is ~1e-13 relative, float32 ~1e-5; the thresholds leave a wide margin.
RESOLUTION = {"float64": 1e-10, "float32": 1e-4}


def stack_seeds(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    """``[S, n, ...]`` from one per-pair array per seed (every seed must have the same n)."""
    sizes = {len(x) for x in per_seed}
    if len(sizes) != 1:
        raise ValueError(f"every seed needs the same number of pairs, got {sorted(sizes)}")
    return np.stack([np.asarray(x) for x in per_seed])


def statistic_value(statistic: Statistic, per_seed: Sequence[np.ndarray]) -> float:
    """``T`` on all pairs of all seeds."""
    pooled = np.concatenate([np.asarray(x) for x in per_seed])
    return float(statistic(pooled[None])[0])


def bootstrap_ci(statistic: Statistic, per_seed: Sequence[np.ndarray], *, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """The two-level (seeds, then pairs) percentile bootstrap interval of ``statistic``.

    Resamples whose statistic is undefined (NaN, e.g. a fraction over an empty subset) are
    dropped; if all are, the interval is ``(nan, nan)``."""
    x = stack_seeds(per_seed)
    n_seeds, n = x.shape[:2]
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, (n_boot, n_seeds, 1))
    pairs = rng.integers(0, n, (n_boot, n_seeds, n))
    samples = x[seeds, pairs].reshape(n_boot, n_seeds * n, *x.shape[2:])
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.asarray(statistic(samples), np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def resolved_sign(value, scale, rtol: float) -> np.ndarray:
    """−1, 0 or +1 per element: the sign of ``value`` where ``|value| > rtol · scale``, else 0
    (a magnitude the arithmetic cannot resolve)."""
    value, scale = np.asarray(value, np.float64), np.asarray(scale, np.float64)
    return np.where(np.abs(value) > rtol * scale, np.sign(value), 0.0).astype(np.int8)


# Statistics in the batched form the bootstrap wants ([B, N, ...] -> [B]).

def mean(samples: np.ndarray) -> np.ndarray:
    return np.mean(samples, axis=1)


def fraction_true(samples: np.ndarray) -> np.ndarray:
    """Fraction of pairs whose boolean value is true."""
    return np.mean(samples.astype(np.float64), axis=1)


def conditional_fraction(samples: np.ndarray) -> np.ndarray:
    """``samples[..., 0]`` is the event, ``samples[..., 1]`` the condition: P(event | condition)
    over the pairs that meet the condition (NaN when none does)."""
    event, cond = samples[..., 0].astype(bool), samples[..., 1].astype(bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (event & cond).sum(1) / cond.sum(1)


def min_column_fraction(samples: np.ndarray) -> np.ndarray:
    """``samples`` ``[B, N, C]`` booleans: the smallest over columns of the fraction of true pairs
    (e.g. the worst suffix length)."""
    return np.mean(samples.astype(np.float64), axis=1).min(-1)
