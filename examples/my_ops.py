"""A worked example of a user operator for the leaderboard.

Two ways to define a new decoupled operator, both usable from a protocol or the command
line as ``examples/my_ops.py:<Name>``:

1. a magnitude (or angular) function, registered with a decorator; the operator is then
   ``DecoupledConv2d`` with that function (and the cosine angular function by default);
2. a whole conv-like module class, constructed like ``nn.Conv2d``.

Submit either to the MNIST leaderboard with::

    rbdc leaderboard submit examples/my_ops.py:SoftSatConv --protocol protocols/leaderboard-mnist.yaml
"""

from __future__ import annotations

from torch import Tensor

from robustbench_dc.operators import DecoupledConv2d, DecoupledLinear, register_magnitude


@register_magnitude("softsat", bounded=True, formula="alpha * ||x|| / (||x|| + rho)")
def softsat(norm: Tensor, *, alpha: float, rho: float) -> Tensor:
    """A bounded, rational saturation: h = alpha * ||x|| / (||x|| + rho) (0 at 0, alpha at infinity)."""
    return alpha * norm / (norm + rho)


class SoftSatLinear(DecoupledLinear):
    """The fully-connected counterpart (used for hidden linear layers such as mnist2d's embedding)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("magnitude", "softsat")
        kwargs.setdefault("rho", 4.0)
        super().__init__(*args, **kwargs)


class SoftSatConv(DecoupledConv2d):
    """SoftSat magnitude with the cosine angular function, as a conv-like class."""

    linear_counterpart = SoftSatLinear

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("magnitude", "softsat")
        kwargs.setdefault("rho", 4.0)
        super().__init__(*args, **kwargs)
