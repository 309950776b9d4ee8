"""``rbdc plot RUN_DIR``: redraw every figure of a run folder from its stored results.

Only this module prints; :mod:`robustbench_dc.plots` logs.
"""

from __future__ import annotations

import argparse
import sys

from robustbench_dc.cli._args import add_command

__all__ = ["register", "cmd_plot"]

_FORMATS = ("png", "svg", "pdf")


def cmd_plot(args: argparse.Namespace) -> int:
    from robustbench_dc.plots import redraw_run

    formats = tuple(dict.fromkeys(args.format or ("png", "svg")))
    written = redraw_run(args.run_dir, formats=formats)  # MissingFileError: no such run folder
    for path in written:
        print(path)
    if not written:
        print(f"rbdc plot: nothing to draw in {args.run_dir} (no stored results found)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot`` sub-command."""
    p = add_command(sub, "plot", help="redraw a run folder's figures from its stored results",
                    description="Redraw every figure of RUN_DIR (embeddings, eps curves, transfer heatmaps, "
                                "Lipschitz bars, training curves) into RUN_DIR/figures, without retraining.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by the protocol runner")
    p.add_argument("--format", action="append", choices=_FORMATS, default=None,
                   help="output format, repeatable (default: png and svg)")
    p.set_defaults(func=cmd_plot)
