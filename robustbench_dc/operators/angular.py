"""Angular functions ``g(theta)`` of decoupled operators (Liu et al., CVPR 2018, Sec. 3.2).

Each function receives ``cos`` = cos(theta) between the filter ``w`` and the input patch
``x`` (already clipped to [-1, 1]) and the keyword ``k`` (sigmoid steepness), and
returns ``g`` in [-1, 1] for the built-ins. Functions that need the angle itself call
:func:`angle`, which clips before ``acos`` and keeps the gradient finite at +-1.

A user adds one with::

    from robustbench_dc.operators import register_angular

    @register_angular("cubecos")
    def cubecos(cos):
        return cos ** 3
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from robustbench_dc._text import did_you_mean
from robustbench_dc.errors import InvalidParameterError

__all__ = ["Angular", "ANGULARS", "register_angular", "get_angular", "list_angulars", "angle"]

_ANGULAR_KEYWORDS = ("k",)


class _SafeAcos(torch.autograd.Function):
    """``acos`` of a value clipped to [-1, 1] with a finite derivative at the ends.

    The forward value is exactly ``acos(clip(c, -1, 1))``; the derivative is
    ``-1 / sqrt(max(1 - clip(c)^2, tiny))`` so that perfectly aligned patches never produce
    infinite gradients. The backward is written with differentiable operations on the
    saved input, so double backward (input-gradient norms, Lipschitz estimates) is exact;
    ``jvp`` and ``generate_vmap_rule`` make it work with ``torch.func`` too.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(cos: Tensor) -> Tensor:
        return torch.acos(cos.clamp(-1.0, 1.0))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        (cos,) = inputs
        ctx.save_for_backward(cos)
        ctx.save_for_forward(cos)

    @staticmethod
    def _derivative(cos: Tensor) -> Tensor:
        clipped = cos.clamp(-1.0, 1.0)
        return -torch.rsqrt((1.0 - clipped * clipped).clamp_min(torch.finfo(cos.dtype).tiny))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (cos,) = ctx.saved_tensors
        return grad * _SafeAcos._derivative(cos)

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor) -> Tensor:
        (cos,) = ctx.saved_tensors
        return tangent * _SafeAcos._derivative(cos)


class _SafeAcosTraceable(torch.autograd.Function):
    """:class:`_SafeAcos` without the forward-mode rule, which ``torch.compile`` cannot trace."""

    @staticmethod
    def forward(cos: Tensor) -> Tensor:
        return torch.acos(cos.clamp(-1.0, 1.0))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (cos,) = ctx.saved_tensors
        return grad * _SafeAcos._derivative(cos)


def angle(cos: Tensor) -> Tensor:
    """theta = acos(clip(cos, -1, 1)) in [0, pi], with a finite gradient everywhere."""
    if torch.compiler.is_compiling():
        return _SafeAcosTraceable.apply(cos)
    return _SafeAcos.apply(cos)


@dataclass(frozen=True)
class Angular:
    """A registered angular function ``fn(cos, **keywords) -> Tensor``."""

    name: str
    fn: Callable[..., Tensor]
    formula: str = ""
    keywords: tuple[str, ...] = field(default=())

    def __call__(self, cos: Tensor, *, k: float = 0.3) -> Tensor:
        return self.fn(cos, **({"k": k} if "k" in self.keywords else {}))


ANGULARS: dict[str, Angular] = {}


def _accepted_keywords(fn: Callable[..., Tensor]) -> tuple[str, ...]:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return _ANGULAR_KEYWORDS
    return tuple(k for k in _ANGULAR_KEYWORDS if k in params)


def register_angular(name: str, *, formula: str = "", overwrite: bool = False
                     ) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator registering ``fn(cos, *, k) -> Tensor`` under ``name``.

    The function receives cos(theta) clipped to [-1, 1]; use :func:`angle` for theta.
    The decorated function is returned unchanged, with ``_rbdc_angular`` set.
    """

    def decorator(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        key = name.lower()
        if key in ANGULARS and not overwrite and ANGULARS[key].fn is not fn:
            raise ValueError(f"angular {name!r} is already registered; pass overwrite=True to replace it")
        doc = formula or (inspect.getdoc(fn) or "").split("\n")[0]
        record = Angular(key, fn, doc, _accepted_keywords(fn))
        ANGULARS[key] = record
        fn._rbdc_angular = record  # type: ignore[attr-defined]
        return fn

    return decorator


def list_angulars() -> list[str]:
    """Registered angular function names, sorted (like ``list_archs``, ``list_magnitudes``, ``list_operators``)."""
    return sorted(ANGULARS)


def get_angular(spec: str | Angular | Callable[..., Tensor]) -> Angular:
    """Look up an angular function by name, or wrap a registered / plain callable."""
    if isinstance(spec, Angular):
        return spec
    if callable(spec):
        record = getattr(spec, "_rbdc_angular", None)
        if record is not None:
            return record
        return Angular(getattr(spec, "__name__", "custom"), spec, "", _accepted_keywords(spec))
    key = str(spec).lower()
    if key not in ANGULARS:
        raise InvalidParameterError(f"angular: unknown {spec!r}{did_you_mean(spec, ANGULARS)}; "
                                    f"known: {', '.join(list_angulars())}")
    return ANGULARS[key]


# ----------------------------------------------------------------------------- built-ins


@register_angular("linear", formula="1 - 2*theta/pi")
def linear(cos: Tensor) -> Tensor:
    """Linear angular activation: g = 1 - 2*theta/pi."""
    return 1.0 - (2.0 / math.pi) * angle(cos)


@register_angular("cos", formula="cos(theta)")
def cos(cos: Tensor) -> Tensor:
    """Cosine angular activation: g = cos(theta) (no acos needed)."""
    return cos


@register_angular(
    "sigmoid",
    formula="[(1+e^(-pi/2k))/(1-e^(-pi/2k))] * (1-e^(theta/k-pi/2k))/(1+e^(theta/k-pi/2k))",
)
def sigmoid(cos: Tensor, *, k: float) -> Tensor:
    """Sigmoid angular activation with steepness k (default 0.3).

    The paper's form ``C * (1 - e^u) / (1 + e^u)`` with ``u = theta/k - pi/(2k)`` and
    ``C = (1 + e^(-pi/2k)) / (1 - e^(-pi/2k))`` equals
    ``tanh((pi/2 - theta) / (2k)) / tanh(pi / (4k))``, which is what is evaluated
    (no overflow for small k). g(0) = 1, g(pi/2) = 0, g(pi) = -1.
    """
    if k <= 0:
        raise ValueError(f"k: must be > 0, got {k}")
    theta = angle(cos)
    return torch.tanh((0.5 * math.pi - theta) / (2.0 * k)) / math.tanh(math.pi / (4.0 * k))


@register_angular("sqcos", formula="sign(cos(theta)) * cos(theta)^2")
def sqcos(cos: Tensor) -> Tensor:
    """Square-cosine angular activation: g = sign(cos theta) * cos(theta)^2."""
    return cos * cos.abs()
