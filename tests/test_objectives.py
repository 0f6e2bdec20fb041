"""Objectives: each loss against a numpy transcription of its paper's formula, and the autodiff
weights d_w, d_l against the hand-derived formulas of docs/design.md §1.1."""

import numpy as np
import pytest

from entangle_jax.config import ConfigError
from entangle_jax.condition import gradient_condition
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
           "orpo": {"lam": 0.4}, "sppo": {"eta": 3.0}, "hinge": {"beta": 0.5},
           # TRL's other pairwise losses; chosen so that every sign region of d is hit
           "exo_pair": {"beta": 0.3, "eps": 0.02}, "nca_pair": {"beta": 0.35},
           "robust": {"beta": 0.2, "eps": 0.15}, "bco_pair": {"beta": 0.3, "delta": 0.4},
           "aot": {"beta": 0.25, "eps": 0.05}, "aot_unpaired": {"beta": 0.4, "eps": 0.1},
           "apo_zero": {"beta": 0.6}, "apo_down": {"beta": 0.45},
           "discopop": {"beta": 0.07, "tau": 0.09}, "sigmoid_norm": {"beta": 0.8}}
NEW = ("exo_pair", "nca_pair", "robust", "bco_pair", "aot", "aot_unpaired", "apo_zero",
       "apo_down", "discopop", "sigmoid_norm")


def sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def nlog_sig(z):  # −log σ(z)
    return np.log1p(np.exp(-z))


def sig_slope(z):  # σ′(z)
    return sig(z) * (1 - sig(z))


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
    if name == "exo_pair":  # KL(p_θ ‖ p_label) over {y_w, y_l}, p_θ = softmax(β log π/π_ref)
        s_w, s_l = h["beta"] * np.log(np.exp(lw - rw)), h["beta"] * np.log(np.exp(ll - rl))
        p_w = np.exp(s_w) / (np.exp(s_w) + np.exp(s_l))
        p_l = 1 - p_w
        return p_w * np.log(p_w / (1 - h["eps"])) + p_l * np.log(p_l / h["eps"])
    if name == "nca_pair":  # −Σ_i [p_i log σ(r_i) + (1/K) log σ(−r_i)], K = 2, p = (1, 0)
        total = 0.0
        for p_i, r_i in ((1.0, h["beta"] * (lw - rw)), (0.0, h["beta"] * (ll - rl))):
            total = total - p_i * np.log(sig(r_i)) - 0.5 * np.log(sig(-r_i))
        return total
    if name == "robust":  # ((1 − ε) ℓ(y_w ≻ y_l) − ε ℓ(y_l ≻ y_w)) / (1 − 2ε), ℓ the DPO loss
        dpo_wl = -np.log(sig(h["beta"] * ((lw - rw) - (ll - rl))))
        dpo_lw = -np.log(sig(h["beta"] * ((ll - rl) - (lw - rw))))
        return ((1 - h["eps"]) * dpo_wl - h["eps"] * dpo_lw) / (1 - 2 * h["eps"])
    if name == "bco_pair":  # binary cross-entropy, y_w labelled 1, y_l labelled 0
        return (-np.log(sig(h["beta"] * (lw - rw) - h["delta"]))
                - np.log(1 - sig(h["beta"] * (ll - rl) - h["delta"])))
    if name in ("aot", "aot_unpaired"):  # TRL's sorted form on a batch of one pair each
        if name == "aot":
            pol = np.sort((lw - ll)[:, None], axis=1)[:, 0]
            ref = np.sort((rw - rl)[:, None], axis=1)[:, 0]
        else:
            pol = np.sort((lw - rw)[:, None], axis=1)[:, 0]
            ref = np.sort((ll - rl)[:, None], axis=1)[:, 0]
        p = sig(h["beta"] * (pol - ref))  # label-smoothed cross-entropy
        return -((1 - h["eps"]) * np.log(p) + h["eps"] * np.log(1 - p))
    if name == "apo_zero":
        return -sig(h["beta"] * np.log(np.exp(lw) / np.exp(rw))) + sig(
            h["beta"] * np.log(np.exp(ll) / np.exp(rl)))
    if name == "apo_down":
        return sig(h["beta"] * (lw - rw)) - sig(h["beta"] * (lw - rw) - h["beta"] * (ll - rl))
    if name == "discopop":
        z = h["beta"] * ((lw - ll) - (rw - rl))
        m = sig(z / h["tau"])
        return (1 - m) * -np.log(sig(z)) + m * np.exp(-z)
    if name == "sigmoid_norm":
        return nlog_sig(h["beta"] * (lw - rw) / nw - h["beta"] * (ll - rl) / nl)
    raise KeyError(name)


def hand_weights(name, lw, ll, rw, rl, nw, nl, h):
    """d_w, d_l by hand (docs/design.md §1.1; R-DPO, SPPO, ORPO, RRHF as derived in their docstrings)."""
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
    beta, r_w, r_l = h.get("beta"), lw - rw, ll - rl
    z = beta * (r_w - r_l)
    if name == "exo_pair":
        d = beta * sig_slope(z) * (np.log((1 - h["eps"]) / h["eps"]) - z)
        return d, d
    if name == "nca_pair":
        return beta * (sig(-beta * r_w) - 0.5 * sig(beta * r_w)), 0.5 * beta * sig(beta * r_l)
    if name == "robust":
        d = beta * ((1 - h["eps"]) * sig(-z) + h["eps"] * sig(z)) / (1 - 2 * h["eps"])
        return d, d
    if name == "bco_pair":
        return beta * sig(h["delta"] - beta * r_w), beta * sig(beta * r_l - h["delta"])
    if name in ("aot", "aot_unpaired"):
        d = beta * ((1 - h["eps"]) * sig(-z) - h["eps"] * sig(z))
        return d, d
    if name == "apo_zero":
        return beta * sig_slope(beta * r_w), beta * sig_slope(beta * r_l)
    if name == "apo_down":
        return beta * (sig_slope(z) - sig_slope(beta * r_w)), beta * sig_slope(z)
    if name == "discopop":
        m = sig(z / h["tau"])
        d = beta * ((1 - m) * sig(-z) + m * np.exp(-z)
                    - m * (1 - m) / h["tau"] * (np.exp(-z) - nlog_sig(z)))
        return d, d
    if name == "sigmoid_norm":
        s = beta * sig(-beta * (r_w / nw - r_l / nl))
        return s / nw, s / nl
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
    for name in ("dpo", "simpo", "orpo", "sppo", *NEW):
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
    ("exo_pair", {"label_smoothing": 0.0}), ("exo_pair", {"eps": 0.5}),
    ("nca_pair", {"beta": -0.1}), ("nca_pair", {"label_smoothing": 0.1}),
    ("robust", {"label_smoothing": 0.5}), ("robust", {"eps": -0.1}),
    ("robust", {"eps": 0.1, "label_smoothing": 0.1}), ("bco_pair", {"delta": float("inf")}),
    ("bco_pair", {"beta": 0.0}), ("aot", {"label_smoothing": 0.7}), ("aot_unpaired", {"beta": 0}),
    ("aot_pair", {"eps": float("nan")}), ("apo_zero", {"beta": -1.0}), ("apo_down", {"eps": 0.1}),
    ("discopop", {"tau": 0.0}), ("discopop", {"tau": 0.1, "discopop_tau": 0.2}),
    ("sigmoid_norm", {"gamma": 1.0}), ("sigmoid_norm", {"beta": 0.0}),
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


# --------------------------------------------------------------------------------------------
# TRL's other pairwise losses: names, TRL's own formulas, and the sign structure of d_w, d_l
# --------------------------------------------------------------------------------------------

def test_new_losses_accept_their_trl_names_and_hyperparameters():
    """Each TRL ``loss_type`` name is accepted with TRL's hyperparameter names."""
    assert OBJECTIVES[-len(NEW):] == NEW
    trl = {"exo_pair": {"beta": 0.2, "label_smoothing": 1e-3}, "nca_pair": {"beta": 0.2},
           "robust": {"beta": 0.2, "label_smoothing": 0.2}, "bco_pair": {"beta": 0.2},
           "aot": {"beta": 0.2, "label_smoothing": 0.1},
           "aot_unpaired": {"beta": 0.2, "label_smoothing": 0.1}, "apo_zero": {"beta": 0.2},
           "apo_down": {"beta": 0.2}, "discopop": {"beta": 0.2, "discopop_tau": 0.1},
           "sigmoid_norm": {"beta": 0.2}}
    for name, hparams in trl.items():
        objective = get_objective(name.upper(), **hparams)
        assert objective.name == name and objective.beta == 0.2
        assert np.all(np.isfinite(np.asarray(objective.loss(*INPUTS))))
    assert dict(get_objective("robust", label_smoothing=0.2).hparams)["eps"] == 0.2
    assert dict(get_objective("discopop", discopop_tau=0.1).hparams)["tau"] == 0.1
    assert get_objective("aot_pair").name == "aot_unpaired"  # older TRL's name for it
    assert get_objective("lrml").name == "discopop" and get_objective("nca").name == "nca_pair"
    assert get_objective("rdpo").name == "rdpo"  # R-DPO; robust DPO is "robust"
    assert dict(get_objective("discopop").hparams) == {"beta": 0.05, "tau": 0.05}
    margin_based = {name: get_objective(name).margin_based for name in NEW}
    assert [n for n, m in margin_based.items() if not m] == ["nca_pair", "bco_pair", "apo_zero"]


def test_new_losses_match_trl_formulas():
    """TRL's per-sequence losses (``DPOTrainer._compute_loss``), transcribed: equal to ours, or
    (APO) ours plus the constant 1, which TRL adds and the paper does not."""
    beta, eps, tau = 0.25, 0.1, 0.05
    r_w, r_l = LOGP_W - REF_W, LOGP_L - REF_L
    logits = beta * (r_w - r_l)
    ls = lambda z: -nlog_sig(z)  # noqa: E731  (log σ)
    cases = {
        ("exo_pair", (("beta", beta), ("label_smoothing", eps))):
            sig(logits) * (ls(logits) - np.log1p(-eps))
            + sig(-logits) * (ls(-logits) - np.log(eps)),
        ("nca_pair", (("beta", beta),)):
            -ls(beta * r_w) - 0.5 * ls(-beta * r_w) - 0.5 * ls(-beta * r_l),
        ("robust", (("beta", beta), ("label_smoothing", eps))):
            (-(1 - eps) * ls(logits) + eps * ls(-logits)) / (1 - 2 * eps),
        ("bco_pair", (("beta", beta),)): -ls(beta * r_w) - ls(-beta * r_l),  # TRL now: δ = 0
        ("aot", (("beta", beta), ("label_smoothing", eps))):
            -ls(logits) * (1 - eps) - ls(-logits) * eps,
        ("apo_zero", (("beta", beta),)): 1 - sig(beta * r_w) + sig(beta * r_l) - 1,
        ("apo_down", (("beta", beta),)): sig(beta * r_w) + 1 - sig(logits) - 1,
        ("discopop", (("beta", beta), ("discopop_tau", tau))):
            -ls(logits) * (1 - sig(logits / tau)) + np.exp(-logits) * sig(logits / tau),
        ("sigmoid_norm", (("beta", beta),)): -ls(beta * (r_w / LEN_W - r_l / LEN_L)),
    }
    for (name, hparams), want in cases.items():
        got = get_objective(name, **dict(hparams)).loss(*INPUTS)
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5, err_msg=name)


def _grid():
    """Pairs on a grid of rewards r_w, r_l ∈ [−30, 30] (policy log-probs around −15)."""
    r_w, r_l = (x.ravel() for x in np.meshgrid(np.linspace(-30, 30, 61), np.linspace(-30, 30, 61)))
    rng = np.random.default_rng(1)
    lens = rng.integers(1, 9, (2, r_w.size)).astype(float)
    return (-15.0 + r_w, -15.0 + r_l, np.full_like(r_w, -15.0), np.full_like(r_w, -15.0),
            *lens), r_w, r_l


@pytest.mark.parametrize("name, hparams", [
    ("robust", HPARAMS["robust"]), ("bco_pair", HPARAMS["bco_pair"]),
    ("apo_zero", HPARAMS["apo_zero"]), ("sigmoid_norm", HPARAMS["sigmoid_norm"]),
    ("aot", {"beta": 0.25, "eps": 0.0}), ("aot_unpaired", {"beta": 0.4, "eps": 0.0}),
])
def test_losses_whose_weights_are_always_positive(name, hparams):
    """d_w, d_l > 0 for every pair: the gradient condition's regime that excludes case 4."""
    inputs, _, _ = _grid()
    d_w, d_l = (np.asarray(d) for d in get_objective(name, **hparams).weights(*inputs))
    assert np.all(d_w > 0) and np.all(d_l > 0)


def test_weights_that_change_sign_do_so_where_the_closed_forms_say():
    """The losses with a d ≤ 0 region, with the region stated (points near its edge skipped)."""
    inputs, r_w, r_l = _grid()

    def weights(name):
        return (np.asarray(d, np.float64) for d in get_objective(name, **HPARAMS[name])
                .weights(*inputs))

    def check(d, positive_where, edge_distance):
        far = np.abs(edge_distance) > 1e-2
        assert np.any(~positive_where[far]) and np.any(positive_where[far])  # both regions hit
        np.testing.assert_array_equal(d[far] > 0, positive_where[far])

    h = HPARAMS["exo_pair"]  # EXO: d_w = d_l > 0 iff βh below the target log((1 − ε)/ε)
    d_w, d_l = weights("exo_pair")
    target = np.log((1 - h["eps"]) / h["eps"])
    check(d_w, h["beta"] * (r_w - r_l) < target, h["beta"] * (r_w - r_l) - target)
    np.testing.assert_array_equal(d_w, d_l)
    h = HPARAMS["nca_pair"]  # NCA: d_l > 0 always; d_w > 0 iff β r_w < log 2
    d_w, d_l = weights("nca_pair")
    check(d_w, h["beta"] * r_w < np.log(2), h["beta"] * r_w - np.log(2))
    assert np.all(d_l > 0)
    d_w, d_l = weights("apo_down")  # APO-down: d_l > 0 always; d_w > 0 iff |r_w| > |r_w − r_l|
    check(d_w, np.abs(r_w) > np.abs(r_w - r_l), HPARAMS["apo_down"]["beta"]
          * (np.abs(r_w) - np.abs(r_w - r_l)))
    assert np.all(d_l > 0)
    h = HPARAMS["aot"]  # AOT with label smoothing ε > 0: like EXO, a target log((1 − ε)/ε)
    d_w, _ = weights("aot")
    target = np.log((1 - h["eps"]) / h["eps"])
    check(d_w, h["beta"] * (r_w - r_l) < target, h["beta"] * (r_w - r_l) - target)


def test_discopop_pushes_the_margin_down_at_the_start():
    """DiscoPOP's d_w = d_l is negative near zero margin: at z = 0 it is β(3/4 − (1 − log 2)/(4τ)),
    −0.78β for the paper's τ = 0.05, so a step from the reference shrinks the margin; d > 0 again
    for |z| ≥ 0.2."""
    beta, tau = 0.05, 0.05
    objective = get_objective("discopop")
    z = np.array([-3.0, -1.0, -0.5, -0.2, 0.0, 0.2, 0.5, 1.0, 3.0])
    d_w, d_l = (np.asarray(d) for d in objective.weights(z / beta, 0.0, 0.0, 0.0, 1, 1))
    np.testing.assert_array_equal(d_w, d_l)
    np.testing.assert_allclose(d_w[4], beta * (0.75 - (1 - np.log(2)) / (4 * tau)), rtol=1e-5)
    assert d_w[4] < 0 and np.all(np.delete(d_w, 4) > 0)


def test_case_4_needs_a_nonpositive_weight():
    """With the new losses' own weights: case 4 never occurs where d_w, d_l > 0 (random
    geometries), and it does occur, for a suitable geometry, at a pair where a weight is ≤ 0."""
    rng = np.random.default_rng(2)
    g_w, g_l = rng.normal(size=(2, 500, 16)) * rng.uniform(0.1, 10, size=(2, 500, 1))
    g_l += rng.uniform(-2, 2, size=(500, 1)) * g_w
    sq_w, sq_l, inner = (np.sum(a * b, 1) for a, b in ((g_w, g_w), (g_l, g_l), (g_w, g_l)))
    idx = rng.integers(0, N, 500)
    for name in NEW:
        d_w, d_l = (np.asarray(d, np.float64)[idx]
                    for d in get_objective(name, **HPARAMS[name]).weights(*INPUTS))
        positive = (d_w > 0) & (d_l > 0)
        cases = gradient_condition(d_w, d_l, sq_w, sq_l, inner).case
        assert not np.any(cases[positive] == 4), name
    # one pair each (log π_w, log π_l, log π_ref,w, log π_ref,l) with a negative weight, and a
    # geometry (g_w, g_l) that puts its first-order step in case 4 (w falls, l rises)
    unit, other, anti = np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([-0.1, 0.0])
    examples = {"exo_pair": ((-1.0, -30.0, -1.0, -1.0), other),  # βh past the target: d < 0
                "nca_pair": ((-0.5, -1.0, -5.0, -1.0), anti),    # β r_w > log 2: d_w < 0 < d_l
                "apo_down": ((-1.0, -10.0, -1.0, -20.0), anti),  # |r_w| < |h|: d_w < 0 < d_l
                "aot": ((-1.0, -70.0, -1.0, -1.0), other),       # βh past the target: d < 0
                "discopop": ((-1.0, -1.0, -1.0, -1.0), other)}   # zero margin: d < 0
    for name, (logps, g_l) in examples.items():
        d_w, d_l = (float(d) for d in get_objective(name, **HPARAMS[name]).weights(*logps, 1, 1))
        assert d_w < 0, name
        assert gradient_condition(d_w, d_l, 1.0, g_l @ g_l, unit @ g_l).case == 4, name


@pytest.mark.parametrize("name", ["aot", "aot_unpaired"])
def test_aot_batch_weights_are_the_per_pair_formula_at_the_matched_rank(name):
    """TRL sorts over the batch; pair j's d_w (d_l) is then (1/B) β φ(δ_k), φ(δ) = (1 − ε)σ(−βδ) −
    εσ(βδ), at the rank k of its own log-ratio: the per-pair formula at a rank-matched δ."""
    import jax
    import jax.numpy as jnp

    beta, eps = 0.25, 0.05
    lw, ll, rw, rl = (jnp.asarray(x[:16]) for x in INPUTS[:4])

    def batch_loss(lw, ll):
        if name == "aot":  # sort the policy's and the reference's chosen-vs-rejected log-ratios
            first, second = jnp.sort(lw - ll), jnp.sort(rw - rl)
        else:  # sort the chosen and the rejected implicit rewards
            first, second = jnp.sort(lw - rw), jnp.sort(ll - rl)
        delta = first - second
        return jnp.mean(-(1 - eps) * jax.nn.log_sigmoid(beta * delta)
                        - eps * jax.nn.log_sigmoid(-beta * delta))

    grad_w, grad_l = jax.grad(batch_loss, argnums=(0, 1))(lw, ll)
    w, l_, ref_w, ref_l = (np.asarray(x, np.float64) for x in (lw, ll, rw, rl))
    if name == "aot":
        delta = np.sort(w - l_) - np.sort(ref_w - ref_l)
        rank_w = rank_l = np.argsort(np.argsort(w - l_))
    else:
        delta = np.sort(w - ref_w) - np.sort(l_ - ref_l)
        rank_w, rank_l = np.argsort(np.argsort(w - ref_w)), np.argsort(np.argsort(l_ - ref_l))
    phi = beta * ((1 - eps) * sig(-beta * delta) - eps * sig(beta * delta)) / len(w)
    np.testing.assert_allclose(-np.asarray(grad_w), phi[rank_w], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(np.asarray(grad_l), phi[rank_l], rtol=1e-4, atol=1e-8)
    if name == "aot_unpaired":  # the chosen and the rejected of a pair sit at different ranks
        assert np.any(rank_w != rank_l)
    # a batch of one is the per-pair loss
    rw, rl = rw[:1], rl[:1]
    np.testing.assert_allclose(float(batch_loss(lw[:1], ll[:1])), float(
        get_objective(name, beta=beta, eps=eps).loss(w[0], l_[0], ref_w[0], ref_l[0], 1, 1)),
        rtol=1e-6)


def test_new_losses_and_weights_are_finite_for_extreme_rewards():
    """float32, rewards up to ±10⁴ nats: DiscoPOP's m e^{−z} is computed as exp(log m − z)."""
    r = np.concatenate([-np.logspace(-3, 4, 15), [0.0], np.logspace(-3, 4, 15)])
    r_w, r_l = (x.ravel() for x in np.meshgrid(r, r))
    for name in NEW:
        objective = get_objective(name)
        args = (r_w - 5.0, r_l - 5.0, -5.0, -5.0, 3, 4)
        for value in (objective.loss(*args), *objective.weights(*args)):
            assert np.all(np.isfinite(np.asarray(value))), name


@pytest.mark.parametrize("name, hparams, beta", [("dpo", {"beta": 0.3}, 0.3),
                                                 ("ipo", {"tau": 0.2}, 0.2),
                                                 ("orpo", {"lam": 0.5}, 0.5),
                                                 ("sppo_hard", {"eta": 4.0}, 0.25),
                                                 ("rrhf", {}, 1.0)])
def test_reward_beta_is_the_one_trl_uses(name, hparams, beta):
    """TRL's rewards/* metrics scale by its ``beta``: IPO's τ, ORPO's λ, SPPO's 1/η."""
    assert get_objective(name, **hparams).beta == pytest.approx(beta)
