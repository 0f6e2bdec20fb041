"""Figure 7: the first-order check of the gradient condition.

Runs ``entangle figures --only fig7``: the figure is defined in
``entangle_jax/figures/paper/fig7_first_order.py`` (installed with the package) and described in
docs/figures.md. Writes figures/out/fig7_first_order.png, .pdf and .csv; extra arguments are passed on,
e.g. ``--quick`` or ``--out DIR``.

    python figures/fig7_first_order.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", "--only", "fig7", *sys.argv[1:]]))
