"""Log-probabilities of a response given its prompt, as pure functions of the parameter state.

For one sequence ``<bos> x y <pad>…`` with response tokens ``y_1..y_n`` at indices ``s..s+n-1``:

    log π_θ(y_t | x, y_<t) = log_softmax(logits[s + t - 2])[y_t]        (t = 1..n)
    log π_θ(y | x) = Σ_t log π_θ(y_t | x, y_<t)

The sum runs over the response tokens only (no end-of-sequence token). Each function takes
``(graphdef, params, …)`` for one sequence; ``jax.vmap`` batches it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from entangle_jax.data.pairs import Responses


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
