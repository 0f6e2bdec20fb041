"""Theorem 1 (single token): ⟨g_w, g_l⟩ < 0 for Positive/Negative single-token responses.

Headline regime: uncertain_sft (label noise keeps the model uncertain). Not applicable where the
model is not uncertain at the sentiment token (median min(p_w, p_l) < 0.01 or p_w + p_l < 0.5).

Runs ``entangle verify --only theorem1_single_token`` (every regime, 3 seeds, 64 pairs per seed; models cached
in .cache/models) and writes reports/proofs_check/theorem1_single_token/verify.json and verify.md. Extra
arguments are passed on, e.g. ``--quick`` or ``--seeds 0,1``. Exit status 0 when the claim holds in
its own regime, 1 when it does not, 2 on bad input. The check itself is
``entangle_jax/verify/claims/``; docs/verification.md describes it.

    python proofs_check/theorem1_single_token.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", "--only", "theorem1_single_token",
                   "--out", "reports/proofs_check/theorem1_single_token", *sys.argv[1:]]))
