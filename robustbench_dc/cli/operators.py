"""``rbdc operators list``: the decoupled operator family."""

from __future__ import annotations

import argparse

from robustbench_dc.cli._args import add_command
from robustbench_dc.cli._output import table

__all__ = ["register", "cmd_operators_list"]


def cmd_operators_list(args: argparse.Namespace) -> int:
    from robustbench_dc.operators import ANGULARS, MAGNITUDES, OPERATORS, WEIGHTED, entry_point_operators

    print("Magnitude functions h(||x||)  (operator spec: '<magnitude>+<angular>', e.g. 'tanh+cos')")
    print(table([(m.name, "yes" if m.bounded else "no", m.formula) for m in MAGNITUDES.values()],
                ("magnitude", "bounded", "formula")))
    print()
    print("Angular functions g(theta)")
    print(table([(a.name, a.formula) for a in ANGULARS.values()], ("angular", "formula")))
    print()
    print("Weighted variants (weighted=...): " + ", ".join(str(w) for w in WEIGHTED))
    print("Other specs: baseline (nn.Conv2d / nn.Linear); sphereconv, ballconv, tanhconv, ... (= <magnitude>+cos);")
    print("             path/to/file.py:Name or package.module:Name (a user operator)")
    extra = [(name, f"{spec.conv.__module__}.{getattr(spec.conv, '__qualname__', spec.conv)}", "registered")
             for name, spec in sorted(OPERATORS.items())]
    extra += [(name, ep.value, "entry point") for name, ep in sorted(entry_point_operators().items())]
    if extra:
        print()
        print(table(extra, ("operator", "class", "source")))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ops = add_command(sub, "operators", help="the decoupled operator family").add_subparsers(
        dest="sub", metavar="ACTION")
    add_command(ops, "list", help="list magnitude/angular functions and registered operators").set_defaults(
        func=cmd_operators_list)
