"""Structured ("ghost") gradient inner products from layer inputs and output cotangents.

For a dense layer ``y_t = x_t K + b`` at positions ``t`` of one sequence, the gradient of a scalar ``f``
is ``∇_K f = Σ_t x_t ⊗ g_t = Xᵀ G`` with ``g_t = ∂f/∂y_t``, so for two scalars (two sequences, or
two tokens)

    ⟨∇_K f_a, ∇_K f_b⟩ = Σ_{s,t} (x_a,s · x_b,t) (g_a,s · g_b,t) = ⟨X_a X_bᵀ, G_a G_bᵀ⟩,

and no per-example gradient is ever formed. An embedding ``E[ids]`` is the same with one-hot inputs
(``x_a,s · x_b,t = 1[ids_a,s = ids_b,t]``); a tied embedding adds the unembedding's term
``∇_E = Σ_t g_t ⊗ h_t`` (logit cotangent ⊗ final feature), and the cross terms between the two are
kept. Per-token rows ``f^i = log π(y_i | x, y_<i)`` share ``X`` and differ in ``G^i``; with
``Z^j = (X_a X_bᵀ) G_b^j`` the token Gram is ``M[i, j] = ⟨G_a^i, Z^j⟩`` in ``O(T²n + R T² m + R² T m)``.

Nothing here knows a model's layers. Each model records its factors in its own forward pass
(``models.layers``: ``sow`` of each input, ``perturb`` of each output under ``nnx.capture``) and
declares which factors make up which parameter's gradient (``gradient_terms``). ``record_taps``
runs that forward pass once and takes one ``jax.vjp`` with respect to the zero perturbations
(``∂f/∂δ = ∂f/∂y``, the ghost-norm trick) while the factored parameters are held constant, so the
backward pass forms no weight gradient. The small leaves (biases, norm scales) get their exact
per-row gradients from the same ``vjp``.

``plan_leaves`` picks, leaf by leaf, between the ghost product and the outer-product gradient
``Xᵀ G`` formed from the same taps (cheaper when sequences are long and there are few pairs), by a
flop count from the shapes of the taps, under a memory budget.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
from flax import nnx, struct

from entangle_jax import memory
from entangle_jax.data.pairs import Responses
from entangle_jax.logprob import picked_logprobs, response_positions
from entangle_jax.models.layers import Term
from entangle_jax.pytrees import leaf_keys, path_key

#: Per-leaf strategies of a plan: ``ghost`` product, ``outer`` (form ``Xᵀ G``), ``exact`` (small leaf).
LEAF_STRATEGIES = ("ghost", "outer", "exact")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def gradient_terms(model) -> dict[str, tuple[Term, ...]]:
    """Every factored parameter of ``model`` → its gradient terms, with tap names made absolute
    (each module declares its own in ``gradient_terms()``; a tied embedding collects two)."""
    terms: dict[str, tuple[Term, ...]] = {}
    for path, module in nnx.iter_modules(model):
        declare = getattr(module, "gradient_terms", None)
        if declare is None:
            continue
        prefix = path_key(path)
        for leaf, declared in declare().items():
            key = _join(prefix, leaf)
            terms[key] = terms.get(key, ()) + tuple(
                Term(_join(prefix, t.shared), _join(prefix, t.rowed), t.shared_left)
                for t in declared)
    return terms


def leaf_terms(graphdef, params) -> tuple[tuple[Term, ...] | None, ...]:
    """The factored terms of each leaf's gradient (``jax.tree.leaves`` order); ``None`` marks a small
    leaf whose per-row gradient is formed exactly."""
    terms = gradient_terms(nnx.merge(graphdef, params))
    return tuple(terms.get(key) for key in leaf_keys(params))


@struct.dataclass
class Taps:
    """What the structured products need of one sequence (leading batch axes under ``vmap``).

    ``inputs[name]`` ``[T, n]`` (integer ``[T]`` for an embedding's ids); ``cotangents[name]``
    ``[R, T, m]`` (R = 1 for the sequence log-prob, the response window for per-token rows);
    ``exact[i]`` ``[R, *shape]`` per-row gradient of small leaf ``i`` (index in
    ``jax.tree.leaves`` order)."""

    inputs: dict
    cotangents: dict
    exact: dict

    def __getitem__(self, index) -> "Taps":
        return jax.tree.map(lambda x: x[index], self)


def _flat(state) -> dict:
    """A captured ``nnx.State`` as ``{tap name: array}``."""
    return {path_key(path): var[...] for path, var in nnx.to_flat_state(state)}


def _stage_small_leaves(graphdef, params) -> list[tuple[int, ...]]:
    """For each stage of the model's chain, the indices of the small (exactly differentiated)
    leaves it owns; every small leaf belongs to one stage."""
    model = nnx.merge(graphdef, params)
    keys = leaf_keys(params)
    small = [i for i, t in enumerate(leaf_terms(graphdef, params)) if t is None]
    owned = []
    for k in range(model.n_stages):
        prefixes = model.stage_params(k)
        owned.append(tuple(i for i in small if any(keys[i] == p or keys[i].startswith(p + "/")
                                                   for p in prefixes)))
    counts = [sum(i in stage for stage in owned) for i in small]
    if counts != [1] * len(small):
        orphan = next(keys[i] for i, c in zip(small, counts) if c != 1)
        raise ValueError(f"parameter {orphan} belongs to {max(counts)} stages; each small "
                         "parameter must belong to exactly one (CausalLM.stage_params)")
    return owned


def stream_taps(graphdef, params, seqs: Responses, *, per_token: bool):
    """Run the model's chain forward on a batch of sequences ``[S, T]`` (all factored leaves held
    constant), then its backward pass stage by stage from the head down; yields
    ``(log-probs [S, window], Taps)`` per stage, each ``Taps`` holding that stage's taps with a
    leading sequence axis ``[S, …]`` (cotangents ``[S, R, T, m]``). Only one stage's per-row
    cotangents exist at a time, whatever the model's depth. ``per_token`` takes one row per
    response token (``R`` = window), else the sequence log-prob (``R`` = 1)."""
    leaves, treedef = jax.tree.flatten(params)
    owned = _stage_small_leaves(graphdef, params)
    n_stages = nnx.merge(graphdef, params).n_stages
    positions = jax.vmap(lambda s: response_positions(s)[1])(seqs)

    def run(k, small, perturbation, x, seq, pos):
        """Stage ``k`` of one sequence with its small leaves ``small`` as inputs."""
        full = list(leaves)
        for i, value in zip(owned[k], small):
            full[i] = value
        model = nnx.merge(graphdef, jax.tree.unflatten(treedef, full))
        capture = nnx.capture(lambda m, x: m.stage(k, x, seq.tokens, pos), nnx.Intermediate,
                              init=perturbation)
        y, recorded = capture(model, x)
        return (picked_logprobs(y, seq) if k == n_stages - 1 else y), _flat(recorded)

    def zeros_of(k, x):
        def shapes(seq, pos, x):
            model = nnx.merge(graphdef, params)
            return nnx.capture(lambda m, x: m.stage(k, x, seq.tokens, pos),
                               nnx.Perturbation)(model, x)[1]
        spec = jax.eval_shape(jax.vmap(shapes), seqs, positions, x)
        return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), spec)

    n_seqs = seqs.tokens.shape[0]
    x, backward = None, []
    for k in range(n_stages):
        small = [jnp.broadcast_to(leaves[i], (n_seqs, *leaves[i].shape)) for i in owned[k]]
        stage = jax.vmap(partial(run, k))
        x, vjp_fn, recorded = jax.vjp(lambda sm, pe, xx: stage(sm, pe, xx, seqs, positions),
                                      small, zeros_of(k, x), x, has_aux=True)
        backward.append((vjp_fn, recorded))
    logp = x
    rows = (jnp.eye(seqs.window, dtype=logp.dtype) if per_token
            else jnp.ones((1, seqs.window), logp.dtype))
    cotangent = jnp.broadcast_to(rows[:, None, :], (rows.shape[0], *logp.shape))
    for k in reversed(range(n_stages)):
        vjp_fn, recorded = backward[k]
        exact, cot, cotangent = jax.vmap(vjp_fn)(cotangent)
        to_rows = partial(jnp.swapaxes, axis1=0, axis2=1)  # [R, S, …] → [S, R, …]
        yield logp, Taps(recorded, {name: to_rows(c) for name, c in _flat(cot).items()},
                         {i: to_rows(g) for i, g in zip(owned[k], exact)})


def record_taps(graphdef, params, seq: Responses, *, per_token: bool):
    """``(log-probs [window], Taps)`` of one sequence: every stage's taps (``stream_taps``)."""
    inputs, cotangents, exact = {}, {}, {}
    for logp, taps in stream_taps(graphdef, params, seq[None], per_token=per_token):
        inputs.update(taps.inputs)
        cotangents.update(taps.cotangents)
        exact.update(taps.exact)
    return logp[0], Taps(inputs, cotangents, exact)[0]


def _spec(tree, *, row: bool = False):
    """A hashable description of ``tree``: its leaves' shapes and dtypes (of one row, without the
    leading axis, when ``row``) and its structure."""
    leaves, structure = jax.tree.flatten(tree)
    return tuple(jax.ShapeDtypeStruct(x.shape[1:] if row else x.shape, x.dtype)
                 for x in leaves), structure


def tap_shapes(graphdef, params, seq: Responses, *, per_token: bool) -> Taps:
    """The shapes (``jax.ShapeDtypeStruct``) of ``record_taps``' taps of one sequence shaped like
    ``seq``. Tracing the model for them takes about as long as a small model's whole Gram, so it
    is done once per graph, parameter shapes, sequence shape and ``per_token``."""
    return _traced_tap_shapes(graphdef, *_spec(params), *_spec(seq), per_token)


@lru_cache(maxsize=32)
def _traced_tap_shapes(graphdef, param_specs, param_tree, seq_specs, seq_tree, per_token: bool):
    return jax.eval_shape(lambda p, s: record_taps(graphdef, p, s, per_token=per_token)[1],
                          jax.tree.unflatten(param_tree, param_specs),
                          jax.tree.unflatten(seq_tree, seq_specs))


#: Columns per chunk of ``row_gram``: XLA's CPU dot of a skinny ``[N, K] · [K, N]`` product runs
#: 2-5x faster on column chunks of about this size than on one long ``K`` (docs/performance.md).
ROW_GRAM_CHUNK = 16384


def _column_chunks(k: int) -> int:
    """The fewest chunks of at most ``ROW_GRAM_CHUNK`` columns that split ``k`` evenly (1 when
    none does within twice that count: the product is then taken whole)."""
    least = -(-k // ROW_GRAM_CHUNK)
    return next((c for c in range(least, 2 * least + 1) if k % c == 0), 1)


def row_gram(x, y):
    """``[Nx, Ny]`` inner products ``⟨x_i, y_j⟩`` over all trailing axes of two stacks of rows,

        G = Σ_c X_c Y_cᵀ      over column chunks c of the flattened rows (one ``lax.scan``)."""
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    chunks = _column_chunks(x.shape[1])
    if chunks == 1:
        return x @ y.T
    xc, yc = x.reshape(x.shape[0], chunks, -1), y.reshape(y.shape[0], chunks, -1)

    def add_chunk(gram, c):
        column = lambda a: jax.lax.dynamic_index_in_dim(a, c, 1, keepdims=False)  # noqa: E731
        return gram + column(xc) @ column(yc).T, None

    gram = jnp.zeros((x.shape[0], y.shape[0]), jnp.result_type(x, y))
    return jax.lax.scan(add_chunk, gram, jnp.arange(chunks))[0]


def _is_ids(x) -> bool:
    return jnp.issubdtype(x.dtype, jnp.integer)


def _pairwise(x, y, dtype):
    """``[..., Ta, Tb]`` products ``⟨x_s, y_t⟩`` of two factors; an integer ``[T]`` factor holds ids of
    one-hot rows."""
    x_ids, y_ids = _is_ids(x), _is_ids(y)
    if x_ids and y_ids:
        return (x[:, None] == y[None, :]).astype(dtype)
    if x_ids:
        return jnp.swapaxes(y[..., x], -1, -2)
    if y_ids:
        return x[..., y]
    return x @ jnp.swapaxes(y, -1, -2)


def _term_gram(taps_a: Taps, term_a: Term, taps_b: Taps, term_b: Term):
    """``[Ra, Rb]`` inner products of one gradient term of each side (see the module docstring)."""
    sa, ca = taps_a.inputs[term_a.shared], taps_a.cotangents[term_a.rowed]
    sb, cb = taps_b.inputs[term_b.shared], taps_b.cotangents[term_b.rowed]
    if term_a.shared_left == term_b.shared_left:
        z = jnp.einsum("st,jtm->jsm", _pairwise(sa, sb, ca.dtype), cb)  # Z^j = (S_a S_bᵀ) C_b^j
        return ca.reshape(ca.shape[0], -1) @ z.reshape(z.shape[0], -1).T
    return jnp.einsum("ist,jst->ij", _pairwise(ca, sb, ca.dtype), _pairwise(sa, cb, ca.dtype))


def outer_gradient(taps: Taps, terms: tuple[Term, ...], shape: tuple[int, ...]):
    """``[R, *shape]`` per-row gradient of a factored leaf, formed as ``Σ_t u_t ⊗ v_t``."""
    rows = taps.cotangents[terms[0].rowed].shape[0]
    grad = jnp.zeros((rows, *shape), taps.cotangents[terms[0].rowed].dtype)
    for term in terms:
        s, c = taps.inputs[term.shared], taps.cotangents[term.rowed]
        if _is_ids(s):  # one-hot rows: scatter the cotangents into the rows of their ids
            grad = grad.at[:, s].add(c)
        elif term.shared_left:
            grad = grad + jnp.einsum("tn,rtm->rnm", s, c)
        else:
            grad = grad + jnp.einsum("rtn,tm->rnm", c, s)
    return grad


@struct.dataclass
class Features:
    """Per-sequence material for the inner products: ``taps`` for ghost leaves and the formed per-row
    gradients ``dense`` ``[R, *shape]`` (``None`` for ghost leaves) for outer and exact leaves."""

    taps: Taps
    dense: list


def prepare(taps: Taps, params, terms, plan: tuple[str, ...]) -> Features:
    """Form the per-row gradients of the ``outer`` and ``exact`` leaves of ``plan``."""
    dense = []
    for i, (leaf, leaf_terms_k, how) in enumerate(zip(jax.tree.leaves(params), terms, plan)):
        if how == "exact":
            dense.append(taps.exact[i])
        elif how == "outer":
            dense.append(outer_gradient(taps, leaf_terms_k, leaf.shape))
        else:
            dense.append(None)
    return Features(taps, dense)


def leaf_grams(fa: Features, fb: Features, terms) -> jnp.ndarray:
    """``[n_leaves, Ra, Rb]`` inner products of every row of ``fa`` with every row of ``fb``, per leaf."""
    return jnp.stack([ghost_gram(fa.taps, fb.taps, leaf_terms_k) if fa.dense[k] is None
                      else row_gram(fa.dense[k], fb.dense[k])
                      for k, leaf_terms_k in enumerate(terms)])


def ghost_gram(taps_a: Taps, taps_b: Taps, terms: tuple[Term, ...]) -> jnp.ndarray:
    """``[Ra, Rb]`` ghost inner products of one factored leaf's per-row gradients."""
    return sum(_term_gram(taps_a, ta, taps_b, tb) for ta in terms for tb in terms)


def _leaf_gram(taps_a: Taps, taps_b: Taps, i: int, terms, how: str, shape):
    """``[Ra, Rb]`` products of leaf ``i``'s per-row gradients by its planned strategy."""
    if how == "exact":
        return row_gram(taps_a.exact[i], taps_b.exact[i])
    if how == "outer":
        return row_gram(outer_gradient(taps_a, terms, shape), outer_gradient(taps_b, terms, shape))
    return ghost_gram(taps_a, taps_b, terms)


def pair_leaf_grams(graphdef, params, pair, plan: tuple[str, ...], *, per_token: bool):
    """``(log π_w [window], log π_l [window], grams [3, n_leaves, R, R])`` of one pair, the grams
    being the per-leaf products (chosen × rejected, chosen × chosen, rejected × rejected) of the
    per-row gradients, computed while the backward pass streams through the model's stages: each
    leaf is contracted as soon as the stages that record its factors are done, and a stage's taps
    are dropped once no remaining leaf needs them."""
    terms = leaf_terms(graphdef, params)
    shapes = [x.shape for x in jax.tree.leaves(params)]
    seqs = jax.tree.map(lambda a, b: jnp.stack([a, b]), pair.chosen, pair.rejected)
    pending = set(range(len(terms)))
    available = Taps({}, {}, {})
    grams = [None] * len(terms)
    for logp, taps in stream_taps(graphdef, params, seqs, per_token=per_token):
        available = Taps({**available.inputs, **taps.inputs},
                         {**available.cotangents, **taps.cotangents},
                         {**available.exact, **taps.exact})
        for i in sorted(pending):
            ready = (i in available.exact if terms[i] is None else
                     all(t.shared in available.inputs and t.rowed in available.cotangents
                         for t in terms[i]))
            if not ready:
                continue
            w, l_ = available[0], available[1]
            grams[i] = jnp.stack([_leaf_gram(a, b, i, terms[i], plan[i], shapes[i])
                                  for a, b in ((w, l_), (w, w), (l_, l_))])
            pending.discard(i)
        needed = {name for i in pending for t in (terms[i] or ()) for name in (t.shared, t.rowed)}
        available = Taps({k: v for k, v in available.inputs.items() if k in needed},
                         {k: v for k, v in available.cotangents.items() if k in needed}, {})
    if pending:
        raise ValueError(f"{len(pending)} parameters got no taps from any stage")
    return logp[0], logp[1], jnp.stack(grams, axis=1)


def _pairwise_cost(x, y) -> float:
    """Flops of ``_pairwise`` on factors of these shapes (gathers of ids cost nothing)."""
    if _is_ids(x) or _is_ids(y):
        return 0.0
    batch = max(math.prod(x.shape[:-2]), math.prod(y.shape[:-2]))
    return 2 * batch * x.shape[-2] * y.shape[-2] * x.shape[-1]


def _ghost_cost(terms, taps: Taps) -> float:
    """Flops of one ``[R, R]`` ghost block of a leaf from the shapes of the taps: per pair of
    terms, ``S_a S_bᵀ`` then ``Z = (S_a S_bᵀ) C`` and ``C Zᵀ`` (``T²n + R T² m + R² T m``), or the two
    rowed pairwise products of a tied cross term."""
    cost = 0.0
    for ta in terms:
        for tb in terms:
            sa, ca = taps.inputs[ta.shared], taps.cotangents[ta.rowed]
            sb, cb = taps.inputs[tb.shared], taps.cotangents[tb.rowed]
            if ta.shared_left != tb.shared_left:
                contraction = 2 * ca.shape[0] * cb.shape[0] * ca.shape[1] * cb.shape[1]
                cost += _pairwise_cost(ca, sb) + _pairwise_cost(sa, cb) + contraction
                continue
            rows, t, m = ca.shape
            cost += _pairwise_cost(sa, sb) + 2 * rows * t * t * m + 2 * rows * rows * t * m
    return cost


def plan_leaves(graphdef, params, implementation: str, seq: Responses, *, per_token: bool,
                n_sequences: int, n_blocks: int, memory_budget: float | None = None
                ) -> tuple[str, ...]:
    """Per-leaf strategy for ``n_blocks`` ``[R, R]`` blocks among ``n_sequences`` sequences shaped
    like ``seq`` (one row of a batch): ``structured`` puts every factored leaf on the ghost
    product; ``auto`` takes, per leaf, the cheaper of ghost (``n_blocks · ghost``) and outer
    (``n_sequences`` outer products to form plus ``n_blocks · R² · size`` to contract) when the
    formed gradients fit ``memory_budget`` bytes (``memory.budget_bytes()``). Costs come from the
    shapes of the taps; a plan is made once per graph, shapes and arguments."""
    if implementation not in ("structured", "auto"):
        raise ValueError(f"implementation={implementation!r} is invalid: one of 'structured', 'auto'")
    memory_budget = memory.budget_bytes() if memory_budget is None else memory_budget
    return _cached_plan(graphdef, *_spec(params), implementation, *_spec(seq, row=True), per_token,
                        n_sequences, n_blocks, memory_budget)


@lru_cache(maxsize=64)
def _cached_plan(graphdef, param_specs, param_tree, implementation: str, seq_specs, seq_tree,
                 per_token: bool, n_sequences: int, n_blocks: int, memory_budget: float):
    params = jax.tree.unflatten(param_tree, param_specs)
    taps = _traced_tap_shapes(graphdef, param_specs, param_tree, seq_specs, seq_tree, per_token)
    plan = []
    for leaf, terms in zip(param_specs, leaf_terms(graphdef, params)):
        if terms is None:
            plan.append("exact")
            continue
        if any(_is_ids(taps.inputs[t.shared]) for t in terms):  # a scatter into V rows: ghost
            plan.append("ghost")
            continue
        rows, t = taps.cotangents[terms[0].rowed].shape[:2]
        size = math.prod(leaf.shape)
        ghost = n_blocks * _ghost_cost(terms, taps)
        outer = 2 * (n_sequences * rows * t * size * len(terms) + n_blocks * rows**2 * size)
        fits = n_sequences * rows * size * leaf.dtype.itemsize <= memory_budget
        plan.append("outer" if implementation == "auto" and fits and outer < ghost else "ghost")
    return tuple(plan)
