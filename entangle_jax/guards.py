"""Numerical guards: stop a run at the first NaN or Inf and say where it appeared.

Inside a jitted step, ``finite_flags(loss=…, gradient=…)`` reduces each quantity (a scalar or a
pytree) to one boolean; on the host, ``check_finite(step, flags)`` raises ``NonFiniteError`` naming
the step and the first quantity that is not finite, in the order given.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


class NonFiniteError(ArithmeticError):
    """A loss, gradient, parameter or log-prob became NaN or Inf."""


def all_finite(tree) -> jnp.ndarray:
    """One boolean: every element of every leaf of ``tree`` is finite."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def finite_flags(**quantities) -> dict[str, jnp.ndarray]:
    """``{name: all_finite(value)}``, keyword order kept (the order ``check_finite`` reports in)."""
    return {name: all_finite(value) for name, value in quantities.items()}


def check_finite(step: int, flags: Mapping[str, object], *, context: str = "") -> None:
    """Raise ``NonFiniteError`` naming ``step`` and the first quantity whose flag is False."""
    for name, ok in flags.items():
        if not bool(ok):
            raise NonFiniteError(f"step {step}: {name} is NaN or Inf{context}")


def check_array_finite(name: str, values, where: list[str] | None = None) -> None:
    """Raise ``NonFiniteError`` naming ``name`` and the first item (``where[i]`` or its index)
    whose value is not finite; for host-side results such as per-pair log-probs."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(values, dtype=float)))
    if bad.size:
        k = int(bad[0])
        item = where[k] if where is not None else f"item {k}"
        raise NonFiniteError(f"{name} is NaN or Inf at {item} ({bad.size} such value(s))")
