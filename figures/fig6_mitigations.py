"""Figure 6: the paper's mitigations against plain DPO on long-suffix pairs — the pairwise-normalized
update ``d_w g_w/‖g_w‖ − d_l g_l/‖g_l‖`` and the sparsity-regularized token mask — and the mask the
latter learns.

Runs ``entangle figures --only fig6``: the figure is defined in
``entangle_jax/figures/paper/fig6_mitigations.py`` (installed with the package) and described in
docs/figures.md. Writes figures/out/fig6_mitigations.png, .pdf and .csv; extra arguments are passed on,
e.g. ``--quick`` or ``--out DIR``.

    python figures/fig6_mitigations.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", "--only", "fig6", *sys.argv[1:]]))
