"""The ``rbdc`` command (also ``python -m robustbench_dc``): one module per command, each of
which parses its arguments, calls the library and prints.

Only the CLI prints; the library logs. A user error (:class:`robustbench_dc.errors.UserError`:
a bad spec, a missing dataset, an invalid card, ...) ends with one line on stderr per problem,
``rbdc: error: ...``, and exit code 2, never a traceback (``-v`` shows it). Any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from typing import Sequence

from robustbench_dc.cli import (
    data,
    evaluate,
    leaderboard,
    lipschitz,
    operators,
    plot,
    reproduce,
    run,
    train,
    transfer,
    zoo,
)
from robustbench_dc.cli._args import add_global_options
from robustbench_dc.errors import UserError
from robustbench_dc.version import VERSION

__all__ = ["main", "build_parser", "UserError", "EXIT_USER_ERROR", "COMMANDS"]

EXIT_USER_ERROR = 2
#: the shell's status of a command killed by SIGPIPE (128 + 13)
EXIT_BROKEN_PIPE = 141

#: The command modules, in the order ``rbdc --help`` lists them; each has ``register(subparsers)``.
COMMANDS = (operators, zoo, data, run, train, evaluate, transfer, lipschitz, plot, leaderboard, reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbdc", description="robustbench-dc: adversarial robustness of decoupled convolution operators")
    parser.add_argument("--version", action="version", version=f"robustbench-dc {VERSION}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def _report(exc: UserError) -> None:
    errors = getattr(exc, "errors", None)
    lines = errors if isinstance(errors, list) and errors else [str(exc)]
    for line in lines:
        print(f"rbdc: error: {' '.join(str(line).split())}", file=sys.stderr)


def _stdout_broken() -> bool:
    """Whether stdout's reader went away (``rbdc operators list | head``). If so, point stdout at
    /dev/null, so that the interpreter's final flush does not fail again: the command then ends
    quietly, as Unix tools do, with the shell's SIGPIPE status."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (io.UnsupportedOperation is an OSError)
        return False
    if hasattr(select, "poll"):  # the write end of a pipe without reader polls as an error
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
            return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    from robustbench_dc.provenance import command_line

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = command_line(argv)  # recorded as the provenance of what the command writes
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from robustbench_dc.runtime import configure_allocator

    configure_allocator()
    func = getattr(args, "func", None)
    if func is None:
        # ``rbdc`` or ``rbdc zoo`` without an action: show the relevant help.
        parser.parse_args([*argv, "--help"])
        return EXIT_USER_ERROR
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        if args.verbose or not _stdout_broken():
            raise  # another pipe (a data-loading worker...): a real error
        return EXIT_BROKEN_PIPE
    except UserError as exc:
        if args.verbose:
            raise
        _report(exc)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("rbdc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
