"""Per-example gradient geometry of preference pairs.

With ``g_w = ∇_θ log π_w`` and ``g_l = ∇_θ log π_l`` over all trainable parameters:

    sq_norm_w = ‖g_w‖²,  sq_norm_l = ‖g_l‖²,  inner = ⟨g_w, g_l⟩,  cosine = inner / (‖g_w‖ ‖g_l‖)

and with per-token gradients ``g_w^i = ∇_θ log π_θ(y_w,i | x, y_w,<i)`` the token-wise Grams

    cross[i, j] = ⟨g_w^i, g_l^j⟩,  chosen[i, j] = ⟨g_w^i, g_w^j⟩,  rejected[i, j] = ⟨g_l^i, g_l^j⟩,

so that ``Σ_ij cross[i, j] = inner``, and the sequence-level Gram ``K[a, b] = ⟨g_a, g_b⟩`` over all
responses of a batch. Each takes ``implementation=``, a ``Strategy`` or its name (as
neural-tangents' ``empirical_ntk_fn`` takes an ``NtkImplementation``):

- ``"materialize"``: per-example gradients from ``jax.vmap`` of ``jax.grad`` (``jax.jacrev`` per
  token), contracted leaf by leaf, never concatenated into one flat vector — the reference;
- ``"structured"``: ghost inner products ``⟨X_aᵀG_a, X_bᵀG_b⟩ = ⟨X_a X_bᵀ, G_a G_bᵀ⟩`` from each
  dense layer's inputs and output cotangents (``entangle_jax.ghost``); no per-example gradient of a
  weight matrix is ever formed;
- ``"auto"``: per parameter leaf, the cheaper of the ghost product and the outer product ``Xᵀ G``
  formed from the same taps, by a flop count under a memory budget (``ghost.plan_leaves``); for
  the full sequence Gram, ``materialize`` whenever a chunk's per-example gradients fit that budget.

All return the same numbers to float32 rounding. Pairs are processed in fixed-size chunks, so memory is
bounded by the chunk and one compiled function serves every chunk and every suffix length (with
``length_bucket``, one per bucketed length instead).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from entangle_jax import ghost, memory
from entangle_jax.chunking import (check_chunk_size, check_positive_int, chunk_indices,
                                   map_chunks)
from entangle_jax.data.pairs import Pairs, Responses
from entangle_jax.logprob import sequence_logprob, token_logprobs
from entangle_jax.pytrees import leaf_keys, leaf_vdots
from entangle_jax.sharding import padded_size, replicate, shard_batch

class Strategy(str, enum.Enum):
    """How a Gram function forms its inner products (module docstring)."""

    MATERIALIZE = "materialize"
    STRUCTURED = "structured"
    AUTO = "auto"


#: The names every Gram function accepts as ``implementation=``.
IMPLEMENTATIONS = tuple(strategy.value for strategy in Strategy)


def param_group(key: str) -> str:
    """The parameter group of a leaf key: ``embeddings``, ``block{i}.attn``, ``block{i}.mlp``,
    ``norms`` or ``unembedding`` (a tied embedding counts under ``embeddings``)."""
    keys = key.split("/")
    if any(k.startswith("ln") for k in keys):
        return "norms"
    if keys[0] in ("token_embed", "pos_embed"):
        return "embeddings"
    if keys[0] in ("unembed", "unembed_bias"):
        return "unembedding"
    if keys[0] == "blocks":
        return f"block{keys[1]}.{keys[2]}"
    raise ValueError(f"parameter {key} belongs to no known group")


def leaf_groups(params) -> list[str]:
    """The group of each leaf of ``params``, in ``jax.tree.leaves`` order."""
    return [param_group(key) for key in leaf_keys(params)]


def _leaf_gram(a, b):
    """``Σ_leaf A_leaf B_leafᵀ`` for two pytrees of stacked gradients (leading axis: rows)."""
    return sum(ghost.row_gram(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def chunk_for_budget(graphdef, params, seq: Responses, implementation: Strategy | str, *,
                     per_token: bool,
                     cap: int, budget: float | None = None) -> int:
    """The most pairs (at most ``cap``, at least 1) whose working memory fits ``budget`` bytes
    (``memory.budget_bytes()``): per pair, two responses' per-row gradients (``materialize``:
    R · P floats each) or their taps (a pair's per-row cotangents and layer inputs, which the
    streamed backward holds a stage at a time; counted whole, an upper bound)."""
    rows = seq.window if per_token else 1
    if as_strategy(implementation) is Strategy.MATERIALIZE:
        per_pair = 2 * rows * memory.tree_bytes(params)
    else:
        one = jax.tree.map(lambda x: x[0], seq)
        per_pair = 2 * memory.tree_bytes(ghost.tap_shapes(graphdef, params, one,
                                                          per_token=per_token))
    return memory.fit(per_pair, cap, budget=budget)


def _on_mesh(params, chunk_size: int, mesh):
    """Parameters replicated over ``mesh`` and the chunk size rounded up to a multiple of its
    devices (unchanged without a mesh)."""
    check_chunk_size(chunk_size)
    return (params, chunk_size) if mesh is None else (replicate(params, mesh),
                                                      padded_size(chunk_size, mesh))


@struct.dataclass
class PairGeometry:
    """Per-pair statistics ``[B]``; ``leaf_inner`` ``[B, n_leaves]`` splits ``inner`` by leaf."""

    logp_w: np.ndarray
    logp_l: np.ndarray
    sq_norm_w: np.ndarray
    sq_norm_l: np.ndarray
    inner: np.ndarray
    leaf_inner: np.ndarray
    groups: tuple[str, ...] = struct.field(pytree_node=False)  # group of each leaf

    @property
    def cosine(self) -> np.ndarray:
        return self.inner / np.sqrt(self.sq_norm_w * self.sq_norm_l)

    def group_inner(self) -> dict[str, np.ndarray]:
        """``⟨g_w, g_l⟩`` restricted to each parameter group, ``{group: [B]}``; sums to ``inner``."""
        out: dict[str, np.ndarray] = {}
        for k, group in enumerate(self.groups):
            out[group] = out.get(group, 0.0) + self.leaf_inner[:, k]
        return out


def as_strategy(implementation: Strategy | str) -> Strategy:
    """The ``Strategy`` named by ``implementation``; an unknown name raises ``ValueError``."""
    try:
        return Strategy(implementation)
    except ValueError:
        raise ValueError(f"implementation={implementation!r} is invalid: one of "
                         f"{', '.join(map(repr, IMPLEMENTATIONS))}") from None


def _plan(graphdef, params, strategy: Strategy, seq: Responses, *, per_token: bool,
          n_sequences: int, n_blocks: int) -> tuple[str, ...]:
    return ghost.plan_leaves(graphdef, params, strategy.value, seq, per_token=per_token,
                             n_sequences=n_sequences, n_blocks=n_blocks)


@partial(jax.jit, static_argnums=0)
def _pair_geometry_chunk(graphdef, params, pairs: Pairs):
    value_and_grad = jax.value_and_grad(partial(sequence_logprob, graphdef))

    def one(pair: Pairs):
        logp_w, g_w = value_and_grad(params, pair.chosen)
        logp_l, g_l = value_and_grad(params, pair.rejected)
        return (logp_w, logp_l, optax.tree.vdot(g_w, g_w), optax.tree.vdot(g_l, g_l),
                leaf_vdots(g_w, g_l))

    return jax.vmap(one)(pairs)


def _features(graphdef, params, seq: Responses, plan, *, per_token: bool):
    logp, taps = ghost.record_taps(graphdef, params, seq, per_token=per_token)
    return logp, ghost.prepare(taps, params, ghost.leaf_terms(graphdef, params), plan)


@partial(jax.jit, static_argnums=(0, 3))
def _structured_pair_geometry_chunk(graphdef, params, pairs: Pairs, plan):
    def one(pair: Pairs):
        logp_w, logp_l, grams = ghost.pair_leaf_grams(graphdef, params, pair, plan,
                                                      per_token=False)
        cross, chosen, rejected = grams[:, :, 0, 0]
        return logp_w.sum(), logp_l.sum(), chosen.sum(), rejected.sum(), cross

    return jax.vmap(one)(pairs)


def pair_geometry(graphdef, params, pairs: Pairs, *, chunk_size: int | None = None,
                  progress: Callable | None = None,
                  implementation: Strategy | str = "materialize",
                  mesh=None, length_bucket: int | None = None) -> PairGeometry:
    """log π_w, log π_l, ‖g_w‖², ‖g_l‖², ⟨g_w, g_l⟩ (and its split by leaf) for every pair.

    Memory is bounded by ``chunk_size`` pairs: their gradients (2 · chunk_size · P floats) with
    ``materialize``, their layer inputs and output cotangents with ``structured``; by default the
    most that fit ``memory.budget_bytes()``, up to 32. With a ``mesh`` (``sharding.batch_mesh()``)
    each chunk is split over its devices. ``length_bucket`` (tokens; for pairs of varied
    lengths, e.g. real data): pairs run sorted by length, each chunk cut to its longest sequence
    rounded up to a multiple of it, so less padding is computed, at one compilation per length
    that occurs; ``None`` keeps one padded length and one compiled shape."""
    logp_w, logp_l, sq_w, sq_l, leaf_inner = _map_pair_chunks(
        "pair_geometry", implementation, graphdef, params, pairs, chunk_size, progress, mesh,
        length_bucket)
    return PairGeometry(logp_w, logp_l, sq_w, sq_l, leaf_inner.sum(-1), leaf_inner,
                        tuple(leaf_groups(params)))


@struct.dataclass
class TokenGrams:
    """Token-wise Grams ``[B, R, R]`` (R = response window; padded slots are 0)."""

    cross: np.ndarray  # ⟨g_w^i, g_l^j⟩
    chosen: np.ndarray  # ⟨g_w^i, g_w^j⟩
    rejected: np.ndarray  # ⟨g_l^i, g_l^j⟩


@partial(jax.jit, static_argnums=0)
def _token_grams_chunk(graphdef, params, pairs: Pairs):
    jacobian = jax.jacrev(partial(token_logprobs, graphdef))

    def one(pair: Pairs):
        j_w, j_l = jacobian(params, pair.chosen), jacobian(params, pair.rejected)
        return _leaf_gram(j_w, j_l), _leaf_gram(j_w, j_w), _leaf_gram(j_l, j_l)

    return jax.vmap(one)(pairs)


@partial(jax.jit, static_argnums=(0, 3))
def _structured_token_grams_chunk(graphdef, params, pairs: Pairs, plan):
    def one(pair: Pairs):
        cross, chosen, rejected = ghost.pair_leaf_grams(graphdef, params, pair, plan,
                                                        per_token=True)[2].sum(1)
        return cross, chosen, rejected

    return jax.vmap(one)(pairs)


def token_grams(graphdef, params, pairs: Pairs, *, chunk_size: int | None = None,
                progress: Callable | None = None,
                implementation: Strategy | str = "materialize",
                mesh=None, length_bucket: int | None = None) -> TokenGrams:
    """Token-wise Gram matrices of every pair; memory is bounded by ``chunk_size`` pairs'
    per-token Jacobians (2 · chunk_size · R · P floats) with ``materialize``, by their per-token
    output cotangents (2 · chunk_size · R · T · Σ widths) with ``structured``; by default the
    most that fit ``memory.budget_bytes()``, up to 8. With a ``mesh``
    each chunk is split over its devices; ``length_bucket`` as in ``pair_geometry``."""
    return TokenGrams(*_map_pair_chunks("token_grams", implementation, graphdef, params, pairs,
                                        chunk_size, progress, mesh, length_bucket))


#: Per pair-level Gram function: its chunk function for each strategy (``auto`` is the
#: structured one with a per-leaf plan), whether it works per token, and its default chunk cap.
_PAIR_CHUNKS = {
    "pair_geometry": ({Strategy.MATERIALIZE: _pair_geometry_chunk,
                       Strategy.STRUCTURED: _structured_pair_geometry_chunk,
                       Strategy.AUTO: _structured_pair_geometry_chunk}, False, 32),
    "token_grams": ({Strategy.MATERIALIZE: _token_grams_chunk,
                     Strategy.STRUCTURED: _structured_token_grams_chunk,
                     Strategy.AUTO: _structured_token_grams_chunk}, True, 8),
}


def _map_pair_chunks(name: str, implementation: Strategy | str, graphdef, params, pairs: Pairs,
                     chunk_size: int | None, progress: Callable | None, mesh,
                     length_bucket: int | None):
    """The outputs of the Gram function ``name`` over every pair, in chunks (by default the most
    that fit ``memory.budget_bytes()``, up to its cap), each split over ``mesh`` when given. With
    ``length_bucket``, the pairs run sorted by length and each chunk is cut to its longest
    sequence rounded up to a multiple of ``length_bucket`` tokens (outputs in the given order)."""
    table, per_token, cap = _PAIR_CHUNKS[name]
    strategy = as_strategy(implementation)
    if chunk_size is None:
        chunk_size = chunk_for_budget(graphdef, params, pairs.chosen, strategy,
                                      per_token=per_token, cap=cap)
    params, chunk_size = _on_mesh(params, chunk_size, mesh)
    chunk_fn = table[strategy]
    if strategy is Strategy.MATERIALIZE:
        fn = partial(chunk_fn, graphdef, params)
    else:
        plans = {}  # one per sequence length

        def fn(chunk):
            length = chunk.chosen.tokens.shape[-1]
            if length not in plans:
                plans[length] = _plan(graphdef, params, strategy, chunk.chosen,
                                      per_token=per_token, n_sequences=2 * chunk_size,
                                      n_blocks=3 * chunk_size)
            return chunk_fn(graphdef, params, chunk, plans[length])
    if length_bucket is None:
        return map_chunks(fn, pairs, len(pairs), chunk_size, progress=progress, mesh=mesh)
    check_positive_int("length_bucket", length_bucket)
    pairs = jax.device_get(pairs)
    order = pairs.by_length()
    outs = map_chunks(fn, pairs[order], len(pairs), chunk_size, progress=progress, mesh=mesh,
                      prepare=lambda chunk: chunk.cut_padding(length_bucket))
    inverse = np.argsort(order)
    return jax.tree.map(lambda x: x[inverse], outs)


def pairs_as_responses(pairs: Pairs) -> Responses:
    """The ``2B`` responses of ``B`` pairs: every chosen response, then every rejected one."""
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), pairs.chosen, pairs.rejected)


@partial(jax.jit, static_argnums=0)
def _materialized_block(graphdef, params, batch: Responses):
    return jax.vmap(jax.grad(partial(sequence_logprob, graphdef)), in_axes=(None, 0))(params, batch)


_jit_leaf_gram = jax.jit(_leaf_gram)

#: Sub-blocks of a chunk that ``sequence_gram`` computes side by side, one per thread, on a CPU:
#: one XLA execution leaves cores idle in its single-threaded steps (elementwise fusions, and the
#: skinny ``[N, K] · [K, N]`` contraction dots, which run on one core), while separate executions
#: run concurrently (docs/performance.md; measured on 2 cores, capped for wider machines).
SIDE_BY_SIDE = min(os.cpu_count() or 1, 4)
_POOL = ThreadPoolExecutor(max_workers=SIDE_BY_SIDE)


@partial(jax.jit, static_argnums=(0, 3))
def _structured_block(graphdef, params, batch: Responses, plan):
    return jax.vmap(lambda s: _features(graphdef, params, s, plan, per_token=False)[1])(batch)


@partial(jax.jit, static_argnums=2)
def _structured_cross(features_a, features_b, terms):
    """Formed leaves are contracted as stacks of rows; ghost leaves response pair by pair."""
    gram = 0.0
    for k, leaf_terms in enumerate(terms):
        if features_a.dense[k] is not None:
            gram = gram + ghost.row_gram(features_a.dense[k], features_b.dense[k])
            continue
        one = lambda a, b, t=leaf_terms: ghost.ghost_gram(a, b, t)[0, 0]  # noqa: E731
        gram = gram + jax.vmap(lambda a: jax.vmap(lambda b: one(a, b))(features_b.taps))(
            features_a.taps)
    return gram


def _block_fits(params, chunk_size: int) -> bool:
    """Whether ``chunk_size`` per-example gradients fit ``memory.budget_bytes()``. A full Gram
    contracts every pair of responses, so when they fit, ``auto`` forms them (one backward per
    response, one matmul per leaf): measured faster than the ghost product and than the per-leaf
    mix from taps on every benchmark config (docs/performance.md)."""
    return chunk_size * memory.tree_bytes(params) <= memory.budget_bytes()


def sequence_gram(graphdef, params, batch: Responses | Pairs, *, chunk_size: int = 64,
                  progress: Callable | None = None,
                  implementation: Strategy | str = "materialize",
                  mesh=None) -> np.ndarray:
    """``[N, N]`` Gram ``K[a, b] = ⟨g_a, g_b⟩`` of the sequence log-prob gradients of every response
    (for ``Pairs``, the ``2B`` responses of ``pairs_as_responses``: the empirical NTK of the batch).

    Blocks of ``chunk_size`` responses are contracted block pair by block pair, so memory holds two
    blocks' gradients (or taps) at a time; the diagonal block is computed once. With a ``mesh``
    each block is split over its devices; without one, on a CPU, into ``SIDE_BY_SIDE`` sub-blocks
    computed and contracted in threads. The result is exactly symmetric, in the parameters' dtype."""
    strategy = as_strategy(implementation)
    params, chunk_size = _on_mesh(params, chunk_size, mesh)
    if isinstance(batch, Pairs):
        batch = pairs_as_responses(batch)
    # a batch smaller than one block is not padded up to it (its shape is the padded shape)
    n = int(batch.tokens.shape[0])
    chunk_size = padded_size(min(chunk_size, n), mesh)
    if strategy is Strategy.AUTO and _block_fits(params, chunk_size):
        strategy = Strategy.MATERIALIZE
    if strategy is Strategy.MATERIALIZE:
        block_of = partial(_materialized_block, graphdef, params)
        cross_of = _jit_leaf_gram
    else:
        n_blocks = -(-n // chunk_size)
        plan = _plan(graphdef, params, strategy, batch, per_token=False,
                     n_sequences=chunk_size * min(2, n_blocks), n_blocks=chunk_size**2)
        block_of = lambda b: _structured_block(graphdef, params, b, plan)  # noqa: E731
        terms = ghost.leaf_terms(graphdef, params)
        cross_of = lambda a, b: _structured_cross(a, b, terms)  # noqa: E731
    # a mesh already splits each chunk over its devices; on one CPU the chunk is split into
    # sub-blocks computed side by side
    parts = min(SIDE_BY_SIDE, chunk_size) if mesh is None and jax.default_backend() == "cpu" else 1
    sub = -(-chunk_size // parts)
    chunk_size = sub * parts
    host = jax.device_get(batch)  # sliced on the host: no device dispatch per slice
    place = (lambda b: b) if mesh is None else (lambda b: shard_batch(b, mesh))  # noqa: E731

    def block(idx: np.ndarray) -> list:
        """The gradients (or features) of the rows ``idx`` (a padded chunk) as ``parts``
        sub-blocks."""
        pieces = [place(host[idx[k * sub:(k + 1) * sub]]) for k in range(parts)]
        return list(_POOL.map(lambda piece: jax.block_until_ready(block_of(piece)), pieces))

    def cross(rows: list, cols: list, diagonal: bool) -> np.ndarray:
        """``[chunk, chunk]`` products of two chunks, sub-block pair by pair, side by side."""
        pairs_ij = [(i, j) for i in range(parts) for j in range(parts) if not diagonal or i <= j]
        grams = _POOL.map(lambda ij: np.asarray(cross_of(rows[ij[0]], cols[ij[1]])), pairs_ij)
        k = np.empty((chunk_size, chunk_size), np.float64)
        for (i, j), g in zip(pairs_ij, grams):
            k[i * sub:(i + 1) * sub, j * sub:(j + 1) * sub] = g
            if diagonal:
                k[j * sub:(j + 1) * sub, i * sub:(i + 1) * sub] = g.T
        return k

    chunks = chunk_indices(n, chunk_size)
    gram = np.zeros((n, n), np.float64)
    for i, row_idx in enumerate(chunks):
        lo, rows = int(row_idx[0]), block(row_idx)
        for col_idx in chunks[i:]:
            hi = int(col_idx[0])
            k = cross(rows, rows if hi == lo else block(col_idx), diagonal=hi == lo)
            k = k[:min(chunk_size, n - lo), :min(chunk_size, n - hi)]
            gram[lo:lo + k.shape[0], hi:hi + k.shape[1]] = k
            gram[hi:hi + k.shape[1], lo:lo + k.shape[0]] = k.T
        if progress is not None:
            progress(min(lo + chunk_size, n))
    # exactly symmetric, in the parameters' precision
    return ((gram + gram.T) / 2).astype(jnp.result_type(*jax.tree.leaves(params)))


@struct.dataclass
class OutputLayerCheck:
    """⟨g_w, g_l⟩ of the sentiment token restricted to the unembedding, two ways, ``[B]``."""

    closed_form: np.ndarray  # (Σ_i p_i² − p_w − p_l) (‖h‖² + 1[bias])
    autodiff: np.ndarray  # ⟨∇_(W,b) log p_w, ∇_(W,b) log p_l⟩ with h held fixed
    p_w: np.ndarray
    p_l: np.ndarray


@partial(jax.jit, static_argnums=0)
def _output_layer_chunk(graphdef, params, pairs: Pairs):
    model = nnx.merge(graphdef, params)
    w, b = model.unembedding()

    def head_logprob(head, h, token):
        w_, b_ = head
        z = h @ w_ if b_ is None else h @ w_ + b_
        return jax.nn.log_softmax(z)[token]

    def one(pair: Pairs):
        pos = pair.chosen.start - 1  # the prompt's last position predicts the sentiment token
        h = model.features(pair.chosen.tokens)[pos]
        z = h @ w if b is None else h @ w + b
        p = jax.nn.softmax(z)
        tok_w, tok_l = pair.chosen.tokens[pair.chosen.start], pair.rejected.tokens[pair.rejected.start]
        bias_term = 0.0 if b is None else 1.0
        closed = (jnp.sum(p * p) - p[tok_w] - p[tok_l]) * (jnp.dot(h, h) + bias_term)
        grad_head = jax.grad(head_logprob)
        g_w, g_l = grad_head((w, b), h, tok_w), grad_head((w, b), h, tok_l)
        return closed, optax.tree.vdot(g_w, g_l), p[tok_w], p[tok_l]

    return jax.vmap(one)(pairs)


def output_layer_check(graphdef, params, pairs: Pairs, *, chunk_size: int = 64) -> OutputLayerCheck:
    """The output-layer identity of docs/design.md §1.3 at the sentiment token of every pair:

        ⟨∇_W log p_w, ∇_W log p_l⟩ = (Σ_i p_i² − p_w − p_l) ‖h‖²   (+ the same factor for a bias),

    since ``∇_W log p_k = (e_k − p) hᵀ`` and ``(e_w − p)ᵀ(e_l − p) = Σ p² − p_w − p_l`` for ``w ≠ l``."""
    fn = partial(_output_layer_chunk, graphdef, params)
    return OutputLayerCheck(*map_chunks(fn, pairs, len(pairs), chunk_size))
