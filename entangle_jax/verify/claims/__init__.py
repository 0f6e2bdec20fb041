"""The paper's claims, one module per claim (``CLAIMS`` lists them in report order)."""

from entangle_jax.verify.claims import (batched_dynamics, gradient_condition, mitigation,
                                        output_layer, theorem1, theorem3, tokenwise)
from entangle_jax.verify.claims.base import Claim

CLAIMS: tuple[Claim, ...] = (theorem1.CLAIM, output_layer.CLAIM, theorem3.POSITIVE,
                             theorem3.GROWTH, tokenwise.CLAIM, gradient_condition.CLAIM,
                             batched_dynamics.CLAIM, mitigation.CLAIM)

__all__ = ["CLAIMS", "Claim"]
