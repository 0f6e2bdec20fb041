"""Figure 1: chosen and rejected log-probabilities, and their margin, over DPO training, for single,
short and long responses, each run starting from the same SFT model.

Runs ``entangle figures --only fig1``: the figure is defined in
``entangle_jax/figures/paper/fig1_training_dynamics.py`` (installed with the package) and described in
docs/figures.md. Writes figures/out/fig1_training_dynamics.png, .pdf and .csv; extra arguments are passed on,
e.g. ``--quick`` or ``--out DIR``.

    python figures/fig1_training_dynamics.py [--quick]
"""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", "--only", "fig1", *sys.argv[1:]]))
