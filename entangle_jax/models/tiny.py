"""A small decoder-only causal transformer in Flax NNX (GPT-2 shaped, pre-LayerNorm).

    h_0 = E[x] + P[pos]
    h_k = h_{k-1} + Attn(LN(h_{k-1}));  h_k = h_k + MLP(LN(h_k))       (each block)
    logits = W · LN_f(h_K) (+ b)       with W = Eᵀ when the embeddings are tied

Parameters are the only state, so ``nnx.split(model)`` gives ``(graphdef, params)`` and every
downstream function is a pure function of ``params``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from entangle_jax.config import ModelConfig
from entangle_jax.models.base import CausalLM
from entangle_jax.models.layers import Dense, Embedding, causal_softmax
from entangle_jax.models.layers import param_dtype as _dtype

_INIT = nnx.initializers.normal(stddev=0.02)


class CausalSelfAttention(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        d, dt = config.d_model, _dtype(config)
        self.n_heads = config.n_heads
        self.qkv = Dense(d, 3 * d, kernel_init=_INIT, param_dtype=dt, rngs=rngs)
        self.out = Dense(d, d, kernel_init=_INIT, param_dtype=dt, rngs=rngs)

    def __call__(self, x):
        *batch, t, d = x.shape
        head = d // self.n_heads
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        q, k, v = (a.reshape(*batch, t, self.n_heads, head) for a in (q, k, v))
        scores = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(head).astype(x.dtype)
        attn = causal_softmax(scores)
        return self.out(jnp.einsum("...hqk,...khd->...qhd", attn, v).reshape(*batch, t, d))


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        dt = _dtype(config)
        self.up = Dense(config.d_model, config.d_mlp, kernel_init=_INIT, param_dtype=dt,
                        rngs=rngs)
        self.down = Dense(config.d_mlp, config.d_model, kernel_init=_INIT, param_dtype=dt,
                          rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.gelu(self.up(x)))


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        dt = _dtype(config)
        self.ln1 = nnx.LayerNorm(config.d_model, epsilon=1e-5, param_dtype=dt, rngs=rngs)
        self.attn = CausalSelfAttention(config, rngs)
        self.ln2 = nnx.LayerNorm(config.d_model, epsilon=1e-5, param_dtype=dt, rngs=rngs)
        self.mlp = MLP(config, rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(CausalLM):
    """Token ids ``[..., T]`` → next-token logits ``[..., T, V]``."""

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        dt = _dtype(config)
        self.config = config
        self.token_embed = Embedding(config.vocab_size, config.d_model, embedding_init=_INIT,
                                     param_dtype=dt, rngs=rngs)
        self.pos_embed = Embedding(config.max_len, config.d_model, embedding_init=_INIT,
                                   param_dtype=dt, rngs=rngs)
        self.blocks = nnx.List([Block(config, rngs) for _ in range(config.n_layers)])
        self.ln_f = nnx.LayerNorm(config.d_model, epsilon=1e-5, param_dtype=dt, rngs=rngs)
        self.unembed = None if config.tie_embeddings else nnx.Param(
            _INIT(rngs.params(), (config.d_model, config.vocab_size), dt))
        self.unembed_bias = (nnx.Param(jnp.zeros((config.vocab_size,), dt))
                             if config.unembed_bias else None)
        self.unembedding_path = ("token_embed/embedding" if config.tie_embeddings
                                 else "unembed")

    embedding_params = ("token_embed", "pos_embed")
    head_params = ("ln_f", "unembed", "unembed_bias")

    def embed(self, tokens):
        return self.token_embed(tokens) + self.pos_embed(jnp.arange(tokens.shape[-1]))

    def unembedding(self):
        """``(W, b)``: logits = h @ W + b; ``W`` is ``Eᵀ`` when tied, ``b`` is None without a bias."""
        w = self.token_embed.embedding[...].T if self.unembed is None else self.unembed[...]
        return w, None if self.unembed_bias is None else self.unembed_bias[...]
