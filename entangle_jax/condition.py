"""The gradient condition: how one update moves log π_w and log π_l, in closed form.

For one pair and a gradient-descent step of size η on its loss, ``θ' = θ + η u`` with
``u = d_w g_w − d_l g_l`` (docs/design.md §1.2), and to first order

    Δlog π_w ≈ η ⟨g_w, u⟩ = η (d_w ‖g_w‖² − d_l ⟨g_w, g_l⟩)
    Δlog π_l ≈ η ⟨g_l, u⟩ = η (d_w ⟨g_w, g_l⟩ − d_l ‖g_l‖²)

The case of a pair is the sign pattern (1: w↑ l↓, 2: both ↓, 3: both ↑, 4: w↓ l↑; 0: a change is
exactly 0). With ``d_w, d_l > 0``, log π_w rises iff ``⟨g_w, g_l⟩ < (d_w/d_l)‖g_w‖²`` and log π_l
falls iff ``⟨g_w, g_l⟩ < (d_l/d_w)‖g_l‖²``; case 4 would need ``⟨g_w, g_l⟩² > ‖g_w‖²‖g_l‖²``.
Everything here is numpy on per-pair numbers; ``dynamics`` measures them and the real steps.
"""

from __future__ import annotations

import numpy as np
from flax import struct

from entangle_jax.config import ConfigError

CASES = (1, 2, 3, 4)


def case_of(delta_w, delta_l) -> np.ndarray:
    """Case 1 (w↑ l↓), 2 (both ↓), 3 (both ↑), 4 (w↓ l↑), or 0 where a change is exactly 0."""
    delta_w, delta_l = np.asarray(delta_w), np.asarray(delta_l)
    case = np.select([(delta_w > 0) & (delta_l < 0), (delta_w < 0) & (delta_l < 0),
                      (delta_w > 0) & (delta_l > 0), (delta_w < 0) & (delta_l > 0)], CASES, 0)
    return case.astype(np.int32)


def case_fractions(case) -> dict[str, float]:
    """``{"case_1": …, …, "case_4": …}`` (plus ``case_0`` when a change was exactly 0)."""
    case = np.asarray(case)
    out = {f"case_{k}": float(np.mean(case == k)) for k in CASES}
    if np.any(case == 0):
        out["case_0"] = float(np.mean(case == 0))
    return out


@struct.dataclass
class GradientCondition:
    """The gradient condition of docs/design.md §1.2 for each pair ``[B]``.

    ``delta_w``/``delta_l`` are the first-order changes for the step size ``lr``. The thresholds
    ``threshold_w = (d_w/d_l)‖g_w‖²`` and ``threshold_l = (d_l/d_w)‖g_l‖²`` and the margins
    ``margin_{w,l} = threshold − ⟨g_w, g_l⟩`` are meaningful for ``d_w, d_l > 0``: log π_w rises iff
    ``margin_w > 0``, log π_l falls iff ``margin_l > 0`` (±inf where a d is 0)."""

    delta_w: np.ndarray
    delta_l: np.ndarray
    case: np.ndarray
    threshold_w: np.ndarray
    threshold_l: np.ndarray
    margin_w: np.ndarray
    margin_l: np.ndarray


def gradient_condition(d_w, d_l, sq_norm_w, sq_norm_l, inner, lr: float = 1.0) -> GradientCondition:
    """Predicted changes, case and threshold margins from the weights and the pair geometry."""
    d_w, d_l, sq_w, sq_l, inner = (np.asarray(x, np.float64)
                                   for x in (d_w, d_l, sq_norm_w, sq_norm_l, inner))
    delta_w = lr * (d_w * sq_w - d_l * inner)
    delta_l = lr * (d_w * inner - d_l * sq_l)
    with np.errstate(divide="ignore", invalid="ignore"):
        threshold_w = np.where(d_l == 0, np.inf, d_w / d_l * sq_w)
        threshold_l = np.where(d_w == 0, np.inf, d_l / d_w * sq_l)
    return GradientCondition(delta_w, delta_l, case_of(delta_w, delta_l), threshold_w,
                             threshold_l, threshold_w - inner, threshold_l - inner)


def auto_learning_rate(rate_w, rate_l, target_change: float = 0.05) -> float:
    """The step size at which the median pair's larger first-order change is ``target_change``
    (so objectives with very different d_w, d_l are compared at the same nonlinearity)."""
    scale = float(np.median(np.maximum(np.abs(rate_w), np.abs(rate_l))))
    if not scale > 0:
        raise ConfigError("every first-order change is 0: no step size reaches a target change")
    return target_change / scale


__all__ = ["CASES", "GradientCondition", "auto_learning_rate", "case_fractions", "case_of",
           "gradient_condition"]
