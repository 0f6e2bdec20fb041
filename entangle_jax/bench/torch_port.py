"""The same transformer in PyTorch, for the peer comparison: a pure function of a dict of tensors
holding the JAX model's weights (``from_jax``), so ``torch.func.vmap(grad)`` and ``jacrev`` run on
exactly the architecture and weights of ``entangle_jax.models.tiny`` (checked by ``max_logprob_gap``).

Linear kernels keep the JAX layout ``[in, out]`` (``y = x @ K + b``); LayerNorm eps 1e-5; GELU tanh
approximation (``jax.nn.gelu``'s default); learned positions; unembedding ``W [d, V]`` or ``Eᵀ``.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, jacrev, vmap


def from_jax(params) -> dict[str, torch.Tensor]:
    """``{"blocks/0/attn/qkv/kernel": tensor, …}`` from a JAX parameter state."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path if
                getattr(k, "name", None) != "value"]
        out["/".join(keys)] = torch.from_numpy(np.array(leaf))
    return out


def _layer_norm(p, name, x):
    return F.layer_norm(x, x.shape[-1:], p[f"{name}/scale"], p[f"{name}/bias"], eps=1e-5)


def _linear(p, name, x):
    return x @ p[f"{name}/kernel"] + p[f"{name}/bias"]


def logits(p, tokens, n_layers: int, n_heads: int):
    """``[T, V]`` logits of one sequence."""
    t = tokens.shape[-1]
    x = p["token_embed/embedding"][tokens] + p["pos_embed/embedding"][:t]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    for i in range(n_layers):
        b = f"blocks/{i}"
        q, k, v = _linear(p, f"{b}/attn/qkv", _layer_norm(p, f"{b}/ln1", x)).chunk(3, dim=-1)
        head = q.shape[-1] // n_heads
        q, k, v = (a.reshape(t, n_heads, head).transpose(0, 1) for a in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head)
        attn = torch.softmax(scores.masked_fill(~causal, torch.finfo(x.dtype).min), dim=-1)
        x = x + _linear(p, f"{b}/attn/out", (attn @ v).transpose(0, 1).reshape(t, -1))
        h = F.gelu(_linear(p, f"{b}/mlp/up", _layer_norm(p, f"{b}/ln2", x)), approximate="tanh")
        x = x + _linear(p, f"{b}/mlp/down", h)
    w = p["unembed"] if "unembed" in p else p["token_embed/embedding"].T
    z = _layer_norm(p, "ln_f", x) @ w
    return z + p["unembed_bias"] if "unembed_bias" in p else z


def token_logprobs(p, tokens, start, length, window: int, n_layers: int, n_heads: int):
    """``[window]`` response-token log-probs of one sequence (padded slots 0)."""
    t = tokens.shape[-1]
    targets = (start + torch.arange(window)).clamp(0, t - 1)
    logp = torch.log_softmax(logits(p, tokens, n_layers, n_heads)[(targets - 1).clamp(0, t - 1)], -1)
    picked = torch.gather(logp, 1, tokens[targets][:, None])[:, 0]
    return torch.where(torch.arange(window) < length, picked, torch.zeros_like(picked))


def _leafwise_gram(a: dict, b: dict):
    return sum(a[k].flatten(1) @ b[k].flatten(1).T for k in a)


def sequence_gram(p, tokens, start, length, window: int, n_layers: int, n_heads: int):
    """``[N, N]`` Gram of per-sequence log-prob gradients: ``vmap(grad)``, contracted leaf by leaf."""
    def seq_logprob(p, tok, s, n):
        return token_logprobs(p, tok, s, n, window, n_layers, n_heads).sum()

    grads = vmap(grad(seq_logprob), in_dims=(None, 0, 0, 0))(p, tokens, start, length)
    return _leafwise_gram(grads, grads)


def token_grams(p, chosen, rejected, window: int, n_layers: int, n_heads: int):
    """``(cross, chosen, rejected)`` ``[R, R]`` token Grams of one pair by ``jacrev``."""
    def jac(seq):
        tokens, start, length = seq
        return jacrev(lambda q: token_logprobs(q, tokens, start, length, window, n_layers,
                                               n_heads))(p)

    j_w, j_l = jac(chosen), jac(rejected)
    return _leafwise_gram(j_w, j_l), _leafwise_gram(j_w, j_w), _leafwise_gram(j_l, j_l)
