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
    from robustbench_dc.declarative import NORMS, PENALTIES, SETS

    print()
    print("Robust global pooling, y = argmin_u sum_i phi(u - x_i; c, a), in place of global average pooling")
    print("(architecture parameter pool=<penalty> of isonet, risonet, resnet20/32/56; c, a learnable per channel)")
    print(table([(p.name, "yes" if p.convex else "no", p.formula) for p in PENALTIES.values()],
                ("penalty", "convex", "phi(z)")))
    print()
    print("Feature projections before the classifier, y = argmin_u ||u - x||^2/2 s.t. ||u||_p = r (sphere) or <= r (ball)")
    print(f"(architecture parameter projection=<norm>-<set> of every zoo architecture; norm: {', '.join(NORMS)}; "
          f"set: {', '.join(SETS)}; radius learnable)")
    print()
    print("Isometric networks (ISONet, ICML 2020): architectures isonet (conv + SReLU max(x, b), Dirac init, no")
    print("BatchNorm or shortcuts) and risonet (residual blocks x + alpha * F(x), alpha from 0); the orthogonal-")
    print("convolution penalty ||conv2d(W, W) - delta||^2 / 2 is the recipe's tricks.isometry (authors: 1e-4)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ops = add_command(sub, "operators", help="the decoupled operator family").add_subparsers(
        dest="sub", metavar="ACTION")
    add_command(ops, "list", help="list magnitude/angular functions and registered operators").set_defaults(
        func=cmd_operators_list)
