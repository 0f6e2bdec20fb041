"""What every model of the toolkit is: a causal LM over token ids with one forward pass, run as a
chain of stages.

    x_0 = embed(tokens)                                      stage 0
    x_k = blocks[k-1](x_{k-1}, *context(tokens))             stages 1..K
    logits = (norm(x_K))[positions] · W (+ b)                stage K+1 (the head)

with ``(W, b) = unembedding()`` (W = Eᵀ with a tied embedding). ``__call__(tokens, positions)``
runs the chain and computes the logits only at ``positions`` (all when None): a response's
log-probs need the rows that predict it, and the unembedding is a large matmul.

Under ``nnx.capture`` every tapped layer records its factors (``models.layers``); the head records
the features it unembeds (``features``) and perturbs the logits (``logits``), and declares the
unembedding's gradient term on them. ``stage(k, …)`` runs one link of the chain, so the structured
products of ``entangle_jax.ghost`` can take the backward pass stage by stage and hold one stage's
per-row cotangents at a time; ``stage_params(k)`` names the parameters a stage owns.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from entangle_jax.models.layers import Term, perturbed, record

FEATURES, LOGITS = "features", "logits"


class CausalLM(nnx.Module):
    """Base of the models. Subclasses set ``config`` (a frozen config with ``vocab_size``,
    ``d_model``, ``tie_embeddings``, ``param_dtype``), ``blocks`` (an ``nnx.List``), ``ln_f`` (the
    final norm) and ``unembedding_path`` (the parameter that holds W), and define ``embed``,
    ``unembedding``, ``embedding_params`` and, if their blocks need per-sequence constants,
    ``context``."""

    embedding_params: tuple[str, ...] = ("token_embed",)
    head_params: tuple[str, ...] = ("ln_f",)

    def embed(self, tokens):
        raise NotImplementedError

    def unembedding(self):
        """``(W [d, V], b [V] or None)``."""
        raise NotImplementedError

    def context(self, tokens) -> tuple:
        """Per-sequence constants every block takes after its input (none by default)."""
        return ()

    @property
    def n_stages(self) -> int:
        return len(self.blocks) + 2

    def stage(self, k: int, x, tokens, positions=None):
        """Link ``k`` of the chain: the embedding (``x`` unused), a block, or the head."""
        if k == 0:
            return self.embed(tokens)
        if k <= len(self.blocks):
            return self.blocks[k - 1](x, *self.context(tokens))
        return self.head(x, positions)

    def stage_params(self, k: int) -> tuple[str, ...]:
        """Key prefixes of the parameters stage ``k`` owns (a tied W belongs to the embedding)."""
        if k == 0:
            return self.embedding_params
        if k <= len(self.blocks):
            return (f"blocks/{k - 1}",)
        return self.head_params

    def features(self, tokens):
        """The final hidden states ``norm(x_K)`` ``[..., T, d]`` that the unembedding reads."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, *self.context(tokens))
        return self.ln_f(x)

    def head(self, x, positions=None):
        """Logits from the last block's output (at ``positions`` when given)."""
        h = self.ln_f(x)
        if positions is not None:
            h = jnp.take(h, positions, axis=-2)
        w, b = self.unembedding()
        z = record(self, FEATURES, h) @ w
        return perturbed(self, LOGITS, z if b is None else z + b)

    def __call__(self, tokens, positions=None):
        """Next-token logits ``[..., T, V]``, or ``[..., len(positions), V]`` at ``positions``."""
        x = None
        for k in range(self.n_stages):
            x = self.stage(k, x, tokens, positions)
        return x

    def gradient_terms(self) -> dict[str, tuple[Term, ...]]:
        # logits = h W: ∇_W = Σ_t h_t ⊗ g_t; a tied W = Eᵀ puts the logit factor on E's rows
        return {self.unembedding_path: (Term(FEATURES, LOGITS, not self.config.tie_embeddings),)}
