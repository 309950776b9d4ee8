"""``rbdc reproduce``: the Decoupled Networks reproduction report (Tables 7-8, Figures 6-7) from
stored run results. Only this module prints; :mod:`robustbench_dc.reproduce` writes."""

from __future__ import annotations

import argparse

from robustbench_dc.cli._args import add_command

__all__ = ["register", "cmd_reproduce"]


def cmd_reproduce(args: argparse.Namespace) -> int:
    from robustbench_dc.reproduce import tables_summary, write_report, write_reproduction_page

    if args.summary is not None:
        print(tables_summary(args.summary), end="")
        if args.tables is None and args.figures is None and args.page is None:
            return 0
    if args.page is None or args.tables is not None or args.figures is not None:  # --page alone: the page only
        for path in write_report(args.out, tables_run=args.tables, figures_run=args.figures):
            print(path)
    if args.page is not None:
        print(write_reproduction_page(args.page, args.out, phases=args.phases, noise=args.noise,
                                      command=getattr(args, "command_line", None)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` sub-command."""
    p = add_command(sub, "reproduce", help="write the paper-reproduction report from run folders",
                    description="Tables 7-8 (ours beside the paper's, claims judged by rule) from a run of "
                                "protocols/table7-8-*.yaml, and Figures 6-7 from a run of "
                                "protocols/figures6-7.yaml, into OUT. Nothing is recomputed.")
    p.add_argument("--tables", metavar="RUN_DIR", help="run folder of a Tables 7-8 protocol")
    p.add_argument("--figures", metavar="RUN_DIR", help="run folder of the Figures 6-7 protocol")
    p.add_argument("--out", default="figures", help="output folder (default: figures)")
    p.add_argument("--summary", metavar="TABLES78_JSON",
                   help="print the claims of a written Tables 7-8 report (its tables78.json) as Markdown bullets, "
                        "as the README shows them")
    p.add_argument("--page", metavar="MD",
                   help="also write the reproduction's reference page (docs/reproduction.md) from the report in OUT: "
                        "claims, settings, machine, wall time per phase, run-to-run noise")
    p.add_argument("--phases", metavar="JSON", help="with --page: the run's job times from a phases file "
                                                    "(python -m benchmarks.table78_phases), for a report without them")
    p.add_argument("--noise", metavar="JSON", action="append", default=[],
                   help="with --page: a comparison of two runs (python -m benchmarks.table78_noise), repeatable")
    p.set_defaults(func=cmd_reproduce)
