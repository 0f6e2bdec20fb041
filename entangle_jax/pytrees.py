"""Names and arithmetic of parameter pytrees: one home for key paths and per-leaf products.

A leaf's key is its path joined with "/" (``blocks/0/attn/qkv/kernel``): the name it has in
checkpoints, in parameter groups and in the taps a model records. Inner products over whole trees
are ``optax.tree.vdot``; the per-leaf split of one, which the parameter-group reports need, is here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def key_part(entry) -> str:
    """One entry of a ``jax.tree_util`` key path (dict key, attribute name or sequence index)."""
    return str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))


def path_key(path) -> str:
    """``"a/b/0/kernel"`` for a key path (or a tuple of plain keys, as ``nnx`` gives); the
    ``.value`` step into an ``nnx.Variable`` is not part of the name."""
    return "/".join(key_part(entry) for entry in path
                    if not isinstance(entry, jax.tree_util.GetAttrKey) or entry.name != "value")


def leaf_keys(tree) -> list[str]:
    """The key of every leaf, in ``jax.tree.leaves`` order."""
    return [path_key(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def leaf_vdots(a, b):
    """``[n_leaves]`` inner products of two pytrees of the same structure, one per leaf."""
    return jnp.stack([jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))])
