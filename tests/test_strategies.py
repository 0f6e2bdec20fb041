"""Every Gram strategy against the materialized reference and against plain per-example loops:
the default model, a tied-embedding model with an unembedding bias, a small random Llama (rotary
grouped-query attention, gated MLP, RMSNorm, tied embedding), and the 4-layer width-256 model at
which jaxlib's CPU backend was seen to miscompile jit(jacrev) (docs/design.md)."""

import jax
import numpy as np
import pytest
from flax import nnx

from entangle_jax import ghost, gradients, memory
from entangle_jax.config import ConfigError, LlamaConfig, ModelConfig
from entangle_jax.data import response_window, sentiment_pairs
from entangle_jax.gradients import (IMPLEMENTATIONS, _structured_pair_geometry_chunk,
                                    pair_geometry, pairs_as_responses, sequence_gram, token_grams)
from entangle_jax.data.pairs import Pairs, Responses
from entangle_jax.logprob import logits, sequence_logprob, token_logprobs
from entangle_jax.models import init_model

FAST = ("structured", "auto")


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _config(name: str, vocab_size: int):
    if name == "llama":
        return LlamaConfig(vocab_size=vocab_size, max_len=32)
    return ModelConfig(vocab_size=vocab_size, tie_embeddings=name == "tied_bias",
                       unembed_bias=name == "tied_bias")


@pytest.fixture(scope="module", params=["default", "tied_bias", "llama"])
def model(request, tiny_data):
    cfg = _config(request.param, len(tiny_data.vocab))
    graphdef, params = nnx.split(init_model(cfg, seed=3))
    pairs = sentiment_pairs(tiny_data.eval[:3], tiny_data.vocab, 4, cfg.max_len,
                            response_window(tiny_data.config))
    return graphdef, params, pairs


def _close(actual, expected, scale, tol=2e-5):
    np.testing.assert_allclose(actual, expected, atol=tol * scale, rtol=0)


def test_tapped_forward_reproduces_the_models_log_probs(model):
    """The taps come from the model's own forward pass: recording them changes no log-prob,
    every factored leaf's factors are recorded, and a plain call records nothing."""
    graphdef, params, pairs = model
    seq = pairs.chosen[0]
    logp, taps = ghost.record_taps(graphdef, params, seq, per_token=True)
    np.testing.assert_allclose(logp, token_logprobs(graphdef, params, seq), rtol=1e-6, atol=1e-6)
    shapes = ghost.tap_shapes(graphdef, params, seq, per_token=True)  # traced once, cached
    assert jax.tree.map(lambda x: (x.shape, x.dtype), shapes) == \
        jax.tree.map(lambda x: (x.shape, x.dtype), taps)
    for terms in ghost.leaf_terms(graphdef, params):
        for term in terms or ():
            assert term.shared in taps.inputs and term.rowed in taps.cotangents
            assert taps.cotangents[term.rowed].shape[0] == seq.window
    model_ = nnx.merge(graphdef, params)
    z = model_(seq.tokens)
    assert not any(hasattr(m, "__captures__") for _, m in nnx.iter_modules(model_))
    np.testing.assert_array_equal(z, logits(graphdef, params, seq.tokens))
    assert nnx.state(model_, nnx.Intermediate) == nnx.State({})


@pytest.mark.parametrize("strategy", ["ghost", "outer"])
def test_every_leaf_product_matches_jax_grad(model, strategy):
    """Per leaf, ⟨∇_leaf f_a, ∇_leaf f_b⟩ from the taps (ghost products, or the outer products
    where a leaf allows them) equals the product of the leaf's jax.grad."""
    graphdef, params, pairs = model
    terms = ghost.leaf_terms(graphdef, params)
    taps = [ghost.record_taps(graphdef, params, s, per_token=False)[1]
            for s in (pairs.chosen[1], pairs.rejected[1])]
    ids = {k for k, x in taps[0].inputs.items() if np.issubdtype(x.dtype, np.integer)}
    plan = tuple("exact" if t is None else
                 ("ghost" if strategy == "ghost" or any(x.shared in ids for x in t) else "outer")
                 for t in terms)
    assert "exact" in plan and (strategy == "ghost" or "outer" in plan)
    feats = [ghost.prepare(t, params, terms, plan) for t in taps]
    got = np.asarray(ghost.leaf_grams(feats[0], feats[1], terms))[:, 0, 0]
    grad = jax.grad(sequence_logprob, argnums=1)
    g_w, g_l = grad(graphdef, params, pairs.chosen[1]), grad(graphdef, params, pairs.rejected[1])
    want = np.array([np.vdot(np.asarray(a, np.float64), np.asarray(b, np.float64))
                     for a, b in zip(jax.tree.leaves(g_w), jax.tree.leaves(g_l))])
    _close(got, want, np.abs(want).max())


@pytest.mark.parametrize("implementation", FAST)
def test_pair_geometry_strategies_agree_with_materialize(model, implementation):
    graphdef, params, pairs = model
    ref = pair_geometry(graphdef, params, pairs, chunk_size=2)
    got = pair_geometry(graphdef, params, pairs, chunk_size=2, implementation=implementation)
    scale = max(ref.sq_norm_w.max(), ref.sq_norm_l.max())
    for field in ("sq_norm_w", "sq_norm_l", "inner"):
        _close(getattr(got, field), getattr(ref, field), scale)
    _close(got.leaf_inner, ref.leaf_inner, scale)
    np.testing.assert_allclose(got.logp_w, ref.logp_w, rtol=1e-6)


@pytest.mark.parametrize("implementation", FAST)
def test_token_gram_strategies_agree_with_materialize(model, implementation):
    graphdef, params, pairs = model
    ref = token_grams(graphdef, params, pairs[:1], chunk_size=1)
    got = token_grams(graphdef, params, pairs[:1], chunk_size=1, implementation=implementation)
    scale = np.abs(ref.chosen).max()
    for field in ("cross", "chosen", "rejected"):
        _close(getattr(got, field), getattr(ref, field), scale)


def _pairs_of_varied_lengths(tiny_data, model):
    """Pairs with suffixes of 9, 0 and 4 words, one padded length, not sorted by length."""
    graphdef, params, _ = model
    t, window = nnx.merge(graphdef, params).config.max_len, response_window(tiny_data.config)
    parts = [sentiment_pairs(tiny_data.eval[:2], tiny_data.vocab, suffix, t, window)
             for suffix in (9, 0, 4)]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_length_buckets_cut_padding_and_change_nothing(tiny_data, model, implementation,
                                                     monkeypatch):
    """Sorted by length, each chunk cut to its longest sequence rounded up to 4 tokens: the
    same statistics and token Grams, in the given order."""
    graphdef, params, _ = model
    pairs = _pairs_of_varied_lengths(tiny_data, model)
    longest = np.sort(pairs.widths()).reshape(3, 2).max(1)  # of each chunk of 2, sorted
    expected = (-(-longest // 4) * 4).tolist()
    assert len(set(expected)) > 1 and max(expected) < pairs.chosen.tokens.shape[-1]
    ref = pair_geometry(graphdef, params, pairs, chunk_size=2)
    cuts, cut = [], Pairs.cut
    monkeypatch.setattr(Pairs, "cut", lambda self, width: cuts.append(width) or cut(self, width))
    got = pair_geometry(graphdef, params, pairs, chunk_size=2, implementation=implementation,
                        length_bucket=4)
    assert cuts == expected
    scale = max(ref.sq_norm_w.max(), ref.sq_norm_l.max())
    for field in ("sq_norm_w", "sq_norm_l", "inner"):
        _close(getattr(got, field), getattr(ref, field), scale)
    np.testing.assert_allclose(got.logp_w, ref.logp_w, rtol=1e-6)
    ref_tg = token_grams(graphdef, params, pairs, chunk_size=2)
    got_tg = token_grams(graphdef, params, pairs, chunk_size=2, implementation=implementation,
                         length_bucket=4)
    for field in ("cross", "chosen", "rejected"):
        _close(getattr(got_tg, field), getattr(ref_tg, field), np.abs(ref_tg.chosen).max())


def test_cutting_padding_keeps_every_token_and_refuses_less(tiny_data, model):
    pairs = _pairs_of_varied_lengths(tiny_data, model)
    width = int(pairs.widths().max())
    cut = pairs.cut(width)
    assert cut.chosen.tokens.shape[-1] == width
    np.testing.assert_array_equal(cut.rejected.tokens, pairs.rejected.tokens[:, :width])
    with pytest.raises(ValueError, match="cannot cut"):
        pairs.cut(width - 1)
    with pytest.raises(ConfigError, match="length_bucket=0"):
        pair_geometry(*model[:2], pairs, length_bucket=0)


def test_sequence_gram_matches_a_per_response_loop(model):
    """K[a, b] = ⟨g_a, g_b⟩ over the 2B responses, every strategy, against flattened jax.grad."""
    graphdef, params, pairs = model
    responses = pairs_as_responses(pairs)
    grad = jax.jit(jax.grad(lambda p, s: sequence_logprob(graphdef, p, s)))
    flat = np.stack([_flat(grad(params, responses[k])) for k in range(2 * len(pairs))])
    want = flat @ flat.T
    for implementation in ("materialize", *FAST):
        got = sequence_gram(graphdef, params, pairs, implementation=implementation)
        _close(got, want, np.abs(want).max())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_sub_blocks_side_by_side_agree_with_one_block(model, monkeypatch, implementation):
    """A chunk split into sub-blocks on threads (including a padded last sub-block) gives the same
    exactly symmetric Gram as one block per chunk."""
    graphdef, params, pairs = model
    monkeypatch.setattr(gradients, "SIDE_BY_SIDE", 1)
    want = sequence_gram(graphdef, params, pairs, implementation=implementation)
    for parts, chunk_size in [(2, 6), (3, 6), (2, 4), (4, 3)]:  # 6 responses
        monkeypatch.setattr(gradients, "SIDE_BY_SIDE", parts)
        got = sequence_gram(graphdef, params, pairs, chunk_size=chunk_size,
                            implementation=implementation)
        _close(got, want, np.abs(want).max())
        np.testing.assert_array_equal(got, got.T)


def test_sequence_gram_blocks_agree_with_one_block(model):
    graphdef, params, pairs = model
    whole = sequence_gram(graphdef, params, pairs, implementation="auto")
    blocked = sequence_gram(graphdef, params, pairs, chunk_size=4, implementation="auto")
    _close(blocked, whole, np.abs(whole).max())


def test_auto_sequence_gram_forms_gradients_only_within_the_budget(model, monkeypatch):
    """Within ``memory.budget_bytes()`` auto forms per-example gradients; beyond it, it runs the
    per-leaf plan from taps (here a mix of ghost, outer and exact leaves), with the same Gram."""
    graphdef, params, pairs = model
    want = sequence_gram(graphdef, params, pairs)
    calls = []
    structured_block = gradients._structured_block
    monkeypatch.setattr(gradients, "_structured_block",
                        lambda *args: calls.append(args[-1]) or structured_block(*args))
    _close(sequence_gram(graphdef, params, pairs, implementation="auto"), want, np.abs(want).max())
    assert calls == []
    # room for one response's gradient: the chunk's do not fit, most single leaves' do
    monkeypatch.setenv(memory.BUDGET_VARIABLE, str(memory.tree_bytes(params)))
    _close(sequence_gram(graphdef, params, pairs, implementation="auto"), want, np.abs(want).max())
    assert {"ghost", "outer", "exact"} <= set(calls[0])


def _responses(seq_len: int) -> Responses:
    return Responses(np.ones((1, seq_len), np.int32), np.array([seq_len - 1], np.int32),
                     np.array([1], np.int32), 1)


def test_auto_plan_mixes_ghost_and_outer_by_cost():
    """Long sequences and few blocks favour forming Xᵀ G; many blocks of short rows favour ghost."""
    cfg = ModelConfig(vocab_size=64, max_len=64, d_model=32, n_layers=1, n_heads=2, d_mlp=64)
    graphdef, params = nnx.split(init_model(cfg))

    def plan(implementation, seq_len):
        return ghost.plan_leaves(graphdef, params, implementation, _responses(seq_len),
                                 per_token=False, n_sequences=64, n_blocks=64 * 64)

    assert "outer" in plan("auto", 64) and "outer" not in plan("auto", 2)
    assert plan("structured", 64).count("outer") == 0


def test_no_recompilation_or_retracing_across_suffix_lengths_or_pair_counts(tiny_data, model):
    """One compiled chunk, the model traced once for the shapes of its taps (the plan's and the
    chunk budget's input: that trace alone took 10x a small model's token Gram), one plan."""
    graphdef, params, _ = model
    window = response_window(tiny_data.config)
    for suffix, n in [(0, 3), (5, 4), (9, 2)]:
        pairs = sentiment_pairs(tiny_data.eval[:n], tiny_data.vocab, suffix,
                                nnx.merge(graphdef, params).config.max_len, window)
        pair_geometry(graphdef, params, pairs, implementation="structured")
        if suffix == 0:
            compiled = _structured_pair_geometry_chunk._cache_size()
            traced = ghost._traced_tap_shapes.cache_info().misses
            planned = ghost._cached_plan.cache_info().misses
    assert _structured_pair_geometry_chunk._cache_size() == compiled
    assert ghost._traced_tap_shapes.cache_info().misses == traced
    assert ghost._cached_plan.cache_info().misses == planned


def test_unknown_implementation_is_refused(model):
    graphdef, params, pairs = model
    with pytest.raises(ValueError, match="implementation='ghosts' is invalid"):
        pair_geometry(graphdef, params, pairs, implementation="ghosts")


@pytest.mark.full_codegen
def test_fast_strategies_on_the_4_layer_width_256_model(tiny_data):
    """At the size where jit(jacrev) was seen to miscompile, the fast strategies' token Grams and
    ⟨g_w, g_l⟩ equal one jitted grad per response token, contracted in float64 (materialize is
    checked the same way in test_gradients)."""
    cfg = ModelConfig(vocab_size=len(tiny_data.vocab), max_len=16, d_model=256, n_layers=4,
                      n_heads=4, d_mlp=1024)
    graphdef, params = nnx.split(init_model(cfg, seed=1))
    pairs = sentiment_pairs(tiny_data.eval[:1], tiny_data.vocab, 2, cfg.max_len,
                            response_window(tiny_data.config))
    grad = jax.jit(jax.grad(lambda p, s, i: token_logprobs(graphdef, p, s)[i]))
    rows = {side: np.stack([_flat(grad(params, getattr(pairs, side)[0], i))
                            for i in range(int(getattr(pairs, side).length[0]))])
            for side in ("chosen", "rejected")}
    n = rows["chosen"].shape[0]
    want = {"cross": rows["chosen"] @ rows["rejected"].T, "chosen": rows["chosen"] @ rows["chosen"].T,
            "rejected": rows["rejected"] @ rows["rejected"].T}
    scale = np.abs(want["chosen"]).max()
    for implementation in FAST:
        grams = token_grams(graphdef, params, pairs, chunk_size=1, implementation=implementation)
        for field, value in want.items():
            _close(getattr(grams, field)[0, :n, :n], value, scale, tol=1e-4)
    geo = pair_geometry(graphdef, params, pairs, chunk_size=1, implementation="auto")
    _close(geo.inner, want["cross"].sum(), scale, tol=1e-4)
