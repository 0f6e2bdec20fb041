"""Run the benchmark from a source checkout: ``python benchmarks/run.py [--quick] [--out DIR]``
(the same as ``entangle bench``)."""

import sys

from entangle_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
