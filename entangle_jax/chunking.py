"""Fixed-size chunks of a batch: one helper for every function that runs a jitted computation
over more rows than fit at once.

The last chunk is padded by repeating the last row, so one compiled function serves every chunk;
the padded rows' outputs are dropped. The batch is brought to the host once and sliced there
(indexing a device array costs a dispatch per leaf and chunk, ~1 ms each on CPU), and every
chunk, the whole batch too, is passed as host arrays (one kind of argument: one cache entry).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from entangle_jax.config import ConfigError
from entangle_jax.sharding import shard_batch


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name}={value!r} is invalid: must be a positive integer")


def check_chunk_size(chunk_size) -> None:
    check_positive_int("chunk_size", chunk_size)


def chunk_indices(n: int, chunk_size: int) -> list[np.ndarray]:
    """Row indices of the chunks of ``chunk_size`` rows covering ``0 … n−1``; the last chunk is
    padded by repeating row ``n − 1``, so every chunk has ``chunk_size`` rows."""
    check_chunk_size(chunk_size)
    return [np.minimum(np.arange(lo, lo + chunk_size), n - 1) for lo in range(0, n, chunk_size)]


def real_rows(idx: np.ndarray, n: int) -> np.ndarray:
    """``[chunk_size]`` mask of a ``chunk_indices`` chunk's rows that are not padding."""
    return np.arange(idx[0], idx[0] + len(idx)) < n


def _take(batch, idx: np.ndarray, rows: int):
    return batch if np.array_equal(idx, np.arange(rows)) else jax.tree.map(lambda x: x[idx], batch)


def map_chunks(fn: Callable, batch, n: int, chunk_size: int, *,
               progress: Callable[[int], None] | None = None, mesh=None,
               prepare: Callable | None = None):
    """``fn(chunk)`` over chunks of ``chunk_size`` rows of the pytree ``batch`` (``n`` rows; each
    chunk sharded over ``mesh`` when given), its per-row outputs concatenated on the host.
    ``prepare(chunk)``, when given, changes each chunk on the host first (e.g. cuts its padding).
    ``progress(rows done)`` is called after each chunk."""
    batch = jax.device_get(batch)
    outs = []
    for idx in chunk_indices(n, chunk_size):
        chunk = _take(batch, idx, n)
        if prepare is not None:
            chunk = prepare(chunk)
        outs.append(jax.device_get(fn(chunk if mesh is None else shard_batch(chunk, mesh))))
        if progress is not None:
            progress(min(int(idx[0]) + chunk_size, n))
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:n], *outs)


__all__ = ["check_chunk_size", "check_positive_int", "chunk_indices", "map_chunks", "real_rows"]
