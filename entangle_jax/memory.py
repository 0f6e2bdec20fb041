"""How much of a batch to process at once: working-set estimates that choose chunk sizes.

Every batched computation of the toolkit (per-example gradients, taps, one-step checks,
Jacobian-vector products) runs over fixed-size chunks of pairs. A chunk is as large as its
working set allows within ``MEMORY_BUDGET`` bytes and at most a cap that keeps the tiny models'
compiled shapes: on the tiny models the caps decide, on a pretrained model the budget does.
"""

from __future__ import annotations

import jax

#: Bytes of per-example working memory a chunk may hold.
MEMORY_BUDGET = 2**30


def tree_bytes(tree) -> int:
    """Bytes of every array (or ``ShapeDtypeStruct``) in a pytree."""
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def activation_bytes(config, seq_len: int) -> int:
    """An estimate of one sequence's forward activations that reverse mode keeps: per block,
    about a dozen width-``d`` vectors, three MLP-width ones and the attention probabilities of
    every head, per position (float32 or float64 by the config)."""
    heads = getattr(config, "n_heads", 1)
    per_position = 12 * config.d_model + 3 * config.d_mlp + 2 * heads * seq_len
    itemsize = 8 if config.param_dtype == "float64" else 4
    return config.n_layers * seq_len * per_position * itemsize


def fit(per_item: int, cap: int, n: int | None = None, budget: float | None = None) -> int:
    """Items per chunk: as many as fit the budget, at least 1, at most ``cap`` (and ``n``)."""
    budget = MEMORY_BUDGET if budget is None else budget
    size = int(max(1, min(cap, budget // max(per_item, 1))))
    return size if n is None else max(1, min(size, n))
