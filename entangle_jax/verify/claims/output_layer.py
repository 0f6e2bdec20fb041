"""The output-layer identity and the full-parameter eNTK form of ⟨g_w, g_l⟩ at the sentiment token.

Two exact identities, each computed two independent ways (docs/design.md §1.3):

1. restricted to the unembedding W (h held fixed), ``⟨∇_W log p_w, ∇_W log p_l⟩ = (Σ_i p_i² − p_w −
   p_l)‖h‖²`` (``gradients.output_layer_check``: closed form vs autodiff), on every pair;
2. over all parameters, ``⟨g_w, g_l⟩ = (e_w − p)ᵀ K (e_l − p)`` with K the logit eNTK, assembled
   from the feature Jacobian (``verify.ntk``) vs the autodiff inner product of the sequence
   log-prob gradients, on the first ``ntk_pairs`` pairs of each seed.

Statistic: the fraction of pairs on which the two sides agree to the precision's tolerance, relative
to the size of the terms that cancel (|closed form|; |e_w − p|ᵀ|K||e_l − p| for the eNTK form);
rule: every pair (value ≥ 1). The sign statement — the eNTK form is ≤ 0 when p lies on {y_w, y_l},
where it equals −p_w p_l (e_w − e_l)ᵀK(e_w − e_l) — is exact only in that limit; the details report
how close the measured form is to its two-token part and how often it is negative.

Negative control: the same comparison with the pairs mismatched (closed form of pair i against
autodiff of pair i+1) must not agree, or the tolerance does not discriminate.

With a tied embedding (SmolLM2) W = Eᵀ also feeds the input, so the eNTK assembly of 2. does not
apply (``verify.ntk``): the claim then checks identity 1 alone, for E in its unembedding role
(h held fixed), and says so in its hypothesis.
"""

from __future__ import annotations

import numpy as np

from entangle_jax.verify import stats
from entangle_jax.verify.claims.base import Claim, check, column, median
from entangle_jax.verify.context import ModelContext
from entangle_jax.verify.rules import Evaluation, Hypothesis, Rule

#: Agreement tolerance of an exact identity, relative to the size of its terms.
IDENTITY_RTOL = {"float64": 1e-9, "float32": 1e-3}
ALL_PAIRS = Rule("value", ">=", 1.0)
#: A pair counts as "mass on {y_w, y_l}" from this p_w + p_l on (for the sign details).
CONCENTRATED_MASS = 0.99


def _relative(a, b, scale):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(np.asarray(a) - np.asarray(b)) / np.asarray(scale)


def measure(ctx: ModelContext) -> dict:
    ol, ntk = ctx.output_layer, ctx.ntk
    inner = ctx.geometry(0).inner
    k = ctx.settings.ntk_pairs
    if ntk is None:  # tied embedding: identity 1 only
        nothing = np.full(len(inner), np.nan)
        return {"layer_error": _relative(ol.closed_form, ol.autodiff, np.abs(ol.closed_form)),
                "layer_error_control": _relative(ol.closed_form, np.roll(ol.autodiff, 1),
                                                 np.abs(ol.closed_form)),
                "p_w": ol.p_w, "p_l": ol.p_l, "inner": inner, "ntk_error": nothing,
                "two_token_gap": nothing}
    return {
        "layer_error": _relative(ol.closed_form, ol.autodiff, np.abs(ol.closed_form)),
        "layer_error_control": _relative(ol.closed_form, np.roll(ol.autodiff, 1),
                                         np.abs(ol.closed_form)),
        "p_w": ol.p_w, "p_l": ol.p_l, "inner": inner,
        # the eNTK arrays cover the first k pairs; pad to the pair count with NaN so that every
        # measured array has one row per pair (the evaluation drops the padding)
        "ntk_error": _pad(_relative(ntk.quadratic, inner[:k], ntk.scale), len(inner)),
        "two_token_gap": _pad(_relative(inner[:k], ntk.two_token, np.abs(inner[:k])), len(inner)),
    }


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x, np.full(n - len(x), np.nan)])


def evaluate(per_seed, settings) -> Evaluation:
    tol = IDENTITY_RTOL[settings.precision]
    layer = column(per_seed, "layer_error")
    ntk = [e[:settings.ntk_pairs] for e in column(per_seed, "ntk_error")]
    tied = all(np.isnan(e).all() for e in ntk)
    head = check(f"fraction of pairs: output-layer closed form = autodiff (rel. err ≤ {tol:g})",
                 stats.fraction_true, [e <= tol for e in layer], ALL_PAIRS, settings)
    checks = (head,) if tied else (head, check(
        f"fraction of pairs: eNTK form = autodiff ⟨g_w,g_l⟩ (rel. err ≤ {tol:g})",
        stats.fraction_true, [e <= tol for e in ntk], ALL_PAIRS, settings))
    control = check("fraction of mismatched pairs that agree", stats.fraction_true,
                    [e <= tol for e in column(per_seed, "layer_error_control")], ALL_PAIRS,
                    settings)
    p_w, p_l, inner = (np.concatenate(column(per_seed, k)) for k in ("p_w", "p_l", "inner"))
    concentrated = p_w + p_l >= CONCENTRATED_MASS
    gap = np.concatenate([g[:settings.ntk_pairs] for g in column(per_seed, "two_token_gap")])
    details = {
        "max_output_layer_error": float(np.max(np.concatenate(layer))),
        "max_ntk_error": None if tied else float(np.max(np.concatenate(ntk))),
        "ntk_pairs": 0 if tied else int(sum(len(e) for e in ntk)),
        f"fraction_pairs_with_p_w_plus_p_l_ge_{CONCENTRATED_MASS}": float(np.mean(concentrated)),
        "fraction_negative_among_concentrated": (float(np.mean(inner[concentrated] < 0))
                                                 if concentrated.any() else None),
        "median_relative_gap_to_two_token_part": None if tied else float(np.median(gap)),
        "median_p_w_plus_p_l": median([p_w + p_l]),
    }
    hypothesis = Hypothesis(
        "an exact identity, checked for the tied embedding E in its unembedding role (h held "
        "fixed); the eNTK form needs untied embeddings and is not checked" if tied else
        "exact identities: they hold for every model with untied embeddings")
    return Evaluation(hypothesis, checks, len(layer[0]), control,
                      "closed form of pair i against autodiff of pair i+1", details)


CLAIM = Claim(
    id="output_layer_identity",
    statement="At the sentiment token, autodiff restricted to the unembedding equals "
              "(Σp² − p_w − p_l)‖h‖², and over all parameters ⟨g_w,g_l⟩ = (e_w − p)ᵀK(e_l − p), "
              "which is ≤ 0 when the softmax mass lies on {y_w, y_l}",
    headline_regime="uncertain_sft", measure=measure, evaluate=evaluate)
