"""What every model of the toolkit is: a causal LM over token ids with one forward pass.

    h = features(tokens)                  the final (normalized) hidden states [..., T, d]
    logits = h[positions] · W (+ b)       (W, b) = unembedding(); W = Eᵀ with a tied embedding

``__call__(tokens, positions)`` computes the logits only at ``positions`` (all when None): a
response's log-probs need the rows that predict it, and the unembedding is a large matmul. Under
``nnx.capture`` the model records the features it unembeds (``features``) and perturbs the logits
(``logits``), and declares the unembedding's gradient term on them, so the structured products of
``entangle_jax.ghost`` read every factor from the model's own forward pass.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from entangle_jax.models.layers import Term, perturbed, record

FEATURES, LOGITS = "features", "logits"


class CausalLM(nnx.Module):
    """Base of the models: subclasses define ``features`` and ``unembedding``, and set
    ``config`` (a frozen config with ``vocab_size``, ``d_model``, ``tie_embeddings``,
    ``param_dtype``) and ``unembedding_path`` (the parameter that holds W)."""

    def features(self, tokens):
        raise NotImplementedError

    def unembedding(self):
        """``(W [d, V], b [V] or None)``."""
        raise NotImplementedError

    def __call__(self, tokens, positions=None):
        """Next-token logits ``[..., T, V]``, or ``[..., len(positions), V]`` at ``positions``."""
        h = self.features(tokens)
        if positions is not None:
            h = jnp.take(h, positions, axis=-2)
        w, b = self.unembedding()
        z = record(self, FEATURES, h) @ w
        return perturbed(self, LOGITS, z if b is None else z + b)

    def gradient_terms(self) -> dict[str, tuple[Term, ...]]:
        # logits = h W: ∇_W = Σ_t h_t ⊗ g_t; a tied W = Eᵀ puts the logit factor on E's rows
        return {self.unembedding_path: (Term(FEATURES, LOGITS, not self.config.tie_embeddings),)}
