"""The cross-pair kernel ``K[n, b] = ⟨g_n, g_b⟩`` between two sets of responses (for example the
responses of N evaluation pairs and of B training pairs), for models whose per-example gradients do
not fit memory for a whole side.

This lives in the benchmark for now; the library should expose it (``entangle predict`` needs the
same kernel). It uses only the public pieces of the models (``CausalLM``: ``stage``,
``stage_params``, ``blocks``, ``context``) and of ``entangle_jax.logprob`` / ``entangle_jax.ghost``.

Two strategies, ``cross_gram(..., implementation=)``:

- ``"materialize"``: the per-example gradients of the rows (``vmap(grad)``) are held, the columns
  are streamed chunk by chunk, each formed and contracted leaf by leaf. Memory: rows · P floats.
- ``"stagewise"``: the backward pass is taken stage-major instead of example-major. With
  ``x_k`` the input of block ``k + 1`` and ``c_k = ∂ log π / ∂x_k`` its cotangent, one forward
  pass over every response keeps ``x_k`` at checkpoints (every ``L ≈ √K`` blocks but the
  embedding's; the stages in between are recomputed segment by segment), the head gives
  ``c_K``; then for ``k = K … 1`` one ``vjp`` of block ``k`` per response gives that block's
  per-example gradient and ``c_{k-1}``.
  Only one block's per-example gradients exist at a time (the rows' held, the columns' streamed),
  so ``K += G_rows^k (G_cols^k)ᵀ`` block by block. The remaining leaves (embedding, final norm,
  unembedding, tied or not) get their per-example gradient from one function of the stored
  ``x_K`` and ``c_0``::

      f_ends(θ_ends) = log π(y | head(x_K; θ_ends)) + ⟨embed(tokens; θ_ends), c_0⟩,

  whose gradient is exactly theirs (the linear term carries the embedding stage's share, and a
  tied embedding sums its two uses). Those gradients are large (a 49k × 576 embedding: 113 MB a
  response), so the rows' are held in groups that fit ``budget`` and the columns' are formed again
  for each group. Memory: the rows' gradients of one block, the checkpoints (``n · T · d`` floats
  each, n = rows + columns), one group of the ends' gradients; never a whole per-example gradient
  per response of a side. Cost: about 10·P·T per response (6·P·T for a plain backward) plus the
  contractions and the ends' recomputation.
- ``"auto"``: ``materialize`` when the smaller side's per-example gradients fit ``budget``, else
  ``stagewise``.

All give the same kernel to float32 rounding (``tests/test_bench.py``). The smaller side is held;
the result is ``[len(rows), len(cols)]`` float64.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from entangle_jax import ghost, memory
from entangle_jax.chunking import chunk_indices
from entangle_jax.data.pairs import Pairs, Responses, stack_responses
from entangle_jax.logprob import picked_logprobs, response_positions, sequence_logprob
from entangle_jax.pytrees import leaf_keys

KERNEL_IMPLEMENTATIONS = ("materialize", "stagewise", "auto")

#: Bytes of per-example gradients a side may hold (the rows' gradients of one block, a group of
#: the ends' gradients, or, for ``materialize``, the rows' whole gradients).
KERNEL_BUDGET = 4 * 2**30


def as_responses(batch: Responses | Pairs) -> Responses:
    """The responses of a batch, on the host: for ``Pairs``, every chosen response then every
    rejected one (as ``gradients.pairs_as_responses``)."""
    batch = jax.device_get(batch)
    if isinstance(batch, Pairs):
        return jax.tree.map(lambda a, b: np.concatenate([a, b]), batch.chosen, batch.rejected)
    return batch


def align(a: Responses, b: Responses) -> tuple[Responses, Responses]:
    """Both batches on the host, right-padded to one sequence length and one response window
    (``stack_responses``). Chunks are then sliced on the host, so no indexing compiles for each
    batch size."""
    stacked, ends = stack_responses([a, b])
    return stacked[:ends[0]], stacked[ends[0]:]


def _width(idx: np.ndarray) -> int:
    """The distinct rows of a chunk from ``chunk_indices`` (a padded chunk repeats its final row)."""
    return int(idx[-1] - idx[0]) + 1


_contract = jax.jit(lambda a, b: sum(ghost.row_gram(x, y)
                                     for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


# ------------------------------------------------------------------------------------------------
# materialize: hold the rows' per-example gradients, stream the columns
# ------------------------------------------------------------------------------------------------

@partial(jax.jit, static_argnums=0)
def _per_example_grads(graphdef, params, batch: Responses):
    return jax.vmap(jax.grad(partial(sequence_logprob, graphdef)), in_axes=(None, 0))(params, batch)


def _materialize(graphdef, params, rows: Responses, cols: Responses, chunk: int) -> np.ndarray:
    n_r, n_c = int(rows.tokens.shape[0]), int(cols.tokens.shape[0])
    row_chunks = chunk_indices(n_r, chunk)
    held = [_per_example_grads(graphdef, params, rows[idx]) for idx in row_chunks]
    out = np.zeros((len(row_chunks) * chunk, n_c))
    for idx in chunk_indices(n_c, chunk):
        g = _per_example_grads(graphdef, params, cols[idx])
        lo, width = int(idx[0]), _width(idx)
        for i, h in enumerate(held):
            out[i * chunk:(i + 1) * chunk, lo:lo + width] = np.asarray(_contract(h, g))[:, :width]
    return out[:n_r]


# ------------------------------------------------------------------------------------------------
# stagewise: the backward pass block by block over every response
# ------------------------------------------------------------------------------------------------

@partial(jax.jit, static_argnums=0)
def _embed(graphdef, params, tokens):
    model = nnx.merge(graphdef, params)
    return jax.vmap(lambda t: model.stage(0, None, t))(tokens)


@partial(jax.jit, static_argnums=0)
def _context(graphdef, params, tokens):
    model = nnx.merge(graphdef, params)
    return jax.vmap(model.context)(tokens)


@partial(jax.jit, static_argnums=0)
def _block_forward(bdef, bstate, x, ctx):
    return jax.vmap(lambda x, c: nnx.merge(bdef, bstate)(x, *c))(x, ctx)


@partial(jax.jit, static_argnums=0)
def _block_backward(bdef, bstate, x, ctx, cot):
    """Per-example gradients of one block's parameters ``[c, …]`` and the cotangents of its input."""
    def one(x, c, g):
        _, vjp = jax.vjp(lambda s, xx: nnx.merge(bdef, s)(xx, *c), bstate, x)
        return vjp(g)
    return jax.vmap(one)(x, ctx, cot)


@partial(jax.jit, static_argnums=(0, 1))
def _head_cotangent(graphdef, head, params, x, seqs: Responses):
    """``(log π [c], ∂ log π / ∂x_K [c, T, d])``."""
    model = nnx.merge(graphdef, params)

    def one(x, seq):
        pos = response_positions(seq)[1]
        return jax.value_and_grad(
            lambda xx: picked_logprobs(model.stage(head, xx, seq.tokens, pos), seq).sum())(x)
    return jax.vmap(one)(x, seqs)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _ends_grads(graphdef, treedef, ends_idx, head, ends, rest, x_k, cot_0, seqs: Responses):
    """Per-example gradients ``[c, …]`` of the leaves outside the blocks (``f_ends`` of the
    module docstring)."""
    def one(x, cot, seq):
        def f(values):
            full, it_e, it_r = [], iter(values), iter(rest)
            for i in range(len(ends) + len(rest)):
                full.append(next(it_e) if i in ends_idx else next(it_r))
            model = nnx.merge(graphdef, jax.tree.unflatten(treedef, full))
            pos = response_positions(seq)[1]
            logp = picked_logprobs(model.stage(head, x, seq.tokens, pos), seq).sum()
            return logp + jnp.vdot(model.stage(0, None, seq.tokens), cot)
        return jax.grad(f)(ends)
    return jax.vmap(one)(x_k, cot_0, seqs)


class _Host:
    """``[n, T, d]`` float32 arrays on the host, one per stored stage."""

    def __init__(self, n: int, shape: tuple[int, ...]):
        self.n, self.shape, self.arrays = n, shape, {}

    def put(self, k: int, idx: np.ndarray, x) -> None:
        if k not in self.arrays:
            self.arrays[k] = np.empty((self.n, *self.shape), np.float32)
        lo, width = int(idx[0]), _width(idx)
        self.arrays[k][lo:lo + width] = np.asarray(x)[:width]

    def get(self, k: int, idx: np.ndarray):
        return jnp.asarray(self.arrays[k][idx])

    def drop(self, k: int) -> None:
        self.arrays.pop(k, None)


def _stagewise(graphdef, params, rows: Responses, cols: Responses, chunk: int, ends_chunk: int,
               budget: float, segment: int | None) -> np.ndarray:
    model = nnx.merge(graphdef, params)
    n_blocks, head = len(model.blocks), model.n_stages - 1
    blocks = [nnx.split(b) for b in model.blocks]
    n_r, n_c = int(rows.tokens.shape[0]), int(cols.tokens.shape[0])
    seqs = jax.tree.map(lambda a, b: np.concatenate([a, b]), rows, cols)
    n = n_r + n_c
    row_chunks = chunk_indices(n_r, chunk)
    col_chunks = [idx + n_r for idx in chunk_indices(n_c, chunk)]
    every = row_chunks + col_chunks
    out = np.zeros((n_r, n_c))

    def place(idx_r, idx_c, k):
        """Add a ``[chunk, chunk]`` product at rows ``idx_r``, columns ``idx_c - n_r``."""
        k = np.asarray(k)
        r0, c0, h, w = int(idx_r[0]), int(idx_c[0]) - n_r, _width(idx_r), _width(idx_c)
        out[r0:r0 + h, c0:c0 + w] += k[:h, :w]

    x0 = _embed(graphdef, params, seqs.tokens[:1])
    store = _Host(n, x0.shape[1:])
    segment = segment or max(1, math.ceil(math.sqrt(n_blocks)))
    checkpoints = list(range(0, n_blocks, segment))
    contexts = {}

    # pass 1: forward over every response, keeping the checkpoints, the head input x_K and c_K
    cot = _Host(n, x0.shape[1:])
    for idx in every:
        tokens = seqs.tokens[idx]
        ctx = contexts[int(idx[0])] = _context(graphdef, params, tokens)
        x = _embed(graphdef, params, tokens)
        for k in range(n_blocks):
            if k in checkpoints and k:  # x_0 = embed(tokens) is recomputed, not stored
                store.put(k, idx, x)
            x = _block_forward(blocks[k][0], blocks[k][1], x, ctx)
        store.put(n_blocks, idx, x)
        cot.put(0, idx, _head_cotangent(graphdef, head, params, x, seqs[idx])[1])

    # the blocks, from the top; within a segment the inputs are recomputed from its checkpoint
    for first in reversed(checkpoints):
        last = min(first + segment, n_blocks)
        for idx in every:
            if first:
                x = store.get(first, idx)
            else:
                x = _embed(graphdef, params, seqs.tokens[idx])
                store.put(0, idx, x)
            for k in range(first, last - 1):
                x = _block_forward(blocks[k][0], blocks[k][1], x, contexts[int(idx[0])])
                store.put(k + 1, idx, x)
        for k in reversed(range(first, last)):
            bdef, bstate = blocks[k]
            held = []
            for idx in row_chunks:
                g, c = _block_backward(bdef, bstate, store.get(k, idx), contexts[int(idx[0])],
                                       cot.get(0, idx))
                cot.put(0, idx, c)
                held.append(g)
            for idx_c in col_chunks:
                g, c = _block_backward(bdef, bstate, store.get(k, idx_c),
                                       contexts[int(idx_c[0])], cot.get(0, idx_c))
                cot.put(0, idx_c, c)
                for idx_r, h in zip(row_chunks, held):
                    place(idx_r, idx_c, _contract(h, g))
            del held
            store.drop(k)

    # the leaves outside the blocks: rows' gradients held in groups, columns' formed per group
    leaves, treedef = jax.tree.flatten(params)
    inside = tuple(p + "/" for k in range(1, n_blocks + 1) for p in model.stage_params(k))
    keys = leaf_keys(params)
    ends_idx = tuple(i for i, key in enumerate(keys) if not (key + "/").startswith(inside))
    ends = [leaves[i] for i in ends_idx]
    rest = [leaf for i, leaf in enumerate(leaves) if i not in ends_idx]
    per_example = memory.tree_bytes(ends)
    group = max(ends_chunk, int(budget // max(per_example, 1)) // ends_chunk * ends_chunk)

    def ends_of(idx):
        return _ends_grads(graphdef, treedef, ends_idx, head, ends, rest,
                           store.get(n_blocks, idx), cot.get(0, idx), seqs[idx])

    for g_lo in range(0, n_r, group):
        group_chunks = [idx + g_lo for idx in chunk_indices(min(group, n_r - g_lo), ends_chunk)]
        held = [ends_of(idx) for idx in group_chunks]
        for idx_c in [idx + n_r for idx in chunk_indices(n_c, ends_chunk)]:
            g = ends_of(idx_c)
            for idx_r, h in zip(group_chunks, held):
                place(idx_r, idx_c, _contract(h, g))
        del held
    return out


def _resolve(implementation: str, n_held: int, p_bytes: int, budget: float) -> str:
    if implementation not in KERNEL_IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r} is invalid: one of "
                         f"{', '.join(map(repr, KERNEL_IMPLEMENTATIONS))}")
    if implementation == "auto":
        return "materialize" if n_held * p_bytes <= budget else "stagewise"
    return implementation


def _block_bytes(model) -> int:
    return memory.tree_bytes(nnx.state(model.blocks[0]))


def default_chunks(graphdef, params, rows: Responses | Pairs, cols: Responses | Pairs,
                   implementation: str = "auto", budget: float | None = None) -> tuple[int, int]:
    """``(chunk_size, ends_chunk_size)`` that ``cross_gram`` uses when none is given: the
    responses whose working set fits ``memory.budget_bytes()``, at most 32 and at most the larger
    side (``materialize``: one whole per-example gradient each; ``stagewise``: one block's
    gradient and activations each, and for the ends one gradient of the leaves outside the
    blocks each)."""
    rows, cols = align(as_responses(rows), as_responses(cols))
    n_held, n_other = sorted((int(rows.tokens.shape[0]), int(cols.tokens.shape[0])))
    p_bytes = memory.tree_bytes(params)
    budget = KERNEL_BUDGET if budget is None else budget
    if _resolve(implementation, n_held, p_bytes, budget) == "materialize":
        return memory.fit(p_bytes, 32, n_other), 1
    model = nnx.merge(graphdef, params)
    n_blocks, block = len(model.blocks), _block_bytes(model)
    activations = memory.activation_bytes(model.config, int(rows.tokens.shape[-1])) // n_blocks
    return (memory.fit(block + activations, 32, n_other),
            memory.fit(p_bytes - n_blocks * block, 32, n_other))


def cross_gram(graphdef, params, rows: Responses | Pairs, cols: Responses | Pairs, *,
               implementation: str = "auto", chunk_size: int | None = None,
               ends_chunk_size: int | None = None, budget: float | None = None,
               segment: int | None = None) -> np.ndarray:
    """``[len(rows), len(cols)]`` kernel ``K[n, b] = ⟨∇ log π(rows[n]), ∇ log π(cols[b])⟩`` over
    all parameters (``Pairs``: every chosen response, then every rejected one).

    ``chunk_size`` / ``ends_chunk_size``: responses per compiled call (defaults:
    ``default_chunks``); ``budget``: bytes of per-example gradients held (default
    ``KERNEL_BUDGET``); ``segment``: blocks per recomputed segment (default ⌈√K⌉)."""
    rows, cols = align(as_responses(rows), as_responses(cols))
    budget = KERNEL_BUDGET if budget is None else budget
    n_r, n_c = int(rows.tokens.shape[0]), int(cols.tokens.shape[0])
    if n_r > n_c:  # hold the smaller side
        return cross_gram(graphdef, params, cols, rows, implementation=implementation,
                          chunk_size=chunk_size, ends_chunk_size=ends_chunk_size, budget=budget,
                          segment=segment).T
    p_bytes = memory.tree_bytes(params)
    implementation = _resolve(implementation, n_r, p_bytes, budget)
    chunk, ends_chunk = default_chunks(graphdef, params, rows, cols, implementation, budget)
    chunk, ends_chunk = chunk_size or chunk, ends_chunk_size or ends_chunk
    if implementation == "materialize":
        if n_r * p_bytes > budget:  # rows in groups that fit, the columns formed per group
            group = max(chunk, int(budget // p_bytes))
            return np.concatenate([_materialize(graphdef, params, rows[lo:lo + group], cols,
                                                chunk) for lo in range(0, n_r, group)])
        return _materialize(graphdef, params, rows, cols, chunk)
    block = _block_bytes(nnx.merge(graphdef, params))
    if n_r * block > budget:  # rows in groups whose blocks' gradients fit
        group = max(chunk, int(budget // block) // chunk * chunk)
        return np.concatenate([_stagewise(graphdef, params, rows[lo:lo + group], cols, chunk,
                                          ends_chunk, budget, segment)
                               for lo in range(0, n_r, group)])
    return _stagewise(graphdef, params, rows, cols, chunk, ends_chunk, budget, segment)
