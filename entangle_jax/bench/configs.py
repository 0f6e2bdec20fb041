"""The benchmark's model sizes and its FLOP lower bounds.

The lower bound counts matrix-multiply FLOPs only, with ``P`` the parameters that enter a matmul
(every kernel and the unembedding; embedding lookups are free):

    forward 2·P·T per sequence; a backward that forms per-example weight gradients 4·P·T;
    sequence Gram of N responses:  6·P·T·N + 2·P·N(N+1)/2 (one contraction per unordered pair);
    per-pair statistics of B pairs: 6·P·T·2B + 2·P·3B;
    token Gram of one pair (R rows a side): 2·2·P·T + 2·Σ_i 4·P·(q_i + 1) + 2·P·3R², where token i
    sits at position q_i and, by causality, its gradient needs positions ≤ q_i only;
    eNTK prediction of N pairs from B training pairs: 6·P·T·2B (one weighted backward pass) +
    4·P·T·2N (one Jacobian-vector product per response).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from entangle_jax.config import ModelConfig


@dataclass(frozen=True)
class BenchConfig:
    """A model size, the response window of the sequence-level tasks and of the token Gram."""

    model: ModelConfig
    window: int
    token_window: int


CONFIGS = {
    "default": BenchConfig(ModelConfig(vocab_size=512), window=13, token_window=13),
    "4L-256": BenchConfig(ModelConfig(vocab_size=512, max_len=64, d_model=256, n_layers=4,
                                      n_heads=4, d_mlp=1024), window=32, token_window=56),
    "gpt2-small": BenchConfig(ModelConfig(vocab_size=50257, max_len=64, d_model=768, n_layers=12,
                                          n_heads=12, d_mlp=3072, tie_embeddings=True),
                              window=32, token_window=56),
}


def flop_params(params) -> int:
    """Parameters that enter a matrix multiply: kernels and the (possibly tied) unembedding."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        tied = keys[0] == "token_embed" and "unembed" not in params
        if "kernel" in keys or keys[0] == "unembed" or tied:
            total += leaf.size
    return total


def lower_bound_flops(task: str, params, seq_len: int, n_pairs: int, window: int,
                      train_pairs: int = 0) -> float:
    """The FLOP lower bound of the module docstring for one call of ``task``."""
    p, t = flop_params(params), seq_len
    if task == "sequence_gram":
        n = 2 * n_pairs
        return 6 * p * t * n + p * n * (n + 1)
    if task == "pair_stats":
        return 6 * p * t * 2 * n_pairs + 2 * p * 3 * n_pairs
    if task == "token_gram":
        positions = range(t - window, t)
        return 4 * p * t + 2 * sum(4 * p * (q + 1) for q in positions) + 6 * p * window**2
    if task == "forward":
        return 2 * p * t * 2 * n_pairs
    if task == "entk_prediction":
        return 6 * p * t * 2 * train_pairs + 4 * p * t * 2 * n_pairs
    raise ValueError(f"unknown task {task!r}")
