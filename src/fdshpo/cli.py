"""The ``fdshpo`` command: a thin dispatcher over one module per command in ``fdshpo.commands``.

Each module in ``COMMAND_MODULES`` defines ``register(subparsers)``, which adds its sub-command
and sets ``func`` (``func(args) -> int | None``) on the parser. Errors a user can fix
(:class:`~fdshpo.errors.UserError`, ``ValueError``, ``FileNotFoundError``) print one
``fdshpo: error: ...`` line and exit with status 2; ``FDSHPO_DEBUG=1`` shows the traceback.
A reader that stops reading (``fdshpo runs show RUN | head``) ends the command quietly with
status 141, as a process killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import UserError

COMMAND_MODULES = (
    "fdshpo.commands.compare",
    "fdshpo.commands.compile",
    "fdshpo.commands.data",
    "fdshpo.commands.demo",
    "fdshpo.commands.experiments",
    "fdshpo.commands.report",
    "fdshpo.commands.run",
    "fdshpo.commands.runs",
    "fdshpo.commands.schedule",
    "fdshpo.commands.store",
    "fdshpo.commands.submit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fdshpo",
        description="Learn SGD-momentum hyperparameter schedules (learning rate, momentum, "
                    "weight decay over a whole run) by sign descent on exact hypergradients of "
                    "the validation loss (FDS), computed in forward or checkpointed reverse "
                    "mode, whichever is cheaper; locally or as a Kubeflow pipeline.")
    parser.add_argument("--version", action="version", version=f"fdshpo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


#: exit status after the reader of stdout went away (128 + SIGPIPE, as the shell reports)
SIGPIPE_STATUS = 141

#: options whose value may start with "-" (``--sort -test_accuracy``: descending)
DASH_VALUE_OPTIONS = ("--sort", "--best")


def attach_dash_values(argv: list[str]) -> list[str]:
    """``--sort -KEY`` as ``--sort=-KEY`` (argparse would read ``-KEY`` as an option)."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in DASH_VALUE_OPTIONS and arg.startswith("-") and len(arg) > 1:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(attach_dash_values(argv))
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("FDSHPO_DEBUG"):
            raise
        print(f"fdshpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fdshpo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout's reader is gone: say nothing more, and keep Python's exit-time flush of
        # stdout from raising again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS


if __name__ == "__main__":
    sys.exit(main())
