"""Objectives: each loss against a numpy transcription of its paper's formula, and the autodiff
weights d_w, d_l against the hand-derived formulas of DESIGN.md §1.1."""

import numpy as np
import pytest

from entangle_jax.config import ConfigError
from entangle_jax.objectives import (OBJECTIVES, Objective, get_objective, known_names,
                                     pair_weights, parse_hparams)

RNG = np.random.default_rng(0)
N = 64
LOGP_W = RNG.uniform(-12.0, -0.2, N)
LOGP_L = RNG.uniform(-12.0, -0.2, N)
REF_W = LOGP_W + RNG.normal(0.0, 1.5, N)
REF_L = LOGP_L + RNG.normal(0.0, 1.5, N)
LEN_W = RNG.integers(1, 9, N).astype(float)
LEN_L = RNG.integers(1, 9, N).astype(float)
INPUTS = (LOGP_W, LOGP_L, REF_W, REF_L, LEN_W, LEN_L)

# Non-default hyperparameters, so a default cannot hide a misplaced constant.
HPARAMS = {"dpo": {"beta": 0.3}, "ipo": {"tau": 0.4}, "simpo": {"beta": 1.7, "gamma": 0.6},
           "rdpo": {"beta": 0.25, "alpha": 0.2}, "slic": {"delta": 2.0, "lam": 0.3},
           "cpo": {"beta": 0.2, "lam": 0.7}, "dpop": {"beta": 0.15, "lam": 5.0}, "rrhf": {},
           "orpo": {"lam": 0.4}, "sppo": {"eta": 3.0}, "hinge": {"beta": 0.5}}


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def nlog_sig(z):  # −log σ(z)
    return np.log1p(np.exp(-z))


def paper_loss(name, lw, ll, rw, rl, nw, nl, h):
    """Each paper's per-pair loss, transcribed directly."""
    if name == "dpo":
        return nlog_sig(h["beta"] * np.log(np.exp(lw) / np.exp(rw))
                        - h["beta"] * np.log(np.exp(ll) / np.exp(rl)))
    if name == "ipo":
        return ((lw - rw) - (ll - rl) - 1 / (2 * h["tau"])) ** 2
    if name == "simpo":
        return nlog_sig(h["beta"] / nw * lw - h["beta"] / nl * ll - h["gamma"])
    if name == "rdpo":
        return nlog_sig(h["beta"] * (lw - rw) - h["beta"] * (ll - rl)
                        + (h["alpha"] * nw - h["alpha"] * nl))
    if name == "slic":
        return np.maximum(0, h["delta"] - lw + ll) - h["lam"] * lw
    if name == "hinge":
        return np.maximum(0, 1 - h["beta"] * ((lw - ll) - (rw - rl)))
    if name == "cpo":
        return nlog_sig(h["beta"] * lw - h["beta"] * ll) - h["lam"] * lw
    if name == "dpop":
        return nlog_sig(h["beta"] * ((lw - rw) - (ll - rl) - h["lam"] * np.maximum(0, rw - lw)))
    if name == "rrhf":
        return np.maximum(0, ll / nl - lw / nw) - lw
    if name == "orpo":
        p_w, p_l = np.exp(lw / nw), np.exp(ll / nl)
        odds = lambda p: p / (1 - p)  # noqa: E731
        return -lw / nw - h["lam"] * np.log(sig(np.log(odds(p_w) / odds(p_l))))
    if name == "sppo":
        return (lw - rw - h["eta"] * (1 - 0.5)) ** 2 + (ll - rl - h["eta"] * (0 - 0.5)) ** 2
    raise KeyError(name)


def hand_weights(name, lw, ll, rw, rl, nw, nl, h):
    """d_w, d_l by hand (DESIGN.md §1.1; R-DPO, SPPO, ORPO, RRHF as derived in their docstrings)."""
    ones = np.ones_like(lw)
    if name in ("dpo", "rdpo", "dpop"):
        z = h["beta"] * ((lw - rw) - (ll - rl))
        if name == "rdpo":
            z = z + h["alpha"] * (nw - nl)
        if name == "dpop":
            z = z - h["beta"] * h["lam"] * np.maximum(0, rw - lw)
            return h["beta"] * sig(-z) * (1 + h["lam"] * (lw - rw < 0)), h["beta"] * sig(-z)
        return h["beta"] * sig(-z), h["beta"] * sig(-z)
    if name == "ipo":
        d = 2 * (1 / (2 * h["tau"]) - ((lw - rw) - (ll - rl)))
        return d, d
    if name == "simpo":
        z = h["beta"] * lw / nw - h["beta"] * ll / nl - h["gamma"]
        return h["beta"] * sig(-z) / nw, h["beta"] * sig(-z) / nl
    if name == "slic":
        active = (lw - ll < h["delta"]).astype(float)
        return active + h["lam"], active
    if name == "hinge":
        active = (h["beta"] * ((lw - rw) - (ll - rl)) < 1).astype(float)
        return h["beta"] * active, h["beta"] * active
    if name == "cpo":
        s = h["beta"] * sig(-h["beta"] * (lw - ll))
        return s + h["lam"], s
    if name == "rrhf":
        active = (ll / nl > lw / nw).astype(float)
        return active / nw + ones, active / nl
    if name == "orpo":
        a_w, a_l = lw / nw, ll / nl
        z = (a_w - np.log1p(-np.exp(a_w))) - (a_l - np.log1p(-np.exp(a_l)))
        s = h["lam"] * sig(-z)
        return (1 + s / (1 - np.exp(a_w))) / nw, s / ((1 - np.exp(a_l)) * nl)
    if name == "sppo":
        return 2 * (h["eta"] / 2 - (lw - rw)), 2 * ((ll - rl) + h["eta"] / 2)
    raise KeyError(name)


@pytest.mark.parametrize("name", [*OBJECTIVES, "hinge"])
def test_loss_matches_paper_formula(name):
    objective = get_objective(name, **HPARAMS[name])
    got = np.asarray(objective.loss(*INPUTS))
    want = paper_loss(name, *INPUTS, HPARAMS[name])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", [*OBJECTIVES, "hinge"])
def test_autodiff_weights_match_hand_formulas(name):
    objective = get_objective(name, **HPARAMS[name])
    d_w, d_l = objective.weights(*INPUTS)
    want_w, want_l = hand_weights(name, *INPUTS, HPARAMS[name])
    np.testing.assert_allclose(np.asarray(d_w), want_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(d_l), want_l, rtol=1e-4, atol=1e-6)


def test_weights_match_finite_differences_of_the_loss():
    """d_w = −∂ℓ/∂log π_w and d_l = +∂ℓ/∂log π_l, by central differences in float64 numpy."""
    eps = 1e-5
    for name in ("dpo", "simpo", "orpo", "sppo"):
        h = HPARAMS[name]
        d_w, d_l = get_objective(name, **h).weights(*INPUTS)
        fd_w = -(paper_loss(name, LOGP_W + eps, *INPUTS[1:], h)
                 - paper_loss(name, LOGP_W - eps, *INPUTS[1:], h)) / (2 * eps)
        fd_l = (paper_loss(name, LOGP_W, LOGP_L + eps, *INPUTS[2:], h)
                - paper_loss(name, LOGP_W, LOGP_L - eps, *INPUTS[2:], h)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(d_w), fd_w, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(np.asarray(d_l), fd_l, rtol=1e-3, atol=1e-5)


def test_user_written_loss_gets_its_weights():
    """ℓ = exp(−(r_w − r_l)) has d_w = d_l = exp(−(r_w − r_l))."""
    def exp_loss(lw, ll, rw, rl, nw, nl):
        import jax.numpy as jnp
        return jnp.exp(-((lw - rw) - (ll - rl)))

    user = Objective("exp", exp_loss)
    want = np.exp(-((LOGP_W - REF_W) - (LOGP_L - REF_L)))
    d_w, d_l = user.weights(*INPUTS)
    np.testing.assert_allclose(np.asarray(d_w), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(d_l), want, rtol=1e-5)
    d_w2, _ = pair_weights(exp_loss, *INPUTS)
    np.testing.assert_allclose(np.asarray(d_w2), want, rtol=1e-5)


def test_weights_broadcast_over_batch_axes():
    d_w, d_l = get_objective("dpo").weights(LOGP_W.reshape(8, 8), LOGP_L.reshape(8, 8), 0.0, 0.0,
                                            3, 3)
    assert d_w.shape == d_l.shape == (8, 8)


def test_trl_aliases_follow_trl_formulas():
    beta = 0.25
    logits = (LOGP_W - LOGP_L) - (REF_W - REF_L)
    cases = {"sigmoid": nlog_sig(beta * logits),
             "ipo": (logits - 1 / (2 * beta)) ** 2,  # TRL's IPO with β in the role of τ
             "hinge": np.maximum(0, 1 - beta * logits),
             "sppo_hard": ((LOGP_W - REF_W) - 0.5 / beta) ** 2
             + ((LOGP_L - REF_L) + 0.5 / beta) ** 2}
    for name, want in cases.items():
        got = get_objective(name, beta=beta).loss(*INPUTS)
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5, err_msg=name)


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ConfigError) as err:
        get_objective("kto")
    for name in OBJECTIVES:
        assert name in str(err.value)
    assert set(OBJECTIVES) <= set(known_names())


@pytest.mark.parametrize("name, hparams", [
    ("dpo", {"beta": 0.0}), ("dpo", {"beta": -1.0}), ("ipo", {"tau": 0}),
    ("sppo", {"eta": -2.0}), ("sppo_hard", {"beta": 0.0}), ("simpo", {"gamma": -0.1}),
    ("cpo", {"lam": -1.0}), ("dpo", {"beta": float("nan")}), ("dpo", {"gamma": 1.0}),
    ("rrhf", {"beta": 0.1}), ("dpo", {"beta": True}), ("cpo", {"lam": 1.0, "cpo_alpha": 2.0}),
])
def test_bad_hyperparameters_raise_config_error(name, hparams):
    with pytest.raises(ConfigError):
        get_objective(name, **hparams)


def test_hyperparameter_aliases_and_parsing():
    assert dict(get_objective("cpo", cpo_alpha=0.5).hparams)["lam"] == 0.5
    assert dict(get_objective("orpo", **{"lambda": 0.2}).hparams)["lam"] == 0.2
    assert dict(get_objective("SLiC-HF").hparams) == {"delta": 1.0, "lam": 0.1}
    assert parse_hparams(["beta=0.5", "gamma = 1"]) == {"beta": 0.5, "gamma": 1.0}
    for bad in (["beta"], ["=1"], ["beta=x"]):
        with pytest.raises(ConfigError):
            parse_hparams(bad)
