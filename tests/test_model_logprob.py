import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entangle_jax.logprob import batch_sequence_logprobs, logits, token_logprobs


def test_probabilities_sum_to_one_at_every_position(tiny_ckpt, make_pairs):
    pairs = make_pairs(6)
    z = logits(tiny_ckpt.graphdef, tiny_ckpt.params, pairs.chosen.tokens)
    np.testing.assert_allclose(jax.nn.softmax(z, -1).sum(-1), 1.0, atol=1e-5)


def test_causality_later_tokens_do_not_change_earlier_logprobs(tiny_ckpt, make_pairs):
    pairs = make_pairs(6)
    tokens = np.asarray(pairs.chosen.tokens)
    cut = int(pairs.chosen.start[0]) + 3
    changed = tokens.copy()
    changed[:, cut:] = (changed[:, cut:] + 7) % tiny_ckpt.model_config.vocab_size
    a = logits(tiny_ckpt.graphdef, tiny_ckpt.params, jnp.asarray(tokens))
    b = logits(tiny_ckpt.graphdef, tiny_ckpt.params, jnp.asarray(changed))
    np.testing.assert_array_equal(a[0, :cut], b[0, :cut])
    assert not np.allclose(a[0, cut:], b[0, cut:])


def test_token_logprobs_match_a_direct_numpy_computation(tiny_ckpt, make_pairs):
    pairs = make_pairs(6)
    seq = pairs.chosen[0]
    z = np.asarray(logits(tiny_ckpt.graphdef, tiny_ckpt.params, seq.tokens), np.float64)
    tokens, start, n = np.asarray(seq.tokens), int(seq.start), int(seq.length)
    expected = []
    for pos in range(start, start + n):
        row = z[pos - 1]
        expected.append(row[tokens[pos]] - (row.max() + np.log(np.exp(row - row.max()).sum())))
    got = np.asarray(token_logprobs(tiny_ckpt.graphdef, tiny_ckpt.params, seq))
    np.testing.assert_allclose(got[:n], expected, rtol=1e-5, atol=1e-5)
    assert (got[n:] == 0).all()
    total = batch_sequence_logprobs(tiny_ckpt.graphdef, tiny_ckpt.params, pairs.chosen)[0]
    np.testing.assert_allclose(total, np.sum(expected), rtol=1e-5)


def test_single_shape_is_one_token(tiny_ckpt, make_pairs):
    pairs = make_pairs(0)
    lp = jax.vmap(lambda s: token_logprobs(tiny_ckpt.graphdef, tiny_ckpt.params, s))(pairs.chosen)
    assert (np.asarray(pairs.chosen.length) == 1).all()
    assert (np.asarray(lp)[:, 1:] == 0).all() and (np.asarray(lp)[:, 0] < 0).all()


def test_tied_embeddings_and_bias_options(tiny_data):
    from entangle_jax.config import ModelConfig
    from entangle_jax.models import init_model
    cfg = ModelConfig(vocab_size=len(tiny_data.vocab), d_model=16, n_layers=1, n_heads=2,
                      d_mlp=32, tie_embeddings=True, unembed_bias=True)
    _, params = nnx.split(init_model(cfg))
    tops = {str(p[0].key) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert "unembed" not in tops and "unembed_bias" in tops


def test_stacked_batches_of_other_widths_keep_every_logprob(tiny_ckpt, make_pairs):
    """``stack_responses`` right-pads to the longest sequence and widest window: the log-probs of
    the stacked batch, split back, are each batch's own."""
    from entangle_jax.data.pairs import Responses, stack_responses
    from entangle_jax.logprob import response_logprobs

    wide = make_pairs(6, n=3).chosen
    short = make_pairs(0, n=2).rejected
    t = int(np.max(np.asarray(short.start) + np.asarray(short.length)))
    short = Responses(short.tokens[:, :t], short.start, short.length, 1)
    assert short.tokens.shape[1] < wide.tokens.shape[1] and short.window < wide.window
    stacked, ends = stack_responses([short, wide])
    assert stacked.tokens.shape == (5, wide.tokens.shape[1]) and list(ends) == [2, 5]
    g, p = tiny_ckpt.graphdef, tiny_ckpt.params
    got = np.split(response_logprobs(g, p, stacked), ends[:-1])
    for part, batch in zip(got, (short, wide)):
        np.testing.assert_allclose(part, response_logprobs(g, p, batch), rtol=1e-6, atol=1e-6)
