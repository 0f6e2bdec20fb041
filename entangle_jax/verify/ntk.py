"""The logit empirical NTK at the sentiment position, for the full-parameter form of Theorem 1.

With logits ``z = Wᵀ h (+ b)`` at the position that predicts the sentiment token, ``p = softmax(z)``
and ``g_k = ∇_θ log p_k = J_zᵀ (e_k − p)``, the inner product of the two single-token gradients is

    ⟨g_w, g_l⟩ = (e_w − p)ᵀ K (e_l − p),      K = J_z J_zᵀ  (the V×V logit eNTK)

and, when p puts all its mass on {w, l}, ``e_w − p = p_l (e_w − e_l)``, ``e_l − p = −p_w (e_w − e_l)``:

    ⟨g_w, g_l⟩ = −p_w p_l (e_w − e_l)ᵀ K (e_w − e_l) ≤ 0.

K is assembled from the feature Jacobian ``J_h = ∂h/∂θ`` (d_model rows instead of V) and the
unembedding, a route independent of the log-prob autodiff it is compared with:

    K = Wᵀ (J_h J_hᵀ) W + (‖h‖² + 1[bias]) I

(the unembedding's own parameters contribute ``‖h‖² I``, its bias ``I``). This needs untied
embeddings: with ``W = Eᵀ`` the embedding would feed both terms.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from entangle_jax.data.pairs import Pairs


@struct.dataclass
class SentimentNTK:
    """Per pair ``[B]``: the quadratic form, its two-token part and its rounding scale."""

    quadratic: np.ndarray  # (e_w − p)ᵀ K (e_l − p)
    scale: np.ndarray  # |e_w − p|ᵀ |K| |e_l − p|: the size of the terms that cancel
    two_token: np.ndarray  # −p_w p_l (K_ww + K_ll − 2 K_wl), the value when p lives on {w, l}
    mass: np.ndarray  # p_w + p_l


@partial(jax.jit, static_argnums=0)
def _sentiment_ntk_one(graphdef, params, pair: Pairs):
    seq = pair.chosen
    pos = seq.start - 1

    def features(p):
        return nnx.merge(graphdef, p).features(seq.tokens)[pos]

    jac = jax.jacrev(features)(params)
    feature_gram = sum(jnp.einsum("a...,b...->ab", x, x) for x in jax.tree.leaves(jac))
    w, b = nnx.merge(graphdef, params).unembedding()
    h = features(params)
    z = h @ w if b is None else h @ w + b
    p = jax.nn.softmax(z)
    own = jnp.dot(h, h) + (0.0 if b is None else 1.0)
    k = w.T @ feature_gram @ w + own * jnp.eye(w.shape[1], dtype=w.dtype)
    tok_w, tok_l = seq.tokens[seq.start], pair.rejected.tokens[pair.rejected.start]
    e_w = jnp.zeros_like(p).at[tok_w].set(1.0) - p
    e_l = jnp.zeros_like(p).at[tok_l].set(1.0) - p
    p_w, p_l = p[tok_w], p[tok_l]
    return (e_w @ k @ e_l, jnp.abs(e_w) @ jnp.abs(k) @ jnp.abs(e_l),
            -p_w * p_l * (k[tok_w, tok_w] + k[tok_l, tok_l] - 2 * k[tok_w, tok_l]), p_w + p_l)


def sentiment_ntk(graphdef, params, pairs: Pairs) -> SentimentNTK:
    """The eNTK form of ⟨g_w, g_l⟩ at the sentiment token of every pair (one pair at a time:
    the feature Jacobian holds d_model × P numbers)."""
    model = nnx.merge(graphdef, params)
    if model.config.tie_embeddings:
        raise ValueError("sentiment_ntk needs untied embeddings (ModelConfig.tie_embeddings=False)")
    rows = [jax.device_get(_sentiment_ntk_one(graphdef, params, pairs[i]))
            for i in range(len(pairs))]
    return SentimentNTK(*(np.array(col) for col in zip(*rows)))
