"""A Llama-architecture decoder in Flax NNX (the SmolLM2 family): pre-RMSNorm blocks with rotary
grouped-query attention and a SiLU-gated MLP, no biases, a tied input/output embedding.

    h_0 = E[x]
    a = RMSNorm(h);  h = h + W_o · Attn(RoPE(W_q a), RoPE(W_k a), W_v a)
    m = RMSNorm(h);  h = h + W_down (SiLU(W_gate m) ⊙ W_up m)                      (each block)
    logits = RMSNorm_f(h_K) · Eᵀ

Rotary embeddings use the "rotate half" layout of Hugging Face's Llama: dimension i of a head
pairs with i + head_dim/2, at angle ``pos · θ^(-2i/head_dim)``. Each group of
``n_heads / n_kv_heads`` consecutive query heads shares one key/value head. Positions are absolute
(0..T-1); a right-padded sequence needs no attention mask, since no real token attends to a later
pad.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from entangle_jax.config import LlamaConfig
from entangle_jax.models.base import CausalLM
from entangle_jax.models.layers import Dense, Embedding, RMSNorm, causal_softmax
from entangle_jax.models.layers import param_dtype as _dtype

_INIT = nnx.initializers.normal(stddev=0.02)


def rotary_tables(length: int, head_dim: int, theta: float, dtype):
    """``(cos, sin)`` ``[length, head_dim]`` of the rotate-half layout."""
    inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=dtype) / head_dim)
    angles = jnp.arange(length, dtype=dtype)[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x, cos, sin):
    """``x cos + rotate_half(x) sin`` for ``x`` ``[..., T, heads, head_dim]``."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def _dense(d_in: int, d_out: int, dt, rngs: nnx.Rngs) -> Dense:
    return Dense(d_in, d_out, use_bias=False, kernel_init=_INIT, param_dtype=dt, rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
        d, hd, dt = config.d_model, config.head_dim, _dtype(config)
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.q = _dense(d, config.n_heads * hd, dt, rngs)
        self.k = _dense(d, config.n_kv_heads * hd, dt, rngs)
        self.v = _dense(d, config.n_kv_heads * hd, dt, rngs)
        self.o = _dense(config.n_heads * hd, d, dt, rngs)

    def __call__(self, x, cos, sin):
        *batch, t, _ = x.shape
        groups, per_group = self.n_kv_heads, self.n_heads // self.n_kv_heads
        q = apply_rotary(self.q(x).reshape(*batch, t, self.n_heads, self.head_dim), cos, sin)
        k = apply_rotary(self.k(x).reshape(*batch, t, groups, self.head_dim), cos, sin)
        v = self.v(x).reshape(*batch, t, groups, self.head_dim)
        q = q.reshape(*batch, t, groups, per_group, self.head_dim)
        scores = jnp.einsum("...qgrd,...kgd->...grqk", q, k) / jnp.sqrt(self.head_dim).astype(
            x.dtype)
        context = jnp.einsum("...grqk,...kgd->...qgrd", causal_softmax(scores), v)
        return self.o(context.reshape(*batch, t, self.n_heads * self.head_dim))


class GatedMLP(nnx.Module):
    def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
        dt = _dtype(config)
        self.gate = _dense(config.d_model, config.d_mlp, dt, rngs)
        self.up = _dense(config.d_model, config.d_mlp, dt, rngs)
        self.down = _dense(config.d_mlp, config.d_model, dt, rngs)

    def __call__(self, x):
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class LlamaBlock(nnx.Module):
    def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
        dt = _dtype(config)
        self.ln1 = RMSNorm(config.d_model, eps=config.rms_eps, param_dtype=dt)
        self.attn = Attention(config, rngs)
        self.ln2 = RMSNorm(config.d_model, eps=config.rms_eps, param_dtype=dt)
        self.mlp = GatedMLP(config, rngs)

    def __call__(self, x, cos, sin):
        x = x + self.attn(self.ln1(x), cos, sin)
        return x + self.mlp(self.ln2(x))


class Llama(CausalLM):
    """Token ids ``[..., T]`` → next-token logits (``CausalLM``)."""

    def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
        if not config.tie_embeddings:
            raise NotImplementedError("the Llama port supports tied embeddings only (SmolLM2)")
        dt = _dtype(config)
        self.config = config
        self.token_embed = Embedding(config.vocab_size, config.d_model, embedding_init=_INIT,
                                     param_dtype=dt, rngs=rngs)
        self.blocks = nnx.List([LlamaBlock(config, rngs) for _ in range(config.n_layers)])
        self.ln_f = RMSNorm(config.d_model, eps=config.rms_eps, param_dtype=dt)
        self.unembedding_path = "token_embed/embedding"

    def embed(self, tokens):
        return self.token_embed(tokens)

    def context(self, tokens) -> tuple:
        """The rotary tables ``(cos, sin)`` of the sequence length."""
        return rotary_tables(tokens.shape[-1], self.config.head_dim, self.config.rope_theta,
                             _dtype(self.config))

    def unembedding(self):
        return self.token_embed.embedding[...].T, None
