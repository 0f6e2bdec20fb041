import sys

from entangle_jax.cli import main

sys.exit(main())
