"""Preference objectives as functions of a pair's sequence log-probs, and their weights d_w, d_l.

Every loss here is a per-pair scalar function

    ℓ(log π_w, log π_l, log π_ref,w, log π_ref,l, |y_w|, |y_l|)

of the policy's and the reference's sequence log-probs and the response lengths in tokens. Its
gradient in the parameters is ``∇ℓ = −(d_w g_w − d_l g_l)`` with ``g = ∇_θ log π`` and the
objective-dependent scalars (docs/design.md §1.1)

    d_w = −∂ℓ/∂log π_w,        d_l = +∂ℓ/∂log π_l,

which ``pair_weights`` takes from ``jax.grad`` of the loss — so a loss a user writes gets its d_w and
d_l for free. Notation below: ``r = log π − log π_ref``, ``σ`` the logistic function,
``log σ(z) = −softplus(−z)``.

Where a loss is often stated differently (docs/design.md §1.1, corrections), each function follows
the original paper and says so. Where TRL (``trl.DPOTrainer`` ``loss_type`` and its sibling
trainers) implements the same loss, its name and its hyperparameter names are accepted too
(``ALIASES``, ``HPARAM_ALIASES``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from entangle_jax.config import ConfigError

LossFn = Callable[..., Any]  # (logp_w, logp_l, ref_w, ref_l, len_w, len_l) -> scalar


def _log_sigmoid(z):
    return jax.nn.log_sigmoid(z)


# --------------------------------------------------------------------------------------------
# The zoo. Each function is written for one pair (scalars) with its hyperparameters as keywords.
# --------------------------------------------------------------------------------------------

def dpo(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta):
    """DPO — Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is
    Secretly a Reward Model" (arXiv 2305.18290), eq. 7:

        ℓ = −log σ(β (r_w − r_l));   d_w = d_l = β σ(−z),  z = β (r_w − r_l).
    TRL: ``loss_type="sigmoid"``."""
    return -_log_sigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l)))


def ipo(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, tau):
    """IPO — Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences" (arXiv 2310.12036), eq. 17:

        ℓ = (h − 1/(2τ))²,  h = r_w − r_l;   d_w = d_l = 2 (1/(2τ) − h).
    TRL: ``loss_type="ipo"`` with TRL's ``beta`` in the role of τ. (TRL divides the log-probs by the
    response lengths before this loss; the paper, and this function, use sequence log-probs.)"""
    h = (logp_w - ref_w) - (logp_l - ref_l)
    return (h - 1.0 / (2.0 * tau)) ** 2


def simpo(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, gamma):
    """SimPO — Meng, Xia, Chen 2024, "SimPO: Simple Preference Optimization with a Reference-Free
    Reward" (arXiv 2405.14734), eq. 6 (no reference model):

        ℓ = −log σ(β log π_w/|y_w| − β log π_l/|y_l| − γ);
        d_w = β σ(−z)/|y_w|,  d_l = β σ(−z)/|y_l|.
    TRL: ``CPOTrainer(loss_type="simpo")`` with ``simpo_gamma`` = γ."""
    return -_log_sigmoid(beta * logp_w / len_w - beta * logp_l / len_l - gamma)


def rdpo(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, alpha):
    """R-DPO — Park, Rafailov, Ermon, Finn 2024, "Disentangling Length from Quality in Direct
    Preference Optimization" (arXiv 2403.19159), eq. 9:

        ℓ = −log σ(β r_w − β r_l + (α|y_w| − α|y_l|));   d_w = d_l = β σ(−z).
    The paper adds α(|y_w| − |y_l|) to the margin (the length-penalized reward r − α|y| moved into
    the Bradley–Terry model); it is often written with a minus sign (docs/design.md §1.1). Equal lengths (the
    sentiment task) make both the same."""
    return -_log_sigmoid(beta * (logp_w - ref_w) - beta * (logp_l - ref_l)
                         + alpha * (len_w - len_l))


def slic(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, delta, lam):
    """SLiC-HF — Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback"
    (arXiv 2305.10425), eq. 1, with the regularizer on the chosen response (y_ref = y_w):

        ℓ = max(0, δ − log π_w + log π_l) − λ log π_w;
        d_w = 1[z < δ] + λ,  d_l = 1[z < δ],  z = log π_w − log π_l.
    No reference model. TRL's ``loss_type="hinge"`` is a different variant: see ``hinge``."""
    return jax.nn.relu(delta - logp_w + logp_l) - lam * logp_w


def hinge(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta):
    """TRL's ``loss_type="hinge"`` ("SLiC" in TRL's documentation): SLiC-HF's calibration term on
    the reference-adjusted margin, with margin 1/β and no regularizer:

        ℓ = max(0, 1 − β (r_w − r_l));   d_w = d_l = β 1[β (r_w − r_l) < 1]."""
    return jax.nn.relu(1.0 - beta * ((logp_w - ref_w) - (logp_l - ref_l)))


def cpo(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, lam):
    """CPO — Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM
    Performance in Machine Translation" (arXiv 2401.08417), eq. 3–4: L_prefer + L_NLL with no
    reference model. The paper weights L_NLL by 1; ``lam`` generalizes it (TRL's ``cpo_alpha``):

        ℓ = −log σ(β log π_w − β log π_l) − λ log π_w;   d_w = β σ(−z) + λ,  d_l = β σ(−z).
    (TRL's CPOTrainer averages its NLL term over tokens; the paper and this function do not.)"""
    return -_log_sigmoid(beta * (logp_w - logp_l)) - lam * logp_w


def dpop(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, lam):
    """DPO-Positive — Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference Optimisation
    with DPO-Positive" (arXiv 2402.13228), eq. 3:

        ℓ = −log σ(β (r_w − r_l − λ max(0, −r_w)));
        d_w = β σ(−z)(1 + λ 1[r_w < 0]),  d_l = β σ(−z)."""
    r_w, r_l = logp_w - ref_w, logp_l - ref_l
    return -_log_sigmoid(beta * (r_w - r_l - lam * jax.nn.relu(-r_w)))


def rrhf(logp_w, logp_l, ref_w, ref_l, len_w, len_l):
    """RRHF — Yuan et al. 2023, "RRHF: Rank Responses to Align Language Models with Human
    Feedback without tears" (arXiv 2304.05302), eq. 2–4 for one ranked pair: the ranking loss on
    length-normalized log-probs p = log π/|y| plus the (unnormalized) fine-tuning loss on the best
    response, weighted 1 as in the paper:

        ℓ = max(0, p_l − p_w) − log π_w;
        d_w = 1[p_l > p_w]/|y_w| + 1,  d_l = 1[p_l > p_w]/|y_l|.
    No hyperparameters, no reference model."""
    return jax.nn.relu(logp_l / len_l - logp_w / len_w) - logp_w


def orpo(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, lam):
    """ORPO — Hong, Lee, Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference
    Model" (arXiv 2403.07691), eq. 2–7. With the per-token mean log-prob ``a = log π/|y|`` (so
    the paper's P_θ(y|x) = exp(a)) and ``odds = P/(1 − P)``:

        ℓ = −a_w − λ log σ(log odds_w − log odds_l),   log odds = a − log(1 − eᵃ);
        d_w = (1 + λ σ(−z)/(1 − e^{a_w})) / |y_w|,  d_l = λ σ(−z)/((1 − e^{a_l}) |y_l|).
    The lengths turn the sequence log-probs into the per-token means the paper uses; L_SFT is the
    token-averaged NLL of the chosen response. TRL: ``ORPOTrainer`` with ``beta`` = λ."""
    a_w, a_l = logp_w / len_w, logp_l / len_l
    log_odds = (a_w - jnp.log(-jnp.expm1(a_w))) - (a_l - jnp.log(-jnp.expm1(a_l)))
    return -a_w - lam * _log_sigmoid(log_odds)


def sppo(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, eta):
    """SPPO (not margin-based) — Wu et al. 2024, "Self-Play Preference Optimization for Language
    Model Alignment" (arXiv 2405.00675), eq. 3.6, with hard win probabilities P̂(y_w) = 1,
    P̂(y_l) = 0 and π_t the reference:

        ℓ = (r_w − η/2)² + (r_l + η/2)²;   d_w = 2 (η/2 − r_w),  d_l = 2 (r_l + η/2).
    d_w and d_l are set separately: each response is regressed to its own target. TRL:
    ``loss_type="sppo_hard"``, whose target 0.5/β is the paper's η/2 with η = 1/β (the often
    quoted 1/(2η) is TRL's β named η; docs/design.md §1.1)."""
    return (logp_w - ref_w - eta / 2.0) ** 2 + (logp_l - ref_l + eta / 2.0) ** 2


# --------------------------------------------------------------------------------------------
# TRL's other pairwise ``DPOTrainer`` losses. Each is written for one pair, as the paper states it;
# where TRL's batch implementation differs (constants, defaults, statistics over the batch), the
# docstring says how and why the per-pair form is the one the gradient condition needs: that
# condition is about one pair's update u = d_w g_w − d_l g_l, and d_w, d_l are functions of that
# pair's own log-probs once every batch statistic is held fixed for the step (as TRL detaches it).
# --------------------------------------------------------------------------------------------

def exo_pair(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, eps):
    """EXO-pref — Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model
    Alignment" (arXiv 2402.00856), eq. 16: the reverse KL from the policy's distribution over the
    pair, q = (σ(z), σ(−z)), to the smoothed preference labels (1 − ε, ε):

        ℓ = σ(z)(log σ(z) − log(1 − ε)) + σ(−z)(log σ(−z) − log ε),   z = β (r_w − r_l);
        d_w = d_l = β σ(z) σ(−z) (log((1 − ε)/ε) − z).
    The weights change sign at the target margin z* = log((1 − ε)/ε) (≈ 6.9 for ε = 10⁻³): past it
    d < 0 and the step shrinks the margin, as with IPO. TRL: ``loss_type="exo_pair"`` with
    ``label_smoothing`` = ε (TRL ≤ 0.28 silently replaced ε = 0 by 10⁻³, TRL ≥ 0.29 rejects it;
    here ε must be in (0, 0.5): 0 makes log ε infinite and ε ≥ 0.5 no longer prefers y_w).
    Default β = 0.1 (TRL's)."""
    z = beta * ((logp_w - ref_w) - (logp_l - ref_l))
    q_w, q_l = jax.nn.sigmoid(z), jax.nn.sigmoid(-z)
    return (q_w * (_log_sigmoid(z) - jnp.log1p(-eps))
            + q_l * (_log_sigmoid(-z) - jnp.log(eps)))


def nca_pair(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta):
    """NCA, pairwise (not margin-based) — Chen et al. 2024, "Noise Contrastive Alignment of
    Language Models with Explicit Rewards" (arXiv 2402.05369), the NCA loss for K = 2 responses
    with hard preference labels (as in the authors' pairwise code and TRL):

        ℓ = −log σ(β r_w) − ½ log σ(−β r_w) − ½ log σ(−β r_l);
        d_w = β (σ(−β r_w) − ½ σ(β r_w)),  d_l = ½ β σ(β r_l).
    Each response has its own term, with no margin, so it is not margin-based. Sign structure:
    d_l > 0 always; d_w > 0 iff β r_w < log 2, so r_w is anchored at log 2 / β, not pushed up
    without end. At r_w = r_l = 0 both weights are β/4 (DPO's d_w = d_l, so the same entanglement
    at the start); what keeps log π_w up later is the ratio d_w/d_l: d_w grows to β as r_w falls
    and d_l decays to 0 as r_l falls. TRL: ``loss_type="nca_pair"``. Default β = 0.01 is the
    authors' pairwise recipe (TRL's is 0.1)."""
    z_w, z_l = beta * (logp_w - ref_w), beta * (logp_l - ref_l)
    return -_log_sigmoid(z_w) - 0.5 * _log_sigmoid(-z_w) - 0.5 * _log_sigmoid(-z_l)


def robust(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, eps):
    """Robust DPO (rDPO) — Chowdhury, Kini, Natarajan 2024, "Provably Robust DPO: Aligning
    Language Models with Noisy Feedback" (arXiv 2403.00409): the DPO loss de-biased for labels
    flipped with probability ε (the paper's unbiased loss ℓ̂_ε; equation number not checked here):

        ℓ = ((1 − ε)(−log σ(z)) − ε(−log σ(−z))) / (1 − 2ε),   z = β (r_w − r_l);
        d_w = d_l = β ((1 − ε) σ(−z) + ε σ(z)) / (1 − 2ε)  > 0.
    The weights never vanish (→ βε/(1 − 2ε) as z → ∞: the loss is unbounded below). ε is a fixed
    hyperparameter, not a batch statistic, so TRL's per-sequence loss is exactly this. TRL:
    ``loss_type="robust"`` with ``label_smoothing`` = ε (TRL's default 0 makes it DPO; the default
    here, 0.1, is the value TRL's documentation quotes from the paper). Registered as
    ``robust``: the name ``rdpo`` is R-DPO (Park et al.)."""
    z = beta * ((logp_w - ref_w) - (logp_l - ref_l))
    return (-(1.0 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z)) / (1.0 - 2.0 * eps)


def bco_pair(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, delta):
    """BCO, pairwise (not margin-based) — Jung et al. 2024, "Binary Classifier Optimization for
    Large Language Model Alignment" (arXiv 2404.04656): a binary classifier with logit β r − δ,
    y_w labelled 1 and y_l labelled 0 (the paper's BCO loss with reward shift δ; equation number
    not checked here):

        ℓ = −log σ(β r_w − δ) − log σ(−(β r_l − δ));
        d_w = β σ(δ − β r_w),  d_l = β σ(β r_l − δ)   (both > 0, each set by its own response).
    Batch statistic: the paper's δ is a moving average of the implicit rewards β r over chosen and
    rejected responses; TRL ``loss_type="bco_pair"`` ≤ 0.28 used such a running mean (of each
    batch's mean β r, detached), TRL ≥ 0.29 drops it (δ = 0). Within one step δ is a constant,
    so each pair's d_w, d_l are this formula at the current δ: δ is a hyperparameter here, default
    0 (TRL ≥ 0.29). Default β = 0.1 (TRL's)."""
    return (-_log_sigmoid(beta * (logp_w - ref_w) - delta)
            - _log_sigmoid(-(beta * (logp_l - ref_l) - delta)))


def _smoothed_logistic(z, eps):
    """−(1 − ε) log σ(z) − ε log σ(−z): the logistic loss on labels smoothed by ε (cDPO)."""
    return -(1.0 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)


def aot(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, eps):
    """AOT, paired — Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal
    Transport" (arXiv 2406.05882): first-order stochastic dominance of the policy's
    chosen-vs-rejected log-ratio ρ = log π_w − log π_l over the reference's, penalized by a
    smoothed logistic loss on matched quantiles (equation number not checked here). For one pair
    the quantiles are the values themselves:

        ℓ = −(1 − ε) log σ(βδ) − ε log σ(−βδ),   δ = ρ − ρ_ref = r_w − r_l;
        d_w = d_l = β ((1 − ε) σ(−βδ) − ε σ(βδ)).
    Batch statistic: TRL ``loss_type="aot"`` sorts ρ and ρ_ref separately over the batch and pairs
    the k-th smallest of each. The per-pair reduction of that sorted form is this function (a
    batch of one sorts nothing). In a batch, pair j's d_w = d_l is this formula at the δ of its
    rank, ρ_(k) − ρ_ref,(k) with k the rank of ρ_j (divided by the batch size), so the per-pair
    form is still what sets each pair's weights in the gradient condition. d > 0 for ε = 0
    (DPO); for ε > 0 d < 0 once βδ > log((1 − ε)/ε). TRL's ``label_smoothing`` = ε (default 0).
    Default β = 0.01, the paper's choice for its experiments (TRL's is 0.1)."""
    h = (logp_w - logp_l) - (ref_w - ref_l)
    return _smoothed_logistic(beta * h, eps)


def aot_unpaired(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, eps):
    """AOT, unpaired — Melnyk et al. 2024 (arXiv 2406.05882), the unpaired variant: the
    distribution of chosen rewards r_w must dominate that of rejected rewards r_l (quantile by
    quantile). For one pair:

        ℓ = −(1 − ε) log σ(βδ) − ε log σ(−βδ),   δ = r_w − r_l;
        d_w = d_l = β ((1 − ε) σ(−βδ) − ε σ(βδ)).
    Batch statistic: TRL ``loss_type="aot_unpaired"`` (``aot_pair`` in older TRL) sorts r_w
    and r_l separately over the batch, δ_k = r_w,(k) − r_l,(k). The single-pair case is this
    function, equal per pair to ``aot``. In a batch the chosen and rejected of one pair land at
    different ranks, so there d_w = β φ(δ at the rank of r_w) and d_l = β φ(δ at the rank of r_l)
    with φ the bracket above: the same per-pair formula, but d_w ≠ d_l in general. Defaults as
    for ``aot``."""
    return _smoothed_logistic(beta * ((logp_w - ref_w) - (logp_l - ref_l)), eps)


def _sigmoid(z):
    """σ(z) as exp(log σ(z)): the same value, but its autodiff slope is σ(z) σ(−z), which stays
    positive in float32 where σ(z) rounds to 1 (``jax.nn.sigmoid``'s slope σ(1 − σ) is then 0)."""
    return jnp.exp(_log_sigmoid(z))


def apo_zero(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta):
    """APO-zero (not margin-based) — D'Oosterlinck et al. 2024, "Anchored Preference Optimization
    and Contrastive Revisions: Addressing Underspecification in Alignment" (arXiv 2408.06266),
    eq. 7: push r_w up and r_l down, each against the anchor 0:

        ℓ = −σ(β r_w) + σ(β r_l);
        d_w = β σ′(β r_w),  d_l = β σ′(β r_l),   σ′(z) = σ(z) σ(−z).
    Sign structure: d_w, d_l > 0 always (so never case 4), but set separately, by r_w and r_l
    alone; their ratio d_w/d_l = σ′(β r_w)/σ′(β r_l) is 1 at the start (r = 0: both β/4, DPO's
    entanglement) and exceeds 1 when |r_l| > |r_w|, e.g. once the rejected has fallen further than
    the chosen. Both decay as |r| grows: the anchors saturate. TRL: ``loss_type="apo_zero"``,
    which adds the constant 1 (``1 − σ(β r_w) + σ(β r_l)``); the gradient is the same. Default
    β = 0.1 (TRL's)."""
    return -_sigmoid(beta * (logp_w - ref_w)) + _sigmoid(beta * (logp_l - ref_l))


def apo_down(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta):
    """APO-down — D'Oosterlinck et al. 2024 (arXiv 2408.06266), eq. 8: for data whose chosen
    answers are worse than the model's own, push r_w down while keeping the margin growing:

        ℓ = σ(β r_w) − σ(β (r_w − r_l));
        d_w = β (σ′(β (r_w − r_l)) − σ′(β r_w)),  d_l = β σ′(β (r_w − r_l)) > 0.
    Sign structure: d_w ≤ 0 iff |r_w| ≤ |r_w − r_l| (σ′ falls with |z|): the step lowers log π_w
    on purpose; d_w = 0 at the start (r = 0), where only y_l is pushed down. With d_w < 0 < d_l the
    first-order change of log π_w is d_w‖g_w‖² − d_l⟨g_w, g_l⟩ < 0 whenever ⟨g_w, g_l⟩ ≥ 0.
    Margin-based in the template of docs/design.md §1.1 (a function of the margin plus a term in
    log π_w alone, like CPO's NLL). TRL: ``loss_type="apo_down"``, which adds the constant 1.
    Default β = 0.1 (TRL's)."""
    r_w, r_l = logp_w - ref_w, logp_l - ref_l
    return _sigmoid(beta * r_w) - _sigmoid(beta * (r_w - r_l))


def discopop(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta, tau):
    """DiscoPOP (log-ratio modulated loss, LRML) — Lu et al. 2024, "Discovering Preference
    Optimization Algorithms with and for Large Language Models" (arXiv 2406.08414), eq. 5: a blend
    of the logistic and the exponential loss, mixed by m = σ(z/τ):

        ℓ = (1 − m)(−log σ(z)) + m e^{−z},   z = β (r_w − r_l);
        d_w = d_l = β ((1 − m) σ(−z) + m e^{−z} − (m (1 − m)/τ)(e^{−z} + log σ(z))).
    The last term is ≤ 0 (e^{−z} ≥ log(1 + e^{−z})), and near z = 0 it wins: for τ = 0.05,
    d < 0 for z in about (−0.12, 0.07), d = −0.78 β at z = 0. So at the start (policy = reference)
    the step shrinks the margin, towards a local minimum of ℓ at z ≈ −0.12; the loss is not
    monotone in the margin. Defaults β = τ = 0.05 are the paper's (its discovered code uses
    σ(r_w − r_l) for m, which is σ(z/τ) at β = τ). TRL: ``loss_type="discopop"`` with
    ``discopop_tau`` = τ (TRL's default β is 0.1). m e^{−z} is computed as exp(log m − z), which
    equals it and does not overflow for very negative z."""
    z = beta * ((logp_w - ref_w) - (logp_l - ref_l))
    return (jax.nn.sigmoid(-z / tau) * -_log_sigmoid(z)
            + jnp.exp(_log_sigmoid(z / tau) - z))


def sigmoid_norm(logp_w, logp_l, ref_w, ref_l, len_w, len_l, *, beta):
    """Length-normalized DPO — TRL's ``loss_type="sigmoid_norm"``: DPO on the per-token mean
    implicit rewards r/|y|, the length normalization of SimPO (Meng et al. 2024, arXiv 2405.14734,
    which TRL cites) kept with DPO's reference model; Lambert et al. 2024, "Tülu 3: Pushing
    Frontiers in Open Language Model Post-Training" (arXiv 2411.15124) train with this form
    ("length-normalized DPO"):

        ℓ = −log σ(z),   z = β (r_w/|y_w| − r_l/|y_l|);
        d_w = β σ(−z)/|y_w|,  d_l = β σ(−z)/|y_l|.
    d_w ≠ d_l when the lengths differ (as for SimPO). TRL divides by the number of completion
    tokens (at least 1), which |y| is here. Default β = 0.1 (TRL's)."""
    z = beta * ((logp_w - ref_w) / len_w - (logp_l - ref_l) / len_l)
    return -_log_sigmoid(z)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

def _positive(v):
    return v > 0


def _nonnegative(v):
    return v >= 0


def _below_half(v):  # a label-flip / smoothing probability ε that still prefers y_w
    return 0 <= v < 0.5


def _inside_half(v):  # EXO's ε: log ε must be finite
    return 0 < v < 0.5


def _any(v):
    return True


@dataclass(frozen=True)
class _Spec:
    fn: LossFn
    defaults: Mapping[str, float]
    checks: Mapping[str, tuple[Callable[[float], bool], str]]
    margin_based: bool = True


_SPECS: dict[str, _Spec] = {
    "dpo": _Spec(dpo, {"beta": 0.1}, {"beta": (_positive, "> 0")}),
    "ipo": _Spec(ipo, {"tau": 0.1}, {"tau": (_positive, "> 0")}),
    "simpo": _Spec(simpo, {"beta": 2.0, "gamma": 1.0},
                   {"beta": (_positive, "> 0"), "gamma": (_nonnegative, ">= 0")}),
    "rdpo": _Spec(rdpo, {"beta": 0.1, "alpha": 0.01},
                  {"beta": (_positive, "> 0"), "alpha": (_nonnegative, ">= 0")}),
    "slic": _Spec(slic, {"delta": 1.0, "lam": 0.1},
                  {"delta": (_nonnegative, ">= 0"), "lam": (_nonnegative, ">= 0")}),
    "hinge": _Spec(hinge, {"beta": 0.1}, {"beta": (_positive, "> 0")}),
    "cpo": _Spec(cpo, {"beta": 0.1, "lam": 1.0},
                 {"beta": (_positive, "> 0"), "lam": (_nonnegative, ">= 0")}),
    "dpop": _Spec(dpop, {"beta": 0.1, "lam": 50.0},
                  {"beta": (_positive, "> 0"), "lam": (_nonnegative, ">= 0")}),
    "rrhf": _Spec(rrhf, {}, {}),
    "orpo": _Spec(orpo, {"lam": 0.1}, {"lam": (_nonnegative, ">= 0")}),
    "sppo": _Spec(sppo, {"eta": 10.0}, {"eta": (_positive, "> 0")}, margin_based=False),
    # TRL's other pairwise losses. margin_based follows docs/design.md §1.1's template (a function of
    # the margin, plus at most a term in log π_w alone): NCA, BCO and APO-zero have a term in
    # log π_l alone and no margin, so they are not margin-based.
    "exo_pair": _Spec(exo_pair, {"beta": 0.1, "eps": 1e-3},
                      {"beta": (_positive, "> 0"), "eps": (_inside_half, "in (0, 0.5)")}),
    "nca_pair": _Spec(nca_pair, {"beta": 0.01}, {"beta": (_positive, "> 0")},
                      margin_based=False),
    "robust": _Spec(robust, {"beta": 0.1, "eps": 0.1},
                    {"beta": (_positive, "> 0"), "eps": (_below_half, "in [0, 0.5)")}),
    "bco_pair": _Spec(bco_pair, {"beta": 0.1, "delta": 0.0},
                      {"beta": (_positive, "> 0"), "delta": (_any, "a finite number")},
                      margin_based=False),
    "aot": _Spec(aot, {"beta": 0.01, "eps": 0.0},
                 {"beta": (_positive, "> 0"), "eps": (_below_half, "in [0, 0.5)")}),
    "aot_unpaired": _Spec(aot_unpaired, {"beta": 0.01, "eps": 0.0},
                          {"beta": (_positive, "> 0"), "eps": (_below_half, "in [0, 0.5)")}),
    "apo_zero": _Spec(apo_zero, {"beta": 0.1}, {"beta": (_positive, "> 0")}, margin_based=False),
    "apo_down": _Spec(apo_down, {"beta": 0.1}, {"beta": (_positive, "> 0")}),
    "discopop": _Spec(discopop, {"beta": 0.05, "tau": 0.05},
                      {"beta": (_positive, "> 0"), "tau": (_positive, "> 0")}),
    "sigmoid_norm": _Spec(sigmoid_norm, {"beta": 0.1}, {"beta": (_positive, "> 0")}),
}

#: The zoo, in the order reports list it (``hinge``, TRL's SLiC variant, is registered but not
#: part of the paper's zoo), then TRL's other pairwise ``DPOTrainer`` losses.
OBJECTIVES: tuple[str, ...] = ("dpo", "ipo", "simpo", "rdpo", "slic", "cpo", "dpop", "rrhf",
                               "orpo", "sppo",
                               "exo_pair", "nca_pair", "robust", "bco_pair", "aot", "aot_unpaired",
                               "apo_zero", "apo_down", "discopop", "sigmoid_norm")

#: Other spellings and TRL ``loss_type`` names → (canonical name, TRL hyperparameter translation).
ALIASES: dict[str, tuple[str, Callable[[dict], dict]]] = {
    "sigmoid": ("dpo", dict),
    "r-dpo": ("rdpo", dict), "r_dpo": ("rdpo", dict),
    "slic-hf": ("slic", dict), "slic_hf": ("slic", dict),
    "dpo-positive": ("dpop", dict), "dpo_positive": ("dpop", dict),
    "sppo_hard": ("sppo", lambda h: _trl_sppo(**h)),
    "exo": ("exo_pair", dict), "exo-pref": ("exo_pair", dict), "exo_pref": ("exo_pair", dict),
    "nca": ("nca_pair", dict),
    "robust_dpo": ("robust", dict), "robust-dpo": ("robust", dict),
    "aot_pair": ("aot_unpaired", dict),  # older TRL's name for the unpaired variant
    "apo-zero": ("apo_zero", dict), "apo-down": ("apo_down", dict),
    "lrml": ("discopop", dict),
}


def _trl_sppo(beta: float | None = None, **rest) -> dict:
    """TRL's ``sppo_hard`` target 0.5/β is the paper's η/2: η = 1/β."""
    if beta is None:
        return rest
    if not (isinstance(beta, (int, float)) and beta > 0):
        raise ConfigError(f"objective sppo_hard: beta={beta!r} is invalid: must be > 0")
    return {"eta": 1.0 / beta, **rest}

#: Hyperparameter names accepted in place of the papers' (TRL's names, ``lambda`` for ``lam``).
HPARAM_ALIASES: dict[str, dict[str, str]] = {
    "ipo": {"beta": "tau"},
    "simpo": {"simpo_gamma": "gamma"},
    "slic": {"lambda": "lam"},
    "cpo": {"lambda": "lam", "cpo_alpha": "lam"},
    "dpop": {"lambda": "lam"},
    "orpo": {"lambda": "lam", "beta": "lam"},
    "exo_pair": {"label_smoothing": "eps", "epsilon": "eps"},
    "robust": {"label_smoothing": "eps", "epsilon": "eps"},
    "aot": {"label_smoothing": "eps", "epsilon": "eps"},
    "aot_unpaired": {"label_smoothing": "eps", "epsilon": "eps"},
    "discopop": {"discopop_tau": "tau"},
}


def known_names() -> list[str]:
    """Every name ``get_objective`` accepts."""
    return sorted({*_SPECS, *ALIASES})


@dataclass(frozen=True, eq=False)
class Objective:
    """A per-pair loss ``loss_fn(logp_w, logp_l, ref_w, ref_l, len_w, len_l) -> scalar`` with its
    name and hyperparameters. ``Objective("mine", my_loss)`` wraps a user-written loss.

    All methods broadcast over leading batch axes and return one value per pair."""

    name: str
    loss_fn: LossFn
    hparams: tuple[tuple[str, float], ...] = ()
    margin_based: bool = True

    def _key(self):
        fn = self.loss_fn  # a zoo loss is partial(paper_fn, **hparams): compare its parts
        fn_key = (fn.func, tuple(sorted(fn.keywords.items()))) if isinstance(fn, partial) else fn
        return (self.name, self.hparams, self.margin_based, fn_key)

    def __eq__(self, other):
        return isinstance(other, Objective) and self._key() == other._key()

    def __hash__(self):  # equal objectives share jit compilations (they are static arguments)
        return hash(self._key())

    @property
    def beta(self) -> float:
        """The β of TRL's implicit reward ``β (log π − log π_ref)``: the objective's own β, or the
        hyperparameter TRL's ``beta`` stands for (IPO's τ, ORPO's λ, SPPO's 1/η); 1 for a loss
        with none of them."""
        hparams = dict(self.hparams)
        if "beta" in hparams:
            return float(hparams["beta"])
        alias = HPARAM_ALIASES.get(self.name, {}).get("beta")
        if alias in hparams:
            return float(hparams[alias])
        if self.name == "sppo" and "eta" in hparams:
            return 1.0 / float(hparams["eta"])
        return 1.0

    def loss(self, logp_w, logp_l, ref_w, ref_l, len_w, len_l):
        """Per-pair losses ``[...]``."""
        return _per_pair(self.loss_fn, logp_w, logp_l, ref_w, ref_l, len_w, len_l)

    __call__ = loss

    def weights(self, logp_w, logp_l, ref_w, ref_l, len_w, len_l):
        """``(d_w, d_l)`` per pair: ``d_w = −∂ℓ/∂log π_w``, ``d_l = +∂ℓ/∂log π_l`` by autodiff."""
        return pair_weights(self.loss_fn, logp_w, logp_l, ref_w, ref_l, len_w, len_l)

    def describe(self) -> str:
        params = ", ".join(f"{k}={v:g}" for k, v in self.hparams)
        return f"{self.name}({params})"


def _broadcast(*xs):
    xs = jnp.broadcast_arrays(*(jnp.asarray(x, jnp.result_type(float)) for x in xs))
    return xs[0].shape, [x.reshape(-1) for x in xs]


def _per_pair(loss_fn: LossFn, *inputs):
    shape, flat = _broadcast(*inputs)
    return jax.vmap(loss_fn)(*flat).reshape(shape)


def pair_weights(loss_fn: LossFn, logp_w, logp_l, ref_w, ref_l, len_w, len_l):
    """``(d_w, d_l) = (−∂ℓ/∂log π_w, +∂ℓ/∂log π_l)`` of any per-pair loss, pair by pair.

    The loss is written for one pair; ``jax.vmap`` of ``jax.grad`` applies it to every pair."""
    shape, flat = _broadcast(logp_w, logp_l, ref_w, ref_l, len_w, len_l)
    grad_w, grad_l = jax.vmap(jax.grad(loss_fn, argnums=(0, 1)))(*flat)
    return -grad_w.reshape(shape), grad_l.reshape(shape)


#: Nonzero hyperparameters outside [1/MAX_HPARAM, MAX_HPARAM] in magnitude overflow the float32
#: loss (β · margin or 1/(2τ) → ∞, then NaN gradients).
MAX_HPARAM = 1e6


def get_objective(name: str, **hparams: float) -> Objective:
    """The objective called ``name`` (canonical, other spelling or TRL ``loss_type``) with its
    paper's defaults overridden by ``hparams``.

    An unknown name or hyperparameter, or a value outside the allowed range (β ≤ 0, …), raises
    ``ConfigError`` naming what is allowed."""
    key = str(name).strip().lower()
    hparams = dict(hparams)
    if key in ALIASES:
        key, translate = ALIASES[key]
        hparams = translate(hparams)
    if key not in _SPECS:
        raise ConfigError(f"objective {name!r} is unknown; known: {', '.join(known_names())}")
    spec = _SPECS[key]
    for alias, canonical in HPARAM_ALIASES.get(key, {}).items():
        if alias in hparams:
            if canonical in hparams:
                raise ConfigError(f"objective {key}: give {canonical!r} or its alias {alias!r}, "
                                  "not both")
            hparams[canonical] = hparams.pop(alias)
    unknown = sorted(set(hparams) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(spec.defaults) or "none"
        raise ConfigError(f"objective {key}: unknown hyperparameter(s) {', '.join(unknown)}; "
                          f"allowed: {allowed}")
    values = {**spec.defaults, **hparams}
    for hname, value in values.items():
        check, rule = spec.checks[hname]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and check(value)):
            raise ConfigError(f"objective {key}: {hname}={value!r} is invalid: must be {rule}")
        if value and not 1 / MAX_HPARAM <= abs(value) <= MAX_HPARAM:
            raise ConfigError(f"objective {key}: {hname}={value!r} is invalid: must be 0 or of "
                              f"magnitude {1 / MAX_HPARAM:g}..{MAX_HPARAM:g} (beyond, float32 "
                              "losses such as β·margin or 1/(2τ) overflow)")
    values = {k: float(v) for k, v in values.items()}
    return Objective(key, partial(spec.fn, **values), tuple(values.items()), spec.margin_based)


def parse_hparams(items: list[str] | None) -> dict[str, float]:
    """``["beta=0.1", "gamma=0.5"]`` → ``{"beta": 0.1, "gamma": 0.5}`` (command-line form)."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"hyperparameter {item!r} is invalid: write NAME=NUMBER, "
                              "e.g. beta=0.1") from None
    return out


__all__ = ["ALIASES", "HPARAM_ALIASES", "OBJECTIVES", "Objective", "aot", "aot_unpaired",
           "apo_down", "apo_zero", "bco_pair", "cpo", "discopop", "dpo", "dpop", "exo_pair",
           "get_objective", "hinge", "ipo", "known_names", "nca_pair", "orpo", "pair_weights",
           "parse_hparams", "rdpo", "robust", "rrhf", "sigmoid_norm", "simpo", "slic", "sppo"]
