"""Figure 5: the loss zoo — chosen and rejected log-probabilities under every objective, trained from
the same model on the same long-suffix pairs with the same seed and optimizer, each panel annotated
with the objective's d_w/d_l.

Runs ``entangle figures --only fig5``: the figure is defined in
``entangle_jax/figures/paper/fig5_loss_zoo.py`` (installed with the package) and described in
docs/figures.md. Writes figures/out/fig5_loss_zoo.png, .pdf and .csv; extra arguments are passed on,
e.g. ``--quick`` or ``--out DIR``.

    python figures/fig5_loss_zoo.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", "--only", "fig5", *sys.argv[1:]]))
