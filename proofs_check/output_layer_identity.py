"""The output-layer identity (Σp² − p_w − p_l)‖h‖² and the full-parameter eNTK form
(e_w − p)ᵀK(e_l − p) of ⟨g_w, g_l⟩ at the sentiment token, each against autodiff.

Exact identities: they must hold on every pair in every regime (float64 tolerance 1e-9).

Runs ``entangle verify --only output_layer_identity`` (every regime, 3 seeds, 64 pairs per seed; models cached
in .cache/models) and writes reports/proofs_check/output_layer_identity/verify.json and verify.md. Extra
arguments are passed on, e.g. ``--quick`` or ``--seeds 0,1``. Exit status 0 when the claim holds in
its own regime, 1 when it does not, 2 on bad input. The check itself is
``entangle_jax/verify/claims/``; docs/verification.md describes it.

    python proofs_check/output_layer_identity.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", "--only", "output_layer_identity",
                   "--out", "reports/proofs_check/output_layer_identity", *sys.argv[1:]]))
