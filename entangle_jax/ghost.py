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

The cotangents come from one ``jax.vjp`` of a functional forward over the parameter state that adds a
zero perturbation ``δ`` to every dense output (``∂f/∂δ = ∂f/∂y``, the ghost-norm trick) while the
kernels are held constant, so the backward pass forms no weight gradient. The small leaves (biases,
LayerNorm scales and offsets) get their exact per-row gradients from the same ``vjp``.

``plan_leaves`` picks, leaf by leaf, between the ghost product and the outer-product gradient
``Xᵀ G`` formed from the same taps (cheaper when sequences are long and there are few pairs), by a
flop count under a memory budget.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx, struct

from entangle_jax.data.pairs import Responses

#: Per-leaf strategies of a plan: ``ghost`` product, ``outer`` (form ``Xᵀ G``), ``exact`` (small leaf).
LEAF_STRATEGIES = ("ghost", "outer", "exact")


class Term(NamedTuple):
    """One ``Σ_t u_t ⊗ v_t`` term of a leaf's gradient: ``shared`` names the factor that is the same
    for every row (a layer input, or ``tokens``/``positions`` for one-hot ids), ``rowed`` the layer
    whose output cotangent is the per-row factor; ``shared_left`` says which factor indexes the
    leaf's first axis."""

    shared: str
    rowed: str
    shared_left: bool


_DENSE = {("attn", "qkv"): "qkv", ("attn", "out"): "out", ("mlp", "up"): "up", ("mlp", "down"): "down"}


def _keys(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def leaf_terms(params) -> list[tuple[Term, ...] | None]:
    """The factored terms of each leaf's gradient (``jax.tree.leaves`` order); ``None`` marks a small
    leaf whose per-row gradient is formed exactly."""
    tied = "unembed" not in params
    terms = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = _keys(path)
        if keys[0] == "blocks" and keys[4] == "kernel":
            name = f"{keys[1]}.{_DENSE[keys[2], keys[3]]}"
            terms.append((Term(name, name, True),))
        elif keys[0] == "token_embed":
            own = (Term("tokens", "embed", True),)
            terms.append(own + (Term("logits", "logits", False),) if tied else own)
        elif keys[0] == "pos_embed":
            terms.append((Term("positions", "embed", True),))
        elif keys[0] == "unembed":
            terms.append((Term("logits", "logits", True),))
        else:
            terms.append(None)
    return terms


def _causal_attention(qkv, n_heads: int):
    """Multi-head causal attention of ``model.CausalSelfAttention`` from its fused ``qkv`` output."""
    t, d3 = qkv.shape[-2:]
    d = d3 // 3
    head = d // n_heads
    q, k, v = (a.reshape(t, n_heads, head) for a in jnp.split(qkv, 3, axis=-1))
    scores = jnp.einsum("qhd,khd->hqk", q, k) / jnp.sqrt(head).astype(qkv.dtype)
    scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, jnp.finfo(qkv.dtype).min)
    attn = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("hqk,khd->qhd", attn, v).reshape(t, d)


def output_widths(config, seq_len: int) -> dict[str, tuple[int, int]]:
    """``{layer: (T, width)}`` of every perturbed output (the shapes of ``δ`` and of the cotangents)."""
    d = config.d_model
    widths = {"embed": d, "logits": config.vocab_size}
    for i in range(config.n_layers):
        widths.update({f"{i}.qkv": 3 * d, f"{i}.out": d, f"{i}.up": config.d_mlp, f"{i}.down": d})
    return {name: (seq_len, w) for name, w in widths.items()}


def tapped_logits(model, tokens, deltas):
    """The forward pass of ``model.Transformer`` on one sequence ``[T]`` with ``deltas[name]`` added to
    each dense output; returns the logits ``[T, V]`` and the input of each dense layer."""
    inputs = {}
    x = model.token_embed(tokens) + model.pos_embed(jnp.arange(tokens.shape[-1])) + deltas["embed"]
    for i, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        h = inputs[f"{i}.qkv"] = block.ln1(x)
        ctx = inputs[f"{i}.out"] = _causal_attention(attn.qkv(h) + deltas[f"{i}.qkv"], attn.n_heads)
        x = x + attn.out(ctx) + deltas[f"{i}.out"]
        h = inputs[f"{i}.up"] = block.ln2(x)
        a = inputs[f"{i}.down"] = jax.nn.gelu(mlp.up(h) + deltas[f"{i}.up"])
        x = x + mlp.down(a) + deltas[f"{i}.down"]
    h = inputs["logits"] = model.ln_f(x)
    w, b = model.unembedding()
    z = h @ w + deltas["logits"]
    return (z if b is None else z + b), inputs


def response_token_logprobs(logits, seq: Responses):
    """``[window]`` per-token response log-probs from the full logits, as ``logprob.token_logprobs``."""
    t = seq.tokens.shape[-1]
    targets = jnp.clip(seq.start + jnp.arange(seq.window), 0, t - 1)
    logp = jax.nn.log_softmax(logits[jnp.clip(targets - 1, 0, t - 1)], axis=-1)
    picked = jnp.take_along_axis(logp, seq.tokens[targets][:, None], axis=-1)[:, 0]
    return jnp.where(seq.response_mask, picked, 0.0)


@struct.dataclass
class Taps:
    """What the structured products need of one sequence (leading batch axes under ``vmap``).

    ``inputs[name]`` ``[T, n]``; ``cotangents[name]`` ``[R, T, m]`` (R = 1 for the sequence log-prob,
    the response window for per-token rows); ``exact[k]`` ``[R, *shape]`` per-row gradients of the
    small leaves; ``tokens`` ``[T]``."""

    inputs: dict
    cotangents: dict
    exact: list
    tokens: jnp.ndarray


def record_taps(graphdef, params, seq: Responses, *, per_token: bool):
    """``(log-probs [window], Taps)`` of one sequence: one forward and one ``vjp`` (batched over the
    ``window`` one-hot cotangents when ``per_token``) with the dense kernels held constant."""
    leaves, treedef = jax.tree.flatten(params)
    factored = [t is not None for t in leaf_terms(params)]
    model_config = nnx.merge(graphdef, params).config
    deltas = {name: jnp.zeros(shape, leaves[0].dtype)
              for name, shape in output_widths(model_config, seq.tokens.shape[-1]).items()}

    def logprobs(small, deltas):
        it = iter(small)
        full = [x if f else next(it) for x, f in zip(leaves, factored)]
        model = nnx.merge(graphdef, jax.tree.unflatten(treedef, full))
        z, inputs = tapped_logits(model, seq.tokens, deltas)
        return response_token_logprobs(z, seq), inputs

    small = [x for x, f in zip(leaves, factored) if not f]
    logp, vjp_fn, inputs = jax.vjp(logprobs, small, deltas, has_aux=True)
    if per_token:
        exact, cot = jax.vmap(vjp_fn)(jnp.eye(seq.window, dtype=logp.dtype))
    else:
        exact, cot = jax.tree.map(lambda g: g[None], vjp_fn(jnp.ones_like(logp)))
    return logp, Taps(inputs, cot, exact, seq.tokens)


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


def _shared_factor(taps: Taps, name: str):
    if name == "tokens":
        return taps.tokens
    if name == "positions":
        return jnp.arange(taps.tokens.shape[-1])
    return taps.inputs[name]


def _pairwise(x, y, dtype):
    """``[..., Ta, Tb]`` products ``⟨x_s, y_t⟩`` of two factors; an integer ``[T]`` factor holds ids of
    one-hot rows."""
    x_ids, y_ids = (jnp.issubdtype(a.dtype, jnp.integer) for a in (x, y))
    if x_ids and y_ids:
        return (x[:, None] == y[None, :]).astype(dtype)
    if x_ids:
        return jnp.swapaxes(y[..., x], -1, -2)
    if y_ids:
        return x[..., y]
    return x @ jnp.swapaxes(y, -1, -2)


def _term_gram(taps_a: Taps, term_a: Term, taps_b: Taps, term_b: Term):
    """``[Ra, Rb]`` inner products of one gradient term of each side (see the module docstring)."""
    sa, ca = _shared_factor(taps_a, term_a.shared), taps_a.cotangents[term_a.rowed]
    sb, cb = _shared_factor(taps_b, term_b.shared), taps_b.cotangents[term_b.rowed]
    if term_a.shared_left == term_b.shared_left:
        z = jnp.einsum("st,jtm->jsm", _pairwise(sa, sb, ca.dtype), cb)  # Z^j = (S_a S_bᵀ) C_b^j
        return ca.reshape(ca.shape[0], -1) @ z.reshape(z.shape[0], -1).T
    return jnp.einsum("ist,jst->ij", _pairwise(ca, sb, ca.dtype), _pairwise(sa, cb, ca.dtype))


def outer_gradient(taps: Taps, terms: tuple[Term, ...], shape: tuple[int, ...]):
    """``[R, *shape]`` per-row gradient of a factored leaf, formed as ``Σ_t u_t ⊗ v_t``."""
    rows = taps.cotangents[terms[0].rowed].shape[0]
    grad = jnp.zeros((rows, *shape), taps.cotangents[terms[0].rowed].dtype)
    for term in terms:
        s, c = _shared_factor(taps, term.shared), taps.cotangents[term.rowed]
        if term.shared == "positions":  # ids 0..T-1: the first T rows
            grad = grad.at[:, :c.shape[1]].add(c)
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


def prepare(taps: Taps, params, plan: tuple[str, ...]) -> Features:
    """Form the per-row gradients of the ``outer`` and ``exact`` leaves of ``plan``."""
    exact = iter(taps.exact)
    dense = []
    for leaf, terms, how in zip(jax.tree.leaves(params), leaf_terms(params), plan):
        if how == "exact":
            dense.append(next(exact))
        elif how == "outer":
            dense.append(outer_gradient(taps, terms, leaf.shape))
        else:
            dense.append(None)
    return Features(taps, dense)


def leaf_grams(fa: Features, fb: Features, terms: list) -> jnp.ndarray:
    """``[n_leaves, Ra, Rb]`` inner products of every row of ``fa`` with every row of ``fb``, per leaf."""
    return jnp.stack([ghost_gram(fa.taps, fb.taps, leaf_terms_k) if fa.dense[k] is None
                      else row_gram(fa.dense[k], fb.dense[k])
                      for k, leaf_terms_k in enumerate(terms)])


def ghost_gram(taps_a: Taps, taps_b: Taps, terms: tuple[Term, ...]) -> jnp.ndarray:
    """``[Ra, Rb]`` ghost inner products of one factored leaf's per-row gradients."""
    return sum(_term_gram(taps_a, ta, taps_b, tb) for ta in terms for tb in terms)


def _ghost_cost(terms, shape, seq_len: int, rows: int, vocab: int) -> float:
    """Flops of one ``[R, R]`` ghost block of a leaf: ``Σ_terms² T²·n + R T² m + R² T m``."""
    t, r = seq_len, rows
    cost = 0.0
    for ta in terms:
        for tb in terms:
            if ta.shared_left != tb.shared_left:  # tied cross term: two rowed pairwise products
                cost += 2 * r * t * t * (vocab + shape[-1])
                continue
            n = 1 if ta.shared in ("tokens", "positions") else (shape[0] if ta.shared_left
                                                                 else shape[-1])
            m = shape[-1] if ta.shared_left else shape[0]
            cost += t * t * n + r * t * t * m + r * r * t * m
    return 2 * cost


#: Bytes of formed per-row gradients that ``auto`` may hold at once.
MEMORY_BUDGET = 2**30


def plan_leaves(params, implementation: str, *, seq_len: int, rows: int, n_sequences: int,
                n_blocks: int, memory_budget: float = MEMORY_BUDGET) -> tuple[str, ...]:
    """Per-leaf strategy for ``n_blocks`` ``[rows, rows]`` blocks among ``n_sequences`` sequences of
    length ``seq_len``: ``structured`` puts every factored leaf on the ghost product; ``auto`` takes,
    per leaf, the cheaper of ghost (``n_blocks · ghost``) and outer (``n_sequences · R T n m`` to form
    plus ``n_blocks · R² n m`` to contract) when the formed gradients fit ``memory_budget`` bytes."""
    if implementation not in ("structured", "auto"):
        raise ValueError(f"implementation={implementation!r} is invalid: one of 'structured', 'auto'")
    vocab = max(x.shape[0] for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
                if _keys(path)[0] == "token_embed")
    plan = []
    for leaf, terms in zip(jax.tree.leaves(params), leaf_terms(params)):
        if terms is None:
            plan.append("exact")
            continue
        if any(t.shared == "tokens" for t in terms):  # a scatter into V rows: ghost is cheaper
            plan.append("ghost")
            continue
        size = math.prod(leaf.shape)
        ghost = n_blocks * _ghost_cost(terms, leaf.shape, seq_len, rows, vocab)
        outer = 2 * (n_sequences * rows * seq_len * size * len(terms) + n_blocks * rows**2 * size)
        fits = n_sequences * rows * size * leaf.dtype.itemsize <= memory_budget
        plan.append("outer" if implementation == "auto" and fits and outer < ghost else "ghost")
    return tuple(plan)
