"""Theorem 3 (shared suffix): ⟨g_w, g_l⟩ turns positive with a shared suffix and grows with it.

The responses are the sentiment token followed by the same L suffix tokens (L = 0..max). Two claims:

- ``theorem3_suffix_positive``: for every suffix of the paper's lengths and beyond (L = 2..max; the
  paper's short suffix "sentiment ." has 2 tokens), ⟨g_w, g_l⟩ > 0. Statistic: the smallest over
  L ∈ 2..max of the fraction of pairs with ⟨g_w, g_l⟩ resolved positive; rule: its 95% CI lower
  bound ≥ 0.9. Negative control: L = 0 (no suffix). "Then both log-probs can fall under DPO": the
  details give, per L, the fraction of pairs whose first-order DPO case is 2 (both fall).
- ``theorem3_suffix_growth``: ⟨g_w, g_l⟩ grows as the suffix gets longer. Statistic: the mean over
  pairs of each pair's Spearman ρ between L = 0..max and its ⟨g_w, g_l⟩; rule: the 95% CI lower
  bound ≥ 0.5 (a strong monotone association). Negative control: the same with L permuted at
  random within each pair.

The premise the theorem leaves implicit is that the suffix tokens still carry gradient. A model
trained always on the full suffix makes it deterministic, so at its own suffix length the shared
tokens' gradients vanish: ``fixed_suffix`` is the regime-level negative control of the first claim.
"""

from __future__ import annotations

import numpy as np

from entangle_jax.verify import stats
from entangle_jax.verify.claims.base import Claim, check, column
from entangle_jax.verify.claims.theorem1 import FRACTION_RULE, dpo_cases
from entangle_jax.verify.context import ModelContext
from entangle_jax.verify.rules import Evaluation, Hypothesis, Rule

SHORTEST_SUFFIX = 2
GROWTH_RULE = Rule("ci_lo", ">=", 0.5)


def measure(ctx: ModelContext) -> dict:
    by_length = ctx.geometry_by_length()
    cases = np.stack([dpo_cases(ctx.geometry(L)) for L in range(ctx.settings.max_suffix + 1)], 1)
    return {"inner": by_length["inner"],
            "scale": np.sqrt(by_length["sq_norm_w"] * by_length["sq_norm_l"]),
            "dpo_case": cases}


def _signs(per_seed, settings):
    return [stats.resolved_sign(i, s, settings.resolution)
            for i, s in zip(column(per_seed, "inner"), column(per_seed, "scale"))]


def _per_length(per_seed) -> dict:
    inner = np.concatenate(column(per_seed, "inner"))
    cosine = inner / np.concatenate(column(per_seed, "scale"))
    cases = np.concatenate(column(per_seed, "dpo_case"))
    return {"median_inner_by_L": np.median(inner, 0), "median_cosine_by_L": np.median(cosine, 0),
            "dpo_case2_first_order_by_L": np.mean(cases == 2, 0)}


def evaluate_positive(per_seed, settings) -> Evaluation:
    signs = _signs(per_seed, settings)
    head = check(f"min over L={SHORTEST_SUFFIX}..{settings.max_suffix} of the fraction of pairs "
                 "with ⟨g_w,g_l⟩ > 0", stats.min_column_fraction,
                 [s[:, SHORTEST_SUFFIX:] > 0 for s in signs], FRACTION_RULE, settings)
    control = check("fraction of pairs with ⟨g_w,g_l⟩ > 0 (L=0)", stats.fraction_true,
                    [s[:, 0] > 0 for s in signs], FRACTION_RULE, settings)
    positive_by_length = np.mean(np.concatenate(signs) > 0, 0)
    details = {"fraction_positive_by_L": positive_by_length,
               "worst_L": SHORTEST_SUFFIX + int(np.argmin(positive_by_length[SHORTEST_SUFFIX:])),
               **_per_length(per_seed)}
    hypothesis = Hypothesis("the chosen and rejected responses share a suffix of L ≥ 2 tokens "
                            "after the sentiment token (by construction of the pairs)")
    return Evaluation(hypothesis, (head,), len(signs[0]), control, "no suffix, L=0", details)


def evaluate_growth(per_seed, settings) -> Evaluation:
    lengths = np.arange(settings.max_suffix + 1)
    rho = [stats.spearman(i, lengths) for i in column(per_seed, "inner")]
    rng = np.random.default_rng(0)
    shuffled = [stats.spearman(i, rng.permuted(np.broadcast_to(lengths, i.shape), axis=1))
                for i in column(per_seed, "inner")]
    head = check("mean per-pair Spearman ρ(L, ⟨g_w,g_l⟩), L=0.."
                 f"{settings.max_suffix}", stats.mean, rho, GROWTH_RULE, settings)
    control = check("the same with L shuffled within each pair", stats.mean, shuffled,
                    GROWTH_RULE, settings)
    inner = np.concatenate(column(per_seed, "inner"))
    details = {"fraction_pairs_rho_positive": float(np.mean(np.concatenate(rho) > 0)),
               "pooled_spearman": float(stats.spearman(
                   inner.reshape(-1), np.broadcast_to(lengths, inner.shape).reshape(-1))),
               **_per_length(per_seed)}
    hypothesis = Hypothesis("responses share a suffix whose length runs over "
                            f"L = 0..{settings.max_suffix} (by construction)")
    return Evaluation(hypothesis, (head,), len(rho[0]), control,
                      "L shuffled within each pair", details)


POSITIVE = Claim(
    id="theorem3_suffix_positive",
    statement="Theorem 3: with a shared suffix after the sentiment token, ⟨g_w, g_l⟩ > 0 "
              "(then both log-probs can fall under DPO)",
    headline_regime="pretrained", measure=measure, evaluate=evaluate_positive,
    expected={"fixed_suffix": ("FAILS", "negative control: its own 12-token suffix is "
                               "deterministic, so the shared tokens' gradients vanish there")})

GROWTH = Claim(
    id="theorem3_suffix_growth",
    statement="Theorem 3: ⟨g_w, g_l⟩ grows as the shared suffix gets longer (L = 0…12)",
    headline_regime="pretrained", measure=measure, evaluate=evaluate_growth)
