"""The gradient condition: first-order Δlog π_w, Δlog π_l against real small DPO steps (case,
relative error, O(η²) error), case 4 never, the margin never falls (a short batched run is the
claim batched_dynamics).

Headline regime: pretrained.

Runs ``entangle verify --only gradient_condition`` (every regime, 3 seeds, 64 pairs per seed; models cached
in .cache/models) and writes reports/proofs_check/gradient_condition/verify.json and verify.md. Extra
arguments are passed on, e.g. ``--quick`` or ``--seeds 0,1``. Exit status 0 when the claim holds in
its own regime, 1 when it does not, 2 on bad input. The check itself is
``entangle_jax/verify/claims/``; docs/verification.md describes it.

    python proofs_check/gradient_condition.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", "--only", "gradient_condition",
                   "--out", "reports/proofs_check/gradient_condition", *sys.argv[1:]]))
