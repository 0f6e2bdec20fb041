"""Log-probabilities of a response given its prompt, as pure functions of the parameter state.

For one sequence ``<bos> x y <pad>…`` with response tokens ``y_1..y_n`` at indices ``s..s+n-1``:

    log π_θ(y_t | x, y_<t) = log_softmax(logits[s + t - 2])[y_t]        (t = 1..n)
    log π_θ(y | x) = Σ_t log π_θ(y_t | x, y_<t)

The sum runs over the response tokens only (no end-of-sequence token). Each function takes
``(graphdef, params, …)`` for one sequence; ``jax.vmap`` batches it. ``pair_logprobs``,
``sequence_logps`` and ``response_logprobs`` evaluate whole batches in chunks, on the host.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from entangle_jax.chunking import map_chunks
from entangle_jax.data.pairs import Pairs, Responses


def logits(graphdef, params, tokens, positions=None):
    """Next-token logits ``[..., T, V]`` of the model ``nnx.merge(graphdef, params)`` (only the
    rows at ``positions`` when given)."""
    return nnx.merge(graphdef, params)(tokens, positions)


def response_positions(seq: Responses):
    """Indices of the response slots and of the positions whose logits predict them."""
    t = seq.tokens.shape[-1]
    targets = jnp.clip(seq.start + jnp.arange(seq.window), 0, t - 1)
    return targets, jnp.clip(targets - 1, 0, t - 1)


def response_logits(graphdef, params, seq: Responses):
    """``[window, V]`` logits that predict each response slot of one sequence."""
    return logits(graphdef, params, seq.tokens, response_positions(seq)[1])


def picked_logprobs(response_logits, seq: Responses):
    """``[window]`` log-probs of the response tokens from the ``[window, V]`` logits that predict
    them; padded slots are 0."""
    targets, _ = response_positions(seq)
    logp = jax.nn.log_softmax(response_logits, axis=-1)
    picked = jnp.take_along_axis(logp, seq.tokens[targets][:, None], axis=-1)[:, 0]
    return jnp.where(seq.response_mask, picked, 0.0)


def token_logprobs(graphdef, params, seq: Responses):
    """``[window]`` per-token log-probs of one sequence's response; padded slots are 0."""
    return picked_logprobs(response_logits(graphdef, params, seq), seq)


def sequence_logprob(graphdef, params, seq: Responses):
    """``log π_θ(y|x)``: the sum of the response's per-token log-probs."""
    return token_logprobs(graphdef, params, seq).sum()


def batch_sequence_logprobs(graphdef, params, batch: Responses):
    """``[B]`` sequence log-probs of a batch."""
    return jax.vmap(lambda s: sequence_logprob(graphdef, params, s))(batch)


def lm_loss(graphdef, params, batch: Responses):
    """Mean next-token negative log-likelihood over every real token after ``<bos>`` (prompt and
    response alike), the supervised fine-tuning objective."""
    logp = jax.nn.log_softmax(logits(graphdef, params, batch.tokens[:, :-1]), axis=-1)
    targets = batch.tokens[:, 1:]
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    real = jnp.arange(targets.shape[-1]) < (batch.start + batch.length - 1)[:, None]
    return -(picked * real).sum() / real.sum()


def response_nll(graphdef, params, batch: Responses):
    """Mean negative log-likelihood of the response tokens of a batch (the prompt is context,
    not a target): the fine-tuning objective of a pretrained chat model."""
    tok = jax.vmap(lambda s: token_logprobs(graphdef, params, s))(batch)
    return -tok.sum() / batch.length.sum()


@partial(jax.jit, static_argnums=0)
def pair_token_logprobs(graphdef, params, pairs: Pairs):
    """``([B, W], [B, W])`` per-token log-probs of the chosen and rejected responses."""
    one = jax.vmap(partial(token_logprobs, graphdef, params))
    return one(pairs.chosen), one(pairs.rejected)


#: Bytes of logits a log-prob chunk may hold (a response's [window, vocab] logits and their
#: log-softmax, per row).
LOGITS_BUDGET = 2**30


def _logprob_chunk(responses: Responses, vocab_size: int, cap: int = 256) -> int:
    per_row = 3 * responses.window * vocab_size * 4
    return int(max(1, min(cap, LOGITS_BUDGET // per_row)))


def pair_logprobs(graphdef, params, pairs: Pairs, *, chunk_size: int | None = None):
    """``([B, W], [B, W])`` per-token log-probs, in chunks of ``chunk_size`` pairs (host arrays;
    by default as many as ``LOGITS_BUDGET`` allows, up to 256)."""
    if chunk_size is None:
        vocab = nnx.merge(graphdef, params).config.vocab_size
        chunk_size = max(1, _logprob_chunk(pairs.chosen, vocab) // 2)
    return map_chunks(partial(pair_token_logprobs, graphdef, params), pairs, len(pairs),
                      chunk_size)


_jit_batch_logprobs = jax.jit(batch_sequence_logprobs, static_argnums=0)


def response_logprobs(graphdef, params, responses: Responses, *, chunk_size: int | None = None):
    """``[N]`` sequence log-probs of a batch of responses, in chunks (host array; by default as
    many as ``LOGITS_BUDGET`` allows and no more than there are: a few probe responses padded
    to a 9-row SmolLM2 chunk took 6 s, as 4 rows 0.8 s)."""
    if chunk_size is None:
        chunk_size = min(int(responses.tokens.shape[0]),
                         _logprob_chunk(responses, nnx.merge(graphdef, params).config.vocab_size))
    return map_chunks(partial(_jit_batch_logprobs, graphdef, params), responses,
                      int(responses.tokens.shape[0]), chunk_size)


def sequence_logps(graphdef, params, pairs: Pairs, *, chunk_size: int | None = None):
    """``([B], [B])`` sequence log-probs of the chosen and rejected responses (host arrays)."""
    tok_w, tok_l = pair_logprobs(graphdef, params, pairs, chunk_size=chunk_size)
    return tok_w.sum(-1), tok_l.sum(-1)
