"""The gradient condition: case 4 is impossible, the DPO margin grows to first order, and the
first-order prediction matches real steps with an error that shrinks as η²."""

import json

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entangle_jax.checkpoint import save_checkpoint
from entangle_jax.cli import main
from entangle_jax.condition import auto_learning_rate, case_of, gradient_condition
from entangle_jax.dynamics import (batch_update_check, one_step_check, step_check, to_float64,
                                   update_changes)
from entangle_jax.gradients import pair_geometry, token_grams
from entangle_jax.logprob import sequence_logprob
from entangle_jax.objectives import get_objective

small_ints = st.integers(-20, 20)


@st.composite
def integer_pairs(draw):
    """Integer gradient vectors and positive integer weights: float64 arithmetic on them is exact."""
    n = draw(st.integers(1, 8))
    g_w = np.array(draw(st.lists(small_ints, min_size=n, max_size=n)), np.float64)
    g_l = np.array(draw(st.lists(small_ints, min_size=n, max_size=n)), np.float64)
    return g_w, g_l, float(draw(st.integers(1, 100))), float(draw(st.integers(1, 100)))


@settings(max_examples=300, deadline=None)
@given(integer_pairs())
def test_case_4_never_occurs_exact(sample):
    g_w, g_l, d_w, d_l = sample
    cond = gradient_condition(d_w, d_l, g_w @ g_w, g_l @ g_l, g_w @ g_l)
    assert cond.case != 4
    dpo = gradient_condition(d_w, d_w, g_w @ g_w, g_l @ g_l, g_w @ g_l)
    assert dpo.delta_w - dpo.delta_l >= 0  # = d‖g_w − g_l‖² for d_w = d_l


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 64))
def test_case_matches_the_threshold_conditions(seed, dim):
    """With d_w, d_l > 0: log π_w rises iff ⟨g_w,g_l⟩ < (d_w/d_l)‖g_w‖², log π_l falls iff
    ⟨g_w,g_l⟩ < (d_l/d_w)‖g_l‖²; and never case 4, for random float vectors."""
    rng = np.random.default_rng(seed)
    g_w, g_l = rng.normal(size=(2, dim)) * rng.uniform(0.01, 10, size=(2, 1))
    g_l += rng.uniform(-2, 2) * g_w  # correlated pairs of either sign
    d_w, d_l = rng.uniform(0.01, 5, 2)
    cond = gradient_condition(d_w, d_l, g_w @ g_w, g_l @ g_l, g_w @ g_l)
    assert cond.case != 4
    inner = g_w @ g_l
    if abs(cond.margin_w) > 1e-9 * abs(inner) + 1e-12:
        assert (cond.delta_w > 0) == (inner < d_w / d_l * (g_w @ g_w))
    if abs(cond.margin_l) > 1e-9 * abs(inner) + 1e-12:
        assert (cond.delta_l < 0) == (inner < d_l / d_w * (g_l @ g_l))


def test_margin_can_shrink_when_weights_differ():
    """The first-order margin d_w‖g_w‖² − (d_w+d_l)⟨g_w,g_l⟩ + d_l‖g_l‖² is ≥ 0 for d_w = d_l only:
    g_l = 2 g_w, d_w = 3, d_l = 1 gives 3 − 8 + 4 = −1 per ‖g_w‖² (both rise, l faster)."""
    g = np.array([1.0, 0.0])
    cond = gradient_condition(3.0, 1.0, g @ g, 4 * g @ g, 2 * g @ g)
    assert cond.delta_w - cond.delta_l == -1.0 and cond.case == 3


@pytest.mark.parametrize("suffix_length", [0, 2, 6])
def test_no_case_4_and_dpo_margin_grows_on_real_gradients(make_pairs, tiny_ckpt, suffix_length):
    geo = pair_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, make_pairs(suffix_length, 6))
    rng = np.random.default_rng(suffix_length)
    d_w, d_l = rng.uniform(1e-3, 10.0, (2, 2000, 1))
    cond = gradient_condition(d_w, d_l, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
    assert not np.any(cond.case == 4)
    dpo = gradient_condition(d_w, d_w, geo.sq_norm_w, geo.sq_norm_l, geo.inner)
    assert np.all(dpo.delta_w - dpo.delta_l >= 0)


@pytest.fixture(scope="module")
def model64(tiny_ckpt):
    """The tiny checkpoint in float64: ``(graphdef, params)``."""
    with jax.enable_x64(True):
        return to_float64(tiny_ckpt.model_config, tiny_ckpt.params)


@pytest.mark.parametrize("name, suffix_length", [("dpo", 6), ("cpo", 2), ("sppo", 0)])
def test_one_step_error_shrinks_as_eta_squared(make_pairs, model64, name, suffix_length):
    pairs = make_pairs(suffix_length, 6)
    objective = get_objective(name)
    graphdef, params64 = model64
    with jax.enable_x64(True):
        probe = one_step_check(graphdef, params64, pairs, objective)
        eta = auto_learning_rate(probe.rate_w, probe.rate_l, 0.05)
        lrs = [eta * 0.5 ** k for k in range(4)]
        check = one_step_check(graphdef, params64, pairs, objective, lrs)
        geo = pair_geometry(graphdef, params64, pairs)
    # the rates ⟨g, u⟩ equal the closed form built from the independently computed geometry
    np.testing.assert_allclose(check.rate_w, check.d_w * geo.sq_norm_w - check.d_l * geo.inner,
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(check.rate_l, check.d_w * geo.inner - check.d_l * geo.sq_norm_l,
                               rtol=1e-9, atol=1e-12)
    errors = check.mean_error()
    assert np.all(errors[:-1] / errors[1:] > 3.5) and np.all(errors[:-1] / errors[1:] < 4.5)
    assert 1.9 < check.error_order() < 2.1
    assert np.median(check.relative_error(3)) < np.median(check.relative_error(0)) / 6
    assert check.sign_agreement(3) == (1.0, 1.0)
    assert np.array_equal(check.condition(0).case, check.predicted_case)


def test_update_changes_match_finite_differences(make_pairs, model64):
    pairs = make_pairs(2, 4)
    graphdef, params64 = model64
    with jax.enable_x64(True):
        leaves, treedef = jax.tree.flatten(params64)
        keys = jax.random.split(jax.random.key(0), len(leaves))
        u = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                         for k, x in zip(keys, leaves)])
        _, rate = update_changes(graphdef, params64, pairs.chosen, u)
        eps = 1e-6  # central differences: truncation O(eps²‖u‖³), rounding O(1e-16/eps)

        def at(scale):
            p = jax.tree.map(lambda x, d: x + scale * d, params64, u)
            return np.array([sequence_logprob(graphdef, p, pairs.chosen[i])
                             for i in range(len(pairs))])

        fd = (at(eps) - at(-eps)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(rate), fd, rtol=1e-7, atol=1e-8)


def _flat_grad(graphdef, params, seq):
    g = jax.grad(lambda p: sequence_logprob(graphdef, p, seq))(params)
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)])


def test_batched_sgd_first_order_is_the_empirical_ntk_form(make_pairs, model64):
    """Δf_i ≈ (η/B) Σ_j d_w,j⟨g_i, g_w,j⟩ − d_l,j⟨g_i, g_l,j⟩ from flattened per-example gradients."""
    pairs = make_pairs(6, 5)
    objective, lr = get_objective("dpo"), 1e-3
    graphdef, params64 = model64
    with jax.enable_x64(True):
        check = batch_update_check(graphdef, params64, pairs, objective, "sgd", lr)
        gw = np.stack([_flat_grad(graphdef, params64, pairs.chosen[i])
                       for i in range(len(pairs))])
        gl = np.stack([_flat_grad(graphdef, params64, pairs.rejected[i])
                       for i in range(len(pairs))])
    d = 0.1 * 0.5  # β σ(0): the policy is its own reference
    u = lr / len(pairs) * (d * gw - d * gl).sum(0)
    np.testing.assert_allclose(check.first_order_w, gw @ u, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(check.first_order_l, gl @ u, rtol=1e-9, atol=1e-14)
    own_w = lr / len(pairs) * d * (np.sum(gw * gw, 1) - np.sum(gw * gl, 1))
    np.testing.assert_allclose(check.own_w, own_w, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(check.actual_w, check.first_order_w,
                               rtol=1e-2, atol=1e-3 * np.abs(check.first_order_w).max())


def test_adam_step_tracks_its_first_order_change(make_pairs, model64):
    pairs = make_pairs(6, 6)
    graphdef, params64 = model64
    with jax.enable_x64(True):
        check = batch_update_check(graphdef, params64, pairs, get_objective("dpo"),
                                   "adam", 1e-5)
    scale = np.abs(check.first_order_w).max()
    np.testing.assert_allclose(check.actual_w, check.first_order_w, atol=0.02 * scale)
    assert np.all(np.isnan(check.own_w))
    assert np.array_equal(check.case_actual, case_of(check.actual_w, check.actual_l))


def test_token_coefficients_match_token_grams(make_pairs, tiny_ckpt):
    """A mask on the sentiment token only: u = d(g_w^0 − g_l^0), so ⟨g_w, u⟩ = d Σ_i(C[i,0] − M[i,0])
    with the token Grams C = ⟨g_w^i, g_w^j⟩, M = ⟨g_w^i, g_l^j⟩, R = ⟨g_l^i, g_l^j⟩."""
    pairs = make_pairs(6, 4)
    window, d = pairs.chosen.window, np.full(len(pairs), 0.3)
    mask = np.zeros((len(pairs), window))
    mask[:, 0] = 1.0
    check = step_check(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, d[:, None] * mask,
                       d[:, None] * mask)
    grams = token_grams(tiny_ckpt.graphdef, tiny_ckpt.params, pairs)
    want_w = 0.3 * (grams.chosen[:, :, 0].sum(1) - grams.cross[:, :, 0].sum(1))
    want_l = 0.3 * (grams.cross[:, 0, :].sum(1) - grams.rejected[:, :, 0].sum(1))
    np.testing.assert_allclose(check.rate_w, want_w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(check.rate_l, want_l, rtol=1e-4, atol=1e-4)
    uniform = step_check(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, d, d)
    ones = step_check(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, d[:, None] * np.ones(
        (len(pairs), window)), d[:, None] * np.ones((len(pairs), window)))
    np.testing.assert_allclose(ones.rate_w, uniform.rate_w, rtol=1e-5)
    assert np.all(np.isnan(check.d_w)) and np.array_equal(uniform.d_w, d)


def test_negative_step_is_the_reversed_update(make_pairs, tiny_ckpt):
    """A step of −η on u moves the parameters as a step of η on −u (the verify claim's negative
    control is taken that way, from the same gradients): the two real changes agree, and
    ``select`` keeps the chosen step sizes' rows."""
    pairs = make_pairs(4, 2)
    d = np.full(len(pairs), 0.5)
    both = step_check(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, d, d, [1e-2, -1e-2])
    reverse = step_check(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, -d, -d, [1e-2])
    back = both.select([1])
    assert back.lrs.tolist() == [-1e-2] and both.select(slice(0, 1)).lrs.tolist() == [1e-2]
    np.testing.assert_allclose(back.actual_w[0], reverse.actual_w[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(back.actual_l[0], reverse.actual_l[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(back.actual_case(0), reverse.actual_case(0))
    np.testing.assert_allclose(back.predicted(0)[0], reverse.predicted(0)[0], rtol=1e-6)
    with pytest.raises(ValueError, match="finite and nonzero"):
        step_check(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, d, d, [1e-2, 0.0])


def test_cli_dynamics_writes_json_and_table(tmp_path, tiny_ckpt, capsys):
    save_checkpoint(tmp_path / "ckpt", tiny_ckpt)
    out = tmp_path / "out"
    code = main(["dynamics", "--checkpoint", str(tmp_path / "ckpt"), "--objective", "dpo,simpo",
                 "--shape", "short", "--pairs", "4", "--halvings", "1", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "dynamics.json").read_text())
    assert [r["objective"] for r in report["results"]] == ["dpo", "simpo"]
    row = report["results"][0]
    assert row["shape"] == "short" and len(row["pairs"]["actual_w"]) == 4
    assert len(row["one_step"]["lrs"]) == 2 and "batch_adam" in row
    assert (out / "dynamics.md").read_text() in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--objective", "nope"],
                                  ["--objective", "dpo,ipo", "--hparam", "beta=1"],
                                  ["--objective", "dpo", "--hparam", "beta=0"],
                                  ["--shape", "huge"]])
def test_cli_dynamics_bad_arguments_exit_2(tmp_path, tiny_ckpt, argv, capsys):
    save_checkpoint(tmp_path / "ckpt", tiny_ckpt)
    assert main(["dynamics", "--checkpoint", str(tmp_path / "ckpt"), *argv]) == 2
    assert capsys.readouterr().err.startswith("entangle: error:")

