"""``rbdc leaderboard show|submit``: the leaderboard of the results store.

Register with :func:`register` (``robustbench_dc.cli._extensions``). Only this module prints;
:mod:`robustbench_dc.results` logs.

- ``rbdc leaderboard show [--db PATH] [--dataset D] [--threat-model T] [--eps E] [--protocol P]
  [--metric M] [--format md|csv|json|html] [--out DIR] [--latest]`` prints the table (Markdown
  by default) and, with ``--out``, writes ``DIR/leaderboard.<fmt>`` for each ``--format`` (all
  four when none is given).
- ``rbdc leaderboard submit OPERATOR --protocol PATH [--name N] [--db PATH] [--out DIR]`` runs a
  user operator through a protocol; its backend is
  :func:`robustbench_dc.protocol.submit_operator` (see :func:`cmd_submit`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register", "cmd_leaderboard_show", "cmd_submit", "DEFAULT_DB_PATH"]

DEFAULT_DB_PATH = "runs/results.sqlite"
_FORMATS = ("md", "csv", "json", "html")


def cmd_leaderboard_show(args: argparse.Namespace) -> int:
    """Print the leaderboard of ``args.db``; write files into ``args.out`` when given."""
    from .results import ResultsStore, render_leaderboard, write_leaderboard

    db = Path(args.db)
    if not db.is_file():
        raise FileNotFoundError(f"results database not found: {db} (run a protocol first, or pass --db)")
    with ResultsStore(db) as store:
        entries = store.entries(dataset=args.dataset, threat_model=args.threat_model, eps=args.eps,
                                protocol=args.protocol, latest=args.latest)
    formats = list(dict.fromkeys(args.format or []))
    text = render_leaderboard(entries, formats[0] if formats else "md", metric=args.metric)
    if not entries:
        print("rbdc leaderboard: no results match the filters", file=sys.stderr)
    sys.stdout.write(text)
    if args.out:
        for path in write_leaderboard(entries, args.out, formats=formats or _FORMATS, metric=args.metric):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """``rbdc leaderboard submit``: train and evaluate a user operator under a leaderboard
    protocol (one line per job), then print the leaderboard."""
    import sys

    from .cli_protocol import print_job
    from .protocol import ProtocolError, submit_operator  # lazy: the protocol runner is heavy (torch)

    counter = [0]
    try:
        result, board = submit_operator(
            operator=args.operator, protocol_path=args.protocol, name=args.name, db=args.db, out=args.out,
            progress=sys.stderr.isatty(), on_job=lambda job, status, secs: print_job(job, status, secs, counter, 0))
    except ProtocolError as exc:
        for line in exc.errors:
            print(f"rbdc: error: {line}", file=sys.stderr)
        return 2
    print()
    print(board, end="" if str(board).endswith("\n") else "\n")
    print(f"run folder: {result.run_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``leaderboard`` sub-command (actions ``show`` and ``submit``)."""
    lb = sub.add_parser("leaderboard", help="the leaderboard of the results store",
                        description="Rank the stored protocol runs (default: by worst-case robust accuracy).")
    actions = lb.add_subparsers(dest="sub", metavar="ACTION")

    show = actions.add_parser("show", help="print (and optionally write) the leaderboard")
    show.add_argument("--db", default=DEFAULT_DB_PATH, help=f"results database (default: {DEFAULT_DB_PATH})")
    show.add_argument("--dataset", help="only this dataset")
    show.add_argument("--threat-model", help="only this threat model (e.g. linf, l2)")
    show.add_argument("--eps", type=float, help="only this perturbation budget")
    show.add_argument("--protocol", help="only this protocol (by name)")
    show.add_argument("--metric", default=None,
                      help="ranking metric: worst_case (default), clean_accuracy, an attack label, "
                           "or transfer:<source>:<attack>")
    show.add_argument("--format", action="append", choices=_FORMATS, default=None,
                      help="output format, repeatable; the first is printed (default md); with --out, "
                           "the files written (default: all four)")
    show.add_argument("--out", metavar="DIR", help="also write DIR/leaderboard.<format>")
    show.add_argument("--latest", action="store_true",
                      help="only the newest run of each model per protocol/dataset/threat model/eps")
    show.set_defaults(func=cmd_leaderboard_show)

    # Hook for the lead's submit backend (robustbench_dc.protocol.submit_operator).
    submit = actions.add_parser("submit", help="evaluate your own operator with a protocol and rank it",
                                description="Build the protocol's models with OPERATOR, run the protocol, store "
                                            "the results and print the leaderboard.")
    submit.add_argument("operator", help="the operator: path/to/file.py:Name or package.module:Name")
    submit.add_argument("--protocol", required=True, help="protocol YAML file")
    submit.add_argument("--name", default=None, help="leaderboard entry name (default: from the operator)")
    submit.add_argument("--db", default=None,
                        help="results database (default: the protocol's leaderboard.db setting)")
    submit.add_argument("--out", metavar="DIR", default=None, help="run/leaderboard output folder")
    submit.set_defaults(func=cmd_submit)
