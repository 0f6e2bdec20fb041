"""The ``entangle`` command line: one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` (its ``--help`` and options) and
``run(args) -> int``. Errors a user can fix (a bad value, a missing or corrupt file) are raised as
``UsageError``, ``ConfigError`` or ``CheckpointError`` and end as one line on stderr with exit status 2.
So does an output path that cannot be written or that another run is writing: each command checks
its outputs before any work and holds a lock on its output directory while it runs (``common``).

``args._given`` maps each option given on the command line (by its ``dest``) to the option string,
so a command can tell an option the user set from its default and refuse or note one that does not
apply (``common.not_applicable``). Compiled programs are kept between runs
(``common.enable_compilation_cache``; ``ENTANGLE_JAX_COMPILATION_CACHE=off`` turns that off).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from entangle_jax.checkpoint import CheckpointError
from entangle_jax.config import ConfigError
from entangle_jax.data.records import DataError
from entangle_jax.guards import NonFiniteError

#: Subcommand name → module under ``entangle_jax.cli`` (imported only when that command runs).
COMMANDS = {
    "train": "train",
    "measure": "measure",
    "verify": "verify",
    "dynamics": "dynamics",
    "bench": "bench",
    "figures": "figures",
    "predict": "predict",
}


class UsageError(Exception):
    """A problem the user can fix from the command line; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, status 2
        raise UsageError(f"{self.prog}: {message}")


_RECORDING: dict[type, type] = {}


def _recording(cls: type) -> type:
    """A subclass of the argparse action ``cls`` that also records, in ``namespace._given``, that
    its option was given (argparse copies a subcommand's namespace, ``_given`` included)."""
    if cls not in _RECORDING:
        def __call__(self, parser, namespace, values, option_string=None):
            cls.__call__(self, parser, namespace, values, option_string)
            namespace._given = {**getattr(namespace, "_given", {}), self.dest: option_string}

        _RECORDING[cls] = type(cls.__name__, (cls,), {"__call__": __call__})
    return _RECORDING[cls]


def _record_given(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:  # argument groups share their parser's list
        if action.option_strings and not isinstance(action, (argparse._HelpAction,
                                                             argparse._SubParsersAction)):
            action.__class__ = _recording(type(action))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="entangle", description="Gradient entanglement in margin-based "
                     "preference optimization: measure, verify and plot it on small transformers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module in COMMANDS.items():
        importlib.import_module(f"entangle_jax.cli.{module}").add_parser(sub)
    for subparser in sub.choices.values():
        _record_given(subparser)
        subparser.set_defaults(_given={})
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from entangle_jax.cli.common import enable_compilation_cache
        from entangle_jax.memory import configured_budget

        configured_budget()  # a bad ENTANGLE_JAX_MEMORY_BUDGET is refused before any work
        enable_compilation_cache()
        return int(args.run(args) or 0)
    except (UsageError, ConfigError, CheckpointError, DataError, NonFiniteError,
            FileNotFoundError) as err:
        print(f"entangle: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("entangle: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
