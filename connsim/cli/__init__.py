"""The ``connsim`` command line. Every subcommand prints a readable table, or one JSON object with
``--json``. Errors print one line on stderr and exit with status 2.

Each subcommand is a module of this package, named as the command, with ``HELP`` (its one-line
summary), ``add_parser(sub)`` (its options) and ``run(args) -> int``; the work itself is done by the
library. :func:`main` builds the options of the one command it runs: the others appear in
``connsim --help`` by their summary only, so the command line never imports what it does not use.
"""

from __future__ import annotations

import argparse
import sys

from . import arch, design, imp, measure, predict, prune, quotas, redundancy, study, train
from ._common import Parser, Progress

__all__ = ["Progress", "build_parser", "main"]

COMMANDS = (arch, measure, quotas, prune, predict, design, train, imp, redundancy,
            study)  # in the order of --help


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``connsim`` parser with one subparser per command.

    With ``command``, only that command's options are built; the other subparsers carry their
    summary line alone (enough for ``connsim --help`` and for the choice of command).
    """
    parser = Parser(
        prog="connsim",
        description=(
            "How sparse is a pruned network really? connsim counts the effective weights (those on "
            "some input-to-output path) next to the direct (nonzero) ones, at channel level or "
            "exactly at position level."
        ),
        epilog="Run 'connsim COMMAND --help' for each command. Docs: docs/ in the repository.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"connsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        name = module.__name__.rsplit(".", 1)[1]
        if command in (None, name):
            module.add_parser(sub).set_defaults(func=module.run)
        else:
            sub.add_parser(name, help=module.HELP)
    return parser


def _command_of(argv) -> str:
    """The command named in ``argv`` (its first word that is not an option), or ``""``."""
    return next((a for a in argv if not a.startswith("-")), "")


def _quiet_stdout() -> None:
    """After a broken pipe (``connsim ... | head``), send further output nowhere, so that the
    interpreter's final flush does not raise again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error
        return e.code
    try:
        if args.command is None:
            parser.print_help()
            return 0
        return args.func(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the progress line; Ctrl-C needs no explanation
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except MemoryError as e:
        detail = str(e) or "the request is too large for this machine's memory"
        print(f"connsim {args.command}: error: {detail}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, ImportError, KeyError, FloatingPointError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"connsim {args.command}: error: {msg}".replace("\n", " | "), file=sys.stderr)
        return 2
