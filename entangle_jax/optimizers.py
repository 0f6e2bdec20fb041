"""The optimizers a preference run descends with, their learning rate a traced hyperparameter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import optax

from entangle_jax.config import ConfigError

#: The optimizers a preference step can use (``OPTIMIZERS``' keys).
Optimizer = Literal["sgd", "adam"]
#: ``Optimizer`` → the optax constructor of the learning rate.
OPTIMIZERS: dict[Optimizer, Callable[[float], optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "adam": optax.adam,
}


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """``optax.sgd`` or ``optax.adam`` of ``learning_rate``; a bad value raises ConfigError.

    The rate lives in the optimizer's state (``optax.inject_hyperparams``), not in its code: a
    jitted step that builds the transformation with any rate and applies it to a state from
    ``init`` uses the state's rate, so runs at different rates share one compilation."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r} is invalid: one of {', '.join(OPTIMIZERS)}")
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate={learning_rate!r} is invalid: must be > 0")
    return optax.inject_hyperparams(OPTIMIZERS[name])(learning_rate=learning_rate)


def make_adamw(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """``optax.adamw``, the supervised fine-tuning optimizer, with both rates in its state (as
    ``make_optimizer``): a jitted step built with any rates uses those of the state it is given."""
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate={learning_rate!r} is invalid: must be > 0")
    return optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate,
                                                 weight_decay=weight_decay)


__all__ = ["OPTIMIZERS", "Optimizer", "make_adamw", "make_optimizer"]
