"""How much of a batch to process at once: working-set estimates that choose chunk sizes.

Every batched computation of the toolkit (per-example gradients, taps, one-step checks,
Jacobian-vector products) runs over fixed-size chunks of pairs. A chunk is as large as its
working set allows within ``budget_bytes()`` and at most a cap that keeps the tiny models'
compiled shapes: on the tiny models the caps decide, on a pretrained model the budget does.
``peak_resident_mb`` is what a run did use, as reports and benchmarks quote it.
"""

from __future__ import annotations

import math
import os
import resource

import jax

from entangle_jax.config import ConfigError

#: Bytes of per-example working memory a chunk may hold on a CPU: what 2 cores' machine affords
#: beside a 135M-parameter model and its optimizer state.
MEMORY_BUDGET = 2**30
#: On an accelerator: this share of the first device's memory (the rest holds the parameters,
#: their copies outside the chunk and XLA's own buffers).
ACCELERATOR_SHARE = 0.25
BUDGET_VARIABLE = "ENTANGLE_JAX_MEMORY_BUDGET"


def configured_budget() -> int | None:
    """``ENTANGLE_JAX_MEMORY_BUDGET`` in bytes (e.g. ``8e9``), None when it is unset; a value that
    is not a finite number ≥ 1 is a ``ConfigError`` (the CLI checks it before any work)."""
    value = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 1):
        raise ConfigError(f"{BUDGET_VARIABLE}={value!r} is invalid: a finite number of bytes >= 1, "
                          "such as 4e9")
    return int(number)


def budget_bytes() -> int:
    """Bytes a chunk's per-example working set may take: ``configured_budget()`` when set; else
    ``ACCELERATOR_SHARE`` of the first device's memory on a GPU or TPU, and ``MEMORY_BUDGET`` on
    a CPU. Larger chunks change no result beyond rounding; they trade memory for fewer, larger
    launches (what keeps an accelerator busy)."""
    configured = configured_budget()
    if configured is not None:
        return configured
    device = jax.devices()[0]
    if device.platform != "cpu":
        limit = (device.memory_stats() or {}).get("bytes_limit")
        if limit:
            return int(ACCELERATOR_SHARE * limit)
    return MEMORY_BUDGET


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
    budget = budget_bytes() if budget is None else budget
    size = int(max(1, min(cap, budget // max(per_item, 1))))
    return size if n is None else max(1, min(size, n))


def peak_resident_mb() -> float:
    """This process's peak resident memory in MiB, runtimes included. ``VmHWM`` belongs to the
    address space that ``exec`` made; ``ru_maxrss`` would carry over a spawning parent's resident
    size at ``fork``."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except OSError:  # no procfs (macOS): ru_maxrss is in bytes there
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
