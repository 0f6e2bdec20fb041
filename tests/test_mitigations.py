"""Mitigations: the pairwise normalized update is case 1 to first order; the token mask learns the
known optimum of a constructed case and reshapes the token Gram as its weights say."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entangle_jax.condition import case_of, gradient_condition
from entangle_jax.dynamics import coefficient_update, step_check, to_float64
from entangle_jax.gradients import pair_geometry, token_grams
from entangle_jax.logprob import batch_sequence_logprobs, pair_token_logprobs
from entangle_jax.mitigations import (PairwiseNormalized, Plain, TokenMask, make_method,
                                      mask_report, normalized_coefficients, pair_lengths)
from entangle_jax.objectives import get_objective


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 32), st.floats(-0.999, 0.999))
def test_normalized_update_is_case_1_for_any_geometry(seed, dim, target_cos):
    """Random g_w, g_l with a chosen cosine and norms far apart: the plain DPO step falls in every
    case but 4; the normalized step d(g_w/‖g_w‖ − g_l/‖g_l‖) is case 1, with the closed forms
    Δlog π_w = d‖g_w‖(1 − cos), Δlog π_l = −d‖g_l‖(1 − cos)."""
    rng = np.random.default_rng(seed)
    a, b = np.linalg.qr(rng.normal(size=(dim, 2)))[0].T
    g_w = rng.uniform(0.01, 100) * a
    g_l = rng.uniform(0.01, 100) * (target_cos * a + math.sqrt(1 - target_cos ** 2) * b)
    d = rng.uniform(0.01, 5)
    sq_w, sq_l, inner = g_w @ g_w, g_l @ g_l, g_w @ g_l
    c_w, c_l = (np.asarray(x) for x in normalized_coefficients(d, d, sq_w, sq_l))
    cond = gradient_condition(c_w, c_l, sq_w, sq_l, inner)
    assert cond.case == 1
    cos = inner / math.sqrt(sq_w * sq_l)
    np.testing.assert_allclose(cond.delta_w, d * math.sqrt(sq_w) * (1 - cos), rtol=1e-6)
    np.testing.assert_allclose(cond.delta_l, -d * math.sqrt(sq_l) * (1 - cos), rtol=1e-6)


@pytest.fixture(scope="module")
def long_pairs(make_pairs):
    return make_pairs(6, 6)


def test_normalized_coefficients_use_the_true_gradient_norms(tiny_ckpt, long_pairs):
    method = PairwiseNormalized(get_objective("dpo"))
    ref_w, ref_l = pair_token_logprobs(tiny_ckpt.graphdef, tiny_ckpt.params, long_pairs)
    c_w, c_l, out = jax.jit(method.coefficients, static_argnums=0)(
        tiny_ckpt.graphdef, tiny_ckpt.params, None, long_pairs, ref_w, ref_l)
    geo = pair_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, long_pairs)
    np.testing.assert_allclose(c_w[:, 0], out["d_w"] / np.sqrt(geo.sq_norm_w), rtol=1e-4)
    np.testing.assert_allclose(c_l[:, 0], out["d_l"] / np.sqrt(geo.sq_norm_l), rtol=1e-4)
    assert np.all(np.asarray(c_w) == np.asarray(c_w)[:, :1])  # the same on every token


@pytest.mark.parametrize("suffix_length", [0, 2, 6])
def test_normalized_real_step_is_case_1(tiny_ckpt, make_pairs, suffix_length):
    """On the real model: CPO's plain step is not case 1 (d_w ≫ d_l: both rise), the balanced
    normalized step is, to first order and in a real small step; unbalanced, its case follows
    cos < min(d_w/d_l, d_l/d_w)."""
    pairs = make_pairs(suffix_length, 6)
    cpo = get_objective("cpo")
    with jax.enable_x64(True):
        graphdef, params = to_float64(tiny_ckpt.model_config, tiny_ckpt.params)
        geo = pair_geometry(graphdef, params, pairs)
        d_w, d_l = (np.asarray(x) for x in cpo.weights(geo.logp_w, geo.logp_l, geo.logp_w,
                                                        geo.logp_l, 1 + suffix_length,
                                                        1 + suffix_length))
        plain = gradient_condition(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
        c_w, c_l = (np.asarray(x) for x in normalized_coefficients(
            d_w, d_l, geo.sq_norm_w, geo.sq_norm_l, balanced=True))
        scale = np.median(np.abs(c_w * geo.sq_norm_w))
        check = step_check(graphdef, params, pairs, c_w, c_l, [1e-3 / scale])
        u_w, u_l = (np.asarray(x) for x in normalized_coefficients(
            d_w, d_l, geo.sq_norm_w, geo.sq_norm_l))
        unbalanced = gradient_condition(u_w, u_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
    if suffix_length > 0:
        assert not np.any(plain.case == 1)
    assert np.all(check.predicted_case == 1) and np.all(check.actual_case(0) == 1)
    cos = geo.inner / np.sqrt(geo.sq_norm_w * geo.sq_norm_l)
    assert np.array_equal(unbalanced.case == 1, cos < np.minimum(d_w / d_l, d_l / d_w))


def test_plain_coefficients_give_the_loss_gradient(tiny_ckpt, long_pairs):
    """u from token coefficients c = d equals −∇ of the batch's mean loss, by direct autodiff."""
    graphdef, params = tiny_ckpt.graphdef, tiny_ckpt.params
    ref_w, ref_l = pair_token_logprobs(graphdef, params, long_pairs)
    ref_w, ref_l = ref_w - 0.3, ref_l + 0.2  # a reference apart from the policy
    for name in ("dpo", "orpo"):
        objective = get_objective(name)
        c_w, c_l, _ = Plain(objective).coefficients(graphdef, params, None, long_pairs, ref_w, ref_l)
        u = coefficient_update(graphdef, params, long_pairs, c_w, c_l)

        def mean_loss(p):
            return objective.loss(batch_sequence_logprobs(graphdef, p, long_pairs.chosen),
                                  batch_sequence_logprobs(graphdef, p, long_pairs.rejected),
                                  ref_w.sum(-1), ref_l.sum(-1), *pair_lengths(long_pairs)).mean()

        grad = jax.grad(mean_loss)(params)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(grad)):
            np.testing.assert_allclose(np.asarray(a), -np.asarray(b), rtol=1e-4, atol=1e-7)


def test_token_mask_learns_the_known_optimum():
    """DPO (β = 1) on fixed token log-ratio differences c = (3, 0.1, 0.1, −0.2) with λ = 0.5:
    min_m −log σ(c·m) + λ Σ m over [0,1]⁴. KKT: m_1..3 = 0 (σ(−z)·0.1 < λ) and the interior
    m_0 with 3 σ(−3 m_0) = λ, i.e. m_0 = ln 5 / 3."""
    method = TokenMask(get_objective("dpo", beta=1.0), l1=0.5, mask_learning_rate=0.5)
    c = jnp.array([[3.0, 0.1, 0.1, -0.2]])
    tok_w, tok_l = jnp.array([[-1.0, -2.0, -0.5, -0.3]]), jnp.array([[-4.0, -1.0, -0.7, -0.2]])
    outputs = {"tok_w": tok_w, "tok_l": tok_l}
    lengths = jnp.array([4.0]), jnp.array([4.0])
    step = jax.jit(lambda m: method.update_extra(m, outputs, tok_w - c, tok_l, *lengths))
    mask = method.init_extra(4)
    for _ in range(400):
        mask = step(mask)
    np.testing.assert_allclose(np.asarray(mask), [math.log(5) / 3, 0, 0, 0], atol=1e-5)


def test_full_mask_is_the_plain_objective(tiny_ckpt, long_pairs):
    graphdef, params = tiny_ckpt.graphdef, tiny_ckpt.params
    ref_w, ref_l = pair_token_logprobs(graphdef, params, long_pairs)
    objective = get_objective("dpo")
    mask = TokenMask(objective, l1=0.0)
    m_w, m_l, m_out = mask.coefficients(graphdef, params, mask.init_extra(long_pairs.chosen.window),
                                        long_pairs, ref_w - 0.1, ref_l)
    p_w, p_l, p_out = Plain(objective).coefficients(graphdef, params, None, long_pairs,
                                                    ref_w - 0.1, ref_l)
    np.testing.assert_allclose(np.asarray(m_w), np.asarray(p_w), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m_l), np.asarray(p_l), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m_out["loss"]), np.asarray(p_out["loss"]), rtol=1e-6)


def test_mask_report_reshapes_the_token_gram(tiny_ckpt, long_pairs):
    graphdef, params = tiny_ckpt.graphdef, tiny_ckpt.params
    window = long_pairs.chosen.window
    geo = pair_geometry(graphdef, params, long_pairs)
    full = mask_report(graphdef, params, np.ones(window), long_pairs)
    np.testing.assert_allclose(full["masked_inner"], geo.inner.mean(), rtol=1e-4)
    np.testing.assert_allclose(full["inner"], geo.inner.mean(), rtol=1e-4)
    np.testing.assert_allclose(full["cosine"], geo.cosine.mean(), rtol=1e-4)
    assert full["sentiment_share"] == pytest.approx(1 / 7)
    sentiment_only = mask_report(graphdef, params, np.eye(window)[0], long_pairs)
    grams = token_grams(graphdef, params, long_pairs)
    np.testing.assert_allclose(sentiment_only["masked_inner"], grams.cross[:, 0, 0].mean(),
                               rtol=1e-5)
    cos0 = grams.cross[:, 0, 0] / np.sqrt(grams.chosen[:, 0, 0] * grams.rejected[:, 0, 0])
    np.testing.assert_allclose(sentiment_only["masked_cosine"], cos0.mean(), rtol=1e-5)
    assert sentiment_only["sentiment_share"] == 1.0


def test_make_method_and_validation():
    dpo = get_objective("dpo")
    assert isinstance(make_method(dpo), Plain)
    assert make_method(dpo, "normalized", balanced=True).name == "dpo+normalized-balanced"
    assert make_method(dpo, "token_mask", mask_l1=0.1).l1 == 0.1
    from entangle_jax.config import ConfigError
    with pytest.raises(ConfigError):
        make_method(dpo, "dropout")
    with pytest.raises(ConfigError):
        TokenMask(dpo, l1=-1.0)
    assert case_of(np.array([1.0]), np.array([-1.0]))[0] == 1
