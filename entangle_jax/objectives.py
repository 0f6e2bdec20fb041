"""Preference objectives as functions of a pair's sequence log-probs, and their weights d_w, d_l.

Every loss here is a per-pair scalar function

    ℓ(log π_w, log π_l, log π_ref,w, log π_ref,l, |y_w|, |y_l|)

of the policy's and the reference's sequence log-probs and the response lengths in tokens. Its
gradient in the parameters is ``∇ℓ = −(d_w g_w − d_l g_l)`` with ``g = ∇_θ log π`` and the
objective-dependent scalars (DESIGN.md §1.1)

    d_w = −∂ℓ/∂log π_w,        d_l = +∂ℓ/∂log π_l,

which ``pair_weights`` takes from ``jax.grad`` of the loss — so a loss a user writes gets its d_w and
d_l for free. Notation below: ``r = log π − log π_ref``, ``σ`` the logistic function,
``log σ(z) = −softplus(−z)``.

Where the literature states a loss differently from DESIGN.md §1.1's table, each function follows
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
    the Bradley–Terry model); DESIGN.md §1.1 writes it with a minus sign. Equal lengths (the
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
    ``loss_type="sppo_hard"``, whose target 0.5/β is the paper's η/2 with η = 1/β (DESIGN.md §1.1
    writes 1/(2η), i.e. TRL's β named η)."""
    return (logp_w - ref_w - eta / 2.0) ** 2 + (logp_l - ref_l + eta / 2.0) ** 2


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

def _positive(v):
    return v > 0


def _nonnegative(v):
    return v >= 0


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
}

#: The zoo, in the order reports list it (``hinge``, TRL's SLiC variant, is registered but not
#: part of the paper's zoo).
OBJECTIVES: tuple[str, ...] = ("dpo", "ipo", "simpo", "rdpo", "slic", "cpo", "dpop", "rrhf",
                               "orpo", "sppo")

#: Other spellings and TRL ``loss_type`` names → (canonical name, TRL hyperparameter translation).
ALIASES: dict[str, tuple[str, Callable[[dict], dict]]] = {
    "sigmoid": ("dpo", dict),
    "r-dpo": ("rdpo", dict), "r_dpo": ("rdpo", dict),
    "slic-hf": ("slic", dict), "slic_hf": ("slic", dict),
    "dpo-positive": ("dpop", dict), "dpo_positive": ("dpop", dict),
    "sppo_hard": ("sppo", lambda h: _trl_sppo(**h)),
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
        """The β of TRL's implicit reward ``β (log π − log π_ref)``; 1 for a loss without β."""
        return float(dict(self.hparams).get("beta", 1.0))

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


__all__ = ["ALIASES", "HPARAM_ALIASES", "OBJECTIVES", "Objective", "cpo", "dpo", "dpop",
           "get_objective", "hinge", "ipo", "known_names", "orpo", "pair_weights",
           "parse_hparams", "rdpo", "rrhf", "simpo", "slic", "sppo"]
