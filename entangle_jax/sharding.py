"""Data parallelism over devices: pairs on the batch axis, parameters replicated.

A one-axis ``Mesh`` named ``"batch"`` spans the devices; ``shard_batch`` places a batch pytree with
``NamedSharding(mesh, P("batch"))`` (rows split across devices), ``replicate`` places the parameters
with ``NamedSharding(mesh, P())`` (a full copy on each). A jitted function of such inputs is
partitioned by XLA along the batch axis, so the same code runs on one CPU, several CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), a GPU, or the devices of several hosts
after ``jax.distributed.initialize()``; per-pair results are identical to one device's.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def batch_mesh(devices=None) -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (BATCH_AXIS,))


def replicate(tree, mesh: Mesh):
    """``tree`` with every leaf copied to each device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(tree, mesh: Mesh):
    """``tree`` with every leaf split along its leading (batch) axis over ``mesh``; that axis must
    be a multiple of the number of devices (``padded_size`` gives one)."""
    n = mesh.devices.size
    for leaf in jax.tree.leaves(tree):
        if leaf.shape[0] % n:
            raise ValueError(f"batch axis of size {leaf.shape[0]} is invalid: must be a multiple of "
                             f"the {n} devices of the mesh")
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(BATCH_AXIS)))


def padded_size(size: int, mesh: Mesh | None) -> int:
    """The smallest multiple of the mesh's device count that is at least ``size``."""
    n = 1 if mesh is None else mesh.devices.size
    return -(-size // n) * n
