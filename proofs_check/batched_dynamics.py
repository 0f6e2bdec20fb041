"""Beyond the paper: in a short batched DPO run (SGD and Adam) every pair, trained or held out,
moves as the first-order empirical-NTK prediction over the realized batches says; the pair's own
term (the per-pair condition) is the negative control.

Headline regime: pretrained.

Runs ``entangle verify --only batched_dynamics`` (every regime, 3 seeds, 64 pairs per seed; models
cached in .cache/models) and writes reports/proofs_check/batched_dynamics/verify.json and
verify.md. Extra arguments are passed on, e.g. ``--quick`` or ``--seeds 0,1``. Exit status 0 when
the claim holds in its own regime, 1 when it does not, 2 on bad input. The check itself is
``entangle_jax/verify/claims/batched_dynamics.py``; docs/verification.md describes it.

    python proofs_check/batched_dynamics.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", "--only", "batched_dynamics",
                   "--out", "reports/proofs_check/batched_dynamics", *sys.argv[1:]]))
