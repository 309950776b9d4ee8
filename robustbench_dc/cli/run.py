"""``rbdc run PROTOCOL``: validate, plan and execute a protocol file."""

from __future__ import annotations

import argparse
import sys

from robustbench_dc.cli._args import add_command
from robustbench_dc.cli._output import print_job, print_plan

__all__ = ["register", "cmd_run"]


def cmd_run(args: argparse.Namespace) -> int:
    from robustbench_dc.protocol import JobsFailed, execute, job_status, parse_resources, plan_protocol

    resources = parse_resources(args.resources)
    # ProtocolError: one line per problem, exit code 2
    plan = plan_protocol(args.protocol, args.out, args.db, allow_code=args.allow_code)
    if args.dry_run:
        print_plan(plan, {} if args.force else job_status(plan))
        return 0
    where = "" if args.executor == "local" else f" on ray ({args.address or 'local instance'})"
    print(f"running {plan.protocol.name} -> {plan.output}{where}")
    counter = [0]
    try:
        result = execute(plan, progress=not args.quiet and sys.stderr.isatty(), force=args.force,
                         on_job=lambda j, s, t: print_job(j, s, t, counter, len(plan.jobs)),
                         command=getattr(args, "command_line", None), executor=args.executor,
                         address=args.address, resources=resources)
    except JobsFailed as exc:
        print(f"rbdc: {exc}\nre-run the same command to retry them: finished jobs are kept", file=sys.stderr)
        return 1
    print()
    print(result.leaderboard)
    print(f"wrote {len(result.written)} files under {result.run_dir}, e.g.:")
    for p in [p for p in result.written if p.suffix in (".json", ".md", ".html", ".png")][:12]:
        print(f"  {p}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "run", help="run a protocol (training, attacks, Lipschitz, figures, leaderboard)")
    p.add_argument("protocol", help="a protocol YAML file, or the name of a bundled protocol (e.g. quickstart)")
    p.add_argument("--out", help="run folder (default: the protocol's output, else runs/<name>; a protocol's own "
                                 "output must stay below the working directory, --out may be anywhere)")
    p.add_argument("--db", help="results database (default: the protocol's leaderboard.db, else RUN/results.sqlite)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the job plan, what is cached, each job's estimated time on this machine and the "
                        "code files the protocol runs; run nothing")
    p.add_argument("--allow-code", action="append", default=[], metavar="PATH",
                   help="let the protocol run this Python file (or the files in this folder) although it is outside "
                        "the protocol's folder (repeatable); without it such a protocol is refused before the file "
                        "is imported")
    p.add_argument("--force", action="store_true", help="re-run every job")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: one job after the other in this process (default); ray: jobs as Ray tasks, "
                        "independent ones in parallel (pip install \"robustbench-dc[ray]\")")
    p.add_argument("--address", help="ray executor: join the Ray cluster at this address (default: start a local "
                                     "Ray instance, or $RAY_ADDRESS)")
    p.add_argument("--resources", action="append", default=[], metavar="KIND=cpus:N,gpus:N,memory:SIZE",
                   help="what each job of a kind (train, whitebox, sweep, lipschitz, embedding, transfer, figures, "
                        "report, or all) asks for, over the protocol's resources section; cpus is also the job's "
                        "torch thread count (default: this process's), gpus and memory are requests to Ray; "
                        "repeatable")
    p.set_defaults(func=cmd_run)
