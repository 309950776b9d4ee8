"""``rbdc leaderboard [show|submit]``: the leaderboard of the results store.

- ``rbdc leaderboard [show] [--db PATH] [--dataset D] [--threat-model T] [--eps E] [--protocol P]
  [--metric M] [--format md|csv|json|html] [--out DIR]`` prints the table (Markdown by default),
  one row per entry (the newest run of each configuration; transfer sources are not ranked), and,
  with ``--out``, writes ``DIR/leaderboard.<fmt>`` for each ``--format`` (all four when none is
  given). Without ``--db`` it reads the database of the run made last
  (:func:`robustbench_dc.results.find_db`) and says which.
- ``rbdc leaderboard history`` (same options): every stored row, one per model per run, oldest first.
- ``rbdc leaderboard submit OPERATOR --protocol PATH [--name N] [--db PATH] [--out DIR]`` runs a
  user operator through a protocol (:func:`robustbench_dc.protocol.submit_operator`).

Only this module prints; :mod:`robustbench_dc.results` logs.
"""

from __future__ import annotations

import argparse
import sys

from robustbench_dc.cli._args import add_command, eps_arg
from robustbench_dc.cli._output import print_job, print_plan

__all__ = ["register", "cmd_leaderboard_show", "cmd_submit"]

_FORMATS = ("md", "csv", "json", "html")


def cmd_leaderboard_history(args: argparse.Namespace) -> int:
    """Print every stored row of ``args.db``: each model of each run, oldest run first."""
    return cmd_leaderboard_show(args, history=True)


def cmd_leaderboard_show(args: argparse.Namespace, history: bool = False) -> int:
    """Print the leaderboard of ``args.db`` (default: the run made last); write files into ``args.out``."""
    from robustbench_dc.results import ResultsStore, find_db, render_leaderboard, write_leaderboard, write_model_info

    db = find_db(args.db)
    if args.db is None:
        print(f"rbdc leaderboard: results from {db} (pass --db for another database)", file=sys.stderr)
    with ResultsStore(db) as store:
        entries = store.entries(dataset=args.dataset, threat_model=args.threat_model, eps=args.eps,
                                protocol=args.protocol, latest=not history)
    formats = list(dict.fromkeys(args.format or []))
    text = render_leaderboard(entries, formats[0] if formats else "md", metric=args.metric, ranked=not history)
    if not entries:
        print("rbdc leaderboard: no results match the filters", file=sys.stderr)
    sys.stdout.write(text)
    if args.out:
        for path in write_leaderboard(entries, args.out, formats=formats or _FORMATS, metric=args.metric,
                                      ranked=not history):
            print(f"wrote {path}", file=sys.stderr)
    if args.robustbench:
        for path in write_model_info(entries, args.robustbench):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """``rbdc leaderboard submit``: train and evaluate a user operator under a leaderboard
    protocol (one line per job), then print the leaderboard."""
    from robustbench_dc.protocol import execute, job_status, plan_submission  # lazy: the runner is heavy (torch)

    plan = plan_submission(args.operator, args.protocol, name=args.name, db=args.db, out=args.out,
                           allow_code=args.allow_code, track=args.track)
    if args.dry_run:
        print_plan(plan, job_status(plan))
        return 0
    counter = [0]
    result = execute(plan, progress=not args.quiet and sys.stderr.isatty(),
                     on_job=lambda job, status, secs: print_job(job, status, secs, counter, len(plan.jobs)),
                     command=getattr(args, "command_line", None))
    print()
    print(result.leaderboard, end="" if str(result.leaderboard).endswith("\n") else "\n")
    print(f"run folder: {result.run_dir}")
    return 0


def _show_args(p: argparse.ArgumentParser, default: object = None) -> None:
    """The options of ``show``; on ``leaderboard`` itself too, so that ``rbdc leaderboard`` shows the board."""
    def d(value: object) -> object:
        return value if default is None else default

    p.add_argument("--db", default=d(None),
                   help="results database (default: the most recently modified runs/*/results.sqlite or "
                        "runs/results.sqlite)")
    p.add_argument("--dataset", default=d(None), help="only this dataset")
    p.add_argument("--threat-model", default=d(None), help="only this threat model (e.g. linf, l2)")
    p.add_argument("--eps", type=eps_arg, default=d(None), help="only this perturbation budget")
    p.add_argument("--protocol", default=d(None), help="only this protocol (by name)")
    p.add_argument("--metric", default=d(None),
                   help="ranking metric: tracks (default: natural training by the median minimal L-inf "
                        "perturbation, adversarial training by the worst case, one table each), worst_case, "
                        "clean_accuracy, median:linf, median:l2, auc:linf, auc:l2, an attack label, "
                        "or transfer:<source>:<attack>")
    p.add_argument("--format", action="append", choices=_FORMATS, default=d(None),
                   help="output format, repeatable; the first is printed (default md); with --out, "
                        "the files written (default: all four)")
    p.add_argument("--out", metavar="DIR", default=d(None), help="also write DIR/leaderboard.<format>")
    p.add_argument("--robustbench", metavar="DIR", default=d(None),
                   help="also write one RobustBench model_info JSON per entry: DIR/<dataset>/<Linf|L2>/<name>.json")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``leaderboard`` sub-command (shows the board; actions ``show`` and ``submit``)."""
    lb = add_command(sub, "leaderboard", help="the leaderboard of the results store",
                     description="Rank the stored protocol runs (default: one table per training track). "
                                 "Without an action: show the board.")
    _show_args(lb)
    lb.set_defaults(func=cmd_leaderboard_show)
    actions = lb.add_subparsers(dest="sub", metavar="ACTION")

    # ``show``'s options default to SUPPRESS: given before ``show`` (on ``leaderboard``) they are kept.
    show = add_command(actions, "show", help="print (and optionally write) the leaderboard (the default action)")
    _show_args(show, default=argparse.SUPPRESS)
    show.set_defaults(func=cmd_leaderboard_show)
    history = add_command(actions, "history", help="every stored row: each model of each run, oldest first",
                          description="The rows behind the leaderboard: one per model per run (transfer sources "
                                      "and earlier runs of an entry included), in the order the runs finished.")
    _show_args(history, default=argparse.SUPPRESS)
    history.set_defaults(func=cmd_leaderboard_history)

    submit = add_command(actions, "submit", help="evaluate your own operator with a protocol and rank it",
                         description="Build the protocol's models with OPERATOR, run the protocol, store "
                                     "the results and print the leaderboard.")
    submit.add_argument("operator", help="the operator: path/to/file.py:Name or package.module:Name")
    submit.add_argument("--protocol", required=True, help="protocol YAML file")
    submit.add_argument("--name", default=None, help="leaderboard entry name (default: from the operator; the "
                                                     "adversarial-training entry is NAME-at)")
    submit.add_argument("--track", choices=("natural", "adversarial", "both"), default="both",
                        help="the track(s) to enter: natural training, adversarial training (the protocol's "
                             "submission.adversarial_recipe), or both (default: each the protocol has)")
    submit.add_argument("--db", default=None,
                        help="results database (default: the protocol's leaderboard.db setting)")
    submit.add_argument("--out", metavar="DIR", default=None, help="run/leaderboard output folder")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the job plan, what is cached and each job's estimated time on this machine; "
                             "run nothing")
    submit.add_argument("--allow-code", action="append", default=[], metavar="PATH",
                        help="let the protocol run this Python file (or folder) outside its own folder (repeatable; "
                             "the operator's own file is always allowed)")
    submit.set_defaults(func=cmd_submit)
