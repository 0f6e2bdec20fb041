"""The gradient geometry against independent computations: plain loops, finite differences,
the closed form of the output layer, and per-token loops."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from entangle_jax.config import ModelConfig
from entangle_jax.data import response_window, sentiment_pairs
from entangle_jax.gradients import output_layer_check, pair_geometry, sequence_gram, token_grams
from entangle_jax.logprob import sequence_logprob, token_logprobs
from entangle_jax.models import init_model


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _loop_geometry(graphdef, params, pairs):
    """One un-batched jax.grad per response, flattened and contracted in float64 numpy."""
    grad = jax.jit(jax.grad(lambda p, s: sequence_logprob(graphdef, p, s)))
    rows = []
    for k in range(len(pairs)):
        g_w, g_l = _flat(grad(params, pairs.chosen[k])), _flat(grad(params, pairs.rejected[k]))
        rows.append((g_w @ g_w, g_l @ g_l, g_w @ g_l))
    return np.array(rows)


@pytest.mark.parametrize("suffix_length", [0, 2, 6])
def test_vmap_path_matches_a_per_pair_loop(tiny_ckpt, make_pairs, suffix_length):
    pairs = make_pairs(suffix_length)
    geo = pair_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, chunk_size=4)
    ref = _loop_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, pairs)
    np.testing.assert_allclose(geo.sq_norm_w, ref[:, 0], rtol=1e-4)
    np.testing.assert_allclose(geo.sq_norm_l, ref[:, 1], rtol=1e-4)
    np.testing.assert_allclose(geo.inner, ref[:, 2], rtol=1e-4, atol=1e-4 * ref[:, :2].max())
    np.testing.assert_allclose(geo.cosine, ref[:, 2] / np.sqrt(ref[:, 0] * ref[:, 1]),
                               atol=1e-4)


def test_gradient_matches_finite_differences(tiny_data, make_pairs):
    """⟨g_w, v⟩ equals the central difference of log π_w along a random direction v (float64)."""
    jax.config.update("jax_enable_x64", True)
    try:
        cfg = ModelConfig(vocab_size=len(tiny_data.vocab), d_model=16, n_layers=1, n_heads=2,
                          d_mlp=32, param_dtype="float64")
        graphdef, params = nnx.split(init_model(cfg, seed=4))
        seq = make_pairs(6).chosen[0]
        f = jax.jit(lambda p: sequence_logprob(graphdef, p, seq))
        keys = jax.random.split(jax.random.key(0), len(jax.tree.leaves(params)))
        v = jax.tree.unflatten(jax.tree.structure(params),
                               [jax.random.normal(k, x.shape, jnp.float64)
                                for k, x in zip(keys, jax.tree.leaves(params))])
        eps = 1e-5
        shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, v)  # noqa: E731
        fd = (f(shifted(1.0)) - f(shifted(-1.0))) / (2 * eps)
        np.testing.assert_allclose(_flat(jax.grad(f)(params)) @ _flat(v), fd, rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_results_do_not_depend_on_chunk_size(tiny_ckpt, make_pairs):
    pairs = make_pairs(3, n=7)
    a = pair_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, chunk_size=3)
    b = pair_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, pairs, chunk_size=32)
    np.testing.assert_allclose(a.inner, b.inner, rtol=1e-5, atol=1e-5)
    assert a.inner.shape == (7,)


def test_group_breakdown_sums_to_the_inner_product(tiny_ckpt, make_pairs):
    geo = pair_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, make_pairs(6))
    groups = geo.group_inner()
    assert set(groups) == {"embeddings", "block0.attn", "block0.mlp", "norms", "unembedding"}
    np.testing.assert_allclose(sum(groups.values()), geo.inner, rtol=1e-5, atol=1e-4)


def _check_token_grams(graphdef, params, pairs):
    """Compare with per-token gradients from one jitted grad per response token (no jacrev)."""
    grams = token_grams(graphdef, params, pairs, chunk_size=2)
    grad = jax.jit(jax.grad(lambda p, s, i: token_logprobs(graphdef, p, s)[i]))
    per_token = lambda seq: np.stack([_flat(grad(params, seq, i))  # noqa: E731
                                      for i in range(int(seq.length))])
    for k in range(len(pairs)):
        j_w, j_l = per_token(pairs.chosen[k]), per_token(pairs.rejected[k])
        n = j_w.shape[0]
        scale = np.abs(j_w @ j_w.T).max()
        np.testing.assert_allclose(grams.cross[k, :n, :n], j_w @ j_l.T, atol=1e-4 * scale)
        np.testing.assert_allclose(grams.chosen[k, :n, :n], j_w @ j_w.T, atol=1e-4 * scale)
        np.testing.assert_allclose(grams.rejected[k, :n, :n], j_l @ j_l.T, atol=1e-4 * scale)
        assert not grams.cross[k, n:].any() and not grams.cross[k, :, n:].any()
    return grams


def test_token_gram_matches_a_per_token_loop_and_sums_to_inner(tiny_ckpt, make_pairs):
    pairs = make_pairs(6, n=3)
    grams = _check_token_grams(tiny_ckpt.graphdef, tiny_ckpt.params, pairs)
    geo = pair_geometry(tiny_ckpt.graphdef, tiny_ckpt.params, pairs)
    np.testing.assert_allclose(grams.cross.sum((1, 2)), geo.inner, rtol=1e-4,
                               atol=1e-4 * geo.sq_norm_w.max())
    np.testing.assert_allclose(grams.chosen.sum((1, 2)), geo.sq_norm_w, rtol=1e-4)


@pytest.mark.full_codegen
def test_full_codegen_tests_run_with_xlas_default_optimizations():
    assert "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")


@pytest.mark.full_codegen
def test_token_gram_on_a_4_layer_width_256_model(tiny_data):
    """The size at which jaxlib's CPU backend was seen to miscompile jit(jacrev) (docs/design.md §3)."""
    cfg = ModelConfig(vocab_size=len(tiny_data.vocab), d_model=256, n_layers=4, n_heads=4,
                      d_mlp=1024)
    graphdef, params = nnx.split(init_model(cfg, seed=1))
    pairs = sentiment_pairs(tiny_data.eval[:1], tiny_data.vocab, 6, cfg.max_len,
                            response_window(tiny_data.config))
    _check_token_grams(graphdef, params, pairs)


@pytest.mark.parametrize("tied", [False, True])
def test_output_layer_closed_form_matches_autodiff(tiny_data, tied):
    cfg = ModelConfig(vocab_size=len(tiny_data.vocab), d_model=16, n_layers=1, n_heads=2,
                      d_mlp=32, tie_embeddings=tied, unembed_bias=tied)
    graphdef, params = nnx.split(init_model(cfg, seed=2))
    pairs = sentiment_pairs(tiny_data.eval[:8], tiny_data.vocab, 2, cfg.max_len,
                            response_window(tiny_data.config))
    check = output_layer_check(graphdef, params, pairs)
    rel = np.abs(check.closed_form - check.autodiff) / np.abs(check.autodiff)
    assert rel.max() <= 1e-4
    assert (check.closed_form < 0).all()  # near-uniform softmax at init: Σp² < p_w + p_l


def test_closed_form_equals_the_full_models_unembedding_gradient(tiny_ckpt, make_pairs):
    """Untied, no bias: the full-model gradient restricted to W is (e_k − p) hᵀ exactly."""
    pairs = make_pairs(0)
    check = output_layer_check(tiny_ckpt.graphdef, tiny_ckpt.params, pairs)
    grad = jax.jit(jax.grad(lambda p, s: sequence_logprob(tiny_ckpt.graphdef, p, s)))
    for k in range(len(pairs)):
        w = np.asarray(grad(tiny_ckpt.params, pairs.chosen[k])["unembed"][...], np.float64)
        l_ = np.asarray(grad(tiny_ckpt.params, pairs.rejected[k])["unembed"][...], np.float64)
        np.testing.assert_allclose(check.closed_form[k], np.vdot(w, l_), rtol=1e-4)


def test_closed_form_in_float64(tiny_data):
    jax.config.update("jax_enable_x64", True)
    try:
        cfg = ModelConfig(vocab_size=len(tiny_data.vocab), d_model=16, n_layers=1, n_heads=2,
                          d_mlp=32, param_dtype="float64")
        graphdef, params = nnx.split(init_model(cfg, seed=3))
        assert jax.tree.leaves(params)[0].dtype == jnp.float64
        pairs = sentiment_pairs(tiny_data.eval[:4], tiny_data.vocab, 0, cfg.max_len,
                                response_window(tiny_data.config))
        check = output_layer_check(graphdef, params, pairs)
        np.testing.assert_allclose(check.closed_form, check.autodiff, rtol=1e-12)
        # the Gram keeps the parameters' precision (float32 rounding would lose the check above)
        gram = sequence_gram(graphdef, params, pairs)
        assert gram.dtype == np.float64
        np.testing.assert_allclose(gram[0, 0], pair_geometry(graphdef, params, pairs).sq_norm_w[0],
                                   rtol=1e-12)  # the first response is the first chosen one
    finally:
        jax.config.update("jax_enable_x64", False)
