"""Predictors of likelihood displacement that need no gradient: CHES, length-normalized CHES and
the token edit distance between the chosen and the rejected response.

Razin et al. 2024, "Unintentional Unalignment: Likelihood Displacement in Direct Preference
Optimization" (arXiv 2410.08847), §5: with ``h_{x,y,k}`` the last hidden state that predicts
token k of the response y given the prompt x (the model's final, normed hidden state at the
position before y_k, which the unembedding reads),

    CHES(x, y⁺, y⁻)    = ⟨Σ_k h_{x,y⁺,k}, Σ_k' h_{x,y⁻,k'}⟩ − ‖Σ_k h_{x,y⁺,k}‖²
    LN-CHES(x, y⁺, y⁻) = ⟨Σ_k h_{x,y⁺,k}, Σ_k' h_{x,y⁻,k'}⟩ / (|y⁺| |y⁻|)
                         − ‖Σ_k h_{x,y⁺,k}‖² / |y⁺|²

A higher score means the chosen response's likelihood is more likely to fall under DPO. Their
baseline is the edit distance between y⁺ and y⁻ (here: over token ids; smaller = more similar =
more at risk).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entangle_jax.chunking import map_chunks
from entangle_jax.data.pairs import Pairs, Responses
from entangle_jax.logprob import response_positions


def _one_hidden_sum(model, seq: Responses):
    """``Σ_k h_{x,y,k}`` over the response slots of one sequence (padded slots excluded)."""
    _, predicting = response_positions(seq)
    h = jnp.take(model.features(seq.tokens), predicting, axis=0)  # [window, d]
    return jnp.where(seq.response_mask[:, None], h, 0.0).sum(0)


@partial(jax.jit, static_argnums=0)
def _hidden_sum_chunk(graphdef, params, responses: Responses):
    model = nnx.merge(graphdef, params)
    return jax.vmap(partial(_one_hidden_sum, model))(responses)


def response_hidden_sums(graphdef, params, responses: Responses, *,
                         chunk_size: int = 32) -> np.ndarray:
    """``[N, d]`` sums of the last hidden states that predict each response's tokens (host
    array), ``chunk_size`` responses per forward pass (the last chunk padded by repetition)."""
    return map_chunks(partial(_hidden_sum_chunk, graphdef, params), responses,
                      int(responses.tokens.shape[0]), chunk_size).astype(np.float64)


def ches_scores(sum_w, sum_l, length_w, length_l, *, normalize: bool = False) -> np.ndarray:
    """``[B]`` CHES (or, with ``normalize``, LN-CHES) from the hidden-state sums ``[B, d]`` of the
    chosen and rejected responses and their lengths in tokens (module docstring)."""
    sum_w, sum_l = np.asarray(sum_w, np.float64), np.asarray(sum_l, np.float64)
    cross, own = np.einsum("bd,bd->b", sum_w, sum_l), np.einsum("bd,bd->b", sum_w, sum_w)
    if not normalize:
        return cross - own
    n_w, n_l = np.asarray(length_w, np.float64), np.asarray(length_l, np.float64)
    return cross / (n_w * n_l) - own / n_w ** 2


def pair_ches(graphdef, params, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """``(CHES, LN-CHES)`` ``[B]`` of every pair: one forward pass per response."""
    sum_w = response_hidden_sums(graphdef, params, pairs.chosen)
    sum_l = response_hidden_sums(graphdef, params, pairs.rejected)
    n_w, n_l = np.asarray(pairs.chosen.length), np.asarray(pairs.rejected.length)
    return (ches_scores(sum_w, sum_l, n_w, n_l),
            ches_scores(sum_w, sum_l, n_w, n_l, normalize=True))


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning ``a``
    into ``b``, by the recurrence ``D[i][j] = min(D[i−1][j] + 1, D[i][j−1] + 1,
    D[i−1][j−1] + [a_i ≠ b_j])`` (one row at a time)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = row
    return prev[-1]


def pair_edit_distances(pairs: Pairs) -> np.ndarray:
    """``[B]`` edit distance between the chosen and the rejected response tokens of each pair."""
    return np.asarray([edit_distance(pairs.chosen.response_ids(i), pairs.rejected.response_ids(i))
                       for i in range(len(pairs))], np.float64)


__all__ = ["ches_scores", "edit_distance", "pair_ches", "pair_edit_distances",
           "response_hidden_sums"]
