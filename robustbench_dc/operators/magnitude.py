"""Magnitude functions ``h(||x||)`` of decoupled operators (Liu et al., CVPR 2018, Sec. 3).

Every magnitude function takes the patch norm ``norm`` (a tensor, ``||x||`` computed with
an epsilon inside the square root, so it is strictly positive) and the operator's
hyper-parameters as keyword arguments, and returns ``h`` with the same shape
(or a shape that broadcasts against it).

A user adds one with the decorator::

    from robustbench_dc.operators import register_magnitude

    @register_magnitude("softsat", bounded=True)
    def softsat(norm, *, alpha, rho):
        return alpha * norm / (norm + rho)

and then builds ``DecoupledConv2d(..., magnitude="softsat")`` or names the operator
``"softsat+cos"`` in a protocol. The function may accept any subset of the keywords
``alpha``, ``beta``, ``rho`` (only those it names are passed).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from robustbench_dc._text import did_you_mean
from robustbench_dc.errors import InvalidParameterError

__all__ = [
    "Magnitude",
    "MAGNITUDES",
    "register_magnitude",
    "get_magnitude",
    "list_magnitudes",
]

_MAGNITUDE_KEYWORDS = ("alpha", "beta", "rho")


@dataclass(frozen=True)
class Magnitude:
    """A registered magnitude function.

    Attributes:
        name: registry name (``"tanh"``).
        fn: the function ``fn(norm, **keywords) -> Tensor``.
        bounded: ``True`` when ``|h| <= alpha`` for every input (SphereConv, BallConv,
            TanhConv): with an angular function in [-1, 1] the operator output is then
            bounded by ``alpha``.
        uses_rho: whether the function reads ``rho`` (the operator radius).
        formula: human-readable formula, shown by ``rbdc operators list``.
        keywords: the hyper-parameter keywords the function accepts.
        piecewise_linear: ``h`` is piecewise linear in ``||x||`` (SphereConv, BallConv, ...): its
            value and derivative cost a comparison and a multiplication, so the compiled
            per-channel-radius path recomputes them in an attack's backward pass instead of
            storing the factors of the input gradient (which pays off for ``exp``/``tanh``/``log``).
    """

    name: str
    fn: Callable[..., Tensor]
    bounded: bool = False
    formula: str = ""
    keywords: tuple[str, ...] = field(default=())
    piecewise_linear: bool = False

    @property
    def uses_rho(self) -> bool:
        return "rho" in self.keywords

    def __call__(self, norm: Tensor, *, alpha: float | Tensor = 1.0, beta: float = 0.5,
                 rho: float | Tensor = 1.0) -> Tensor:
        given = {"alpha": alpha, "beta": beta, "rho": rho}
        return self.fn(norm, **{k: given[k] for k in self.keywords})


MAGNITUDES: dict[str, Magnitude] = {}


def _accepted_keywords(fn: Callable[..., Tensor], allowed: tuple[str, ...]) -> tuple[str, ...]:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return allowed
    return tuple(k for k in allowed if k in params)


def register_magnitude(name: str, *, bounded: bool = False, formula: str = "", piecewise_linear: bool = False,
                       overwrite: bool = False) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator registering ``fn(norm, *, alpha, beta, rho) -> Tensor`` under ``name``.

    Args:
        name: the registry name used in operator specs (``"<name>+cos"``).
        bounded: declare ``|h| <= alpha`` (checked by the test-suite for built-ins).
        formula: a one-line formula for listings; defaults to the docstring's first line.
        piecewise_linear: declare ``h`` piecewise linear in ``||x||`` (only a speed hint, see
            :class:`Magnitude`).
        overwrite: allow replacing an existing entry (otherwise a ``ValueError``).

    The decorated function is returned unchanged, with the attribute
    ``_rbdc_magnitude`` pointing at its :class:`Magnitude` record.
    """

    def decorator(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        key = name.lower()
        if key in MAGNITUDES and not overwrite and MAGNITUDES[key].fn is not fn:
            raise ValueError(f"magnitude {name!r} is already registered; pass overwrite=True to replace it")
        doc = formula or (inspect.getdoc(fn) or "").split("\n")[0]
        record = Magnitude(key, fn, bounded, doc, _accepted_keywords(fn, _MAGNITUDE_KEYWORDS), piecewise_linear)
        MAGNITUDES[key] = record
        fn._rbdc_magnitude = record  # type: ignore[attr-defined]
        return fn

    return decorator


def list_magnitudes() -> list[str]:
    """Registered magnitude function names, sorted (like ``list_archs``, ``list_angulars``, ``list_operators``)."""
    return sorted(MAGNITUDES)


def get_magnitude(spec: str | Magnitude | Callable[..., Tensor]) -> Magnitude:
    """Look up a magnitude by name, or wrap a registered / plain callable."""
    if isinstance(spec, Magnitude):
        return spec
    if callable(spec):
        record = getattr(spec, "_rbdc_magnitude", None)
        if record is not None:
            return record
        name = getattr(spec, "__name__", "custom")
        return Magnitude(name, spec, False, "", _accepted_keywords(spec, _MAGNITUDE_KEYWORDS))
    key = str(spec).lower()
    if key not in MAGNITUDES:
        raise InvalidParameterError(f"magnitude: unknown {spec!r}{did_you_mean(spec, MAGNITUDES)}; "
                                    f"known: {', '.join(list_magnitudes())}")
    return MAGNITUDES[key]


# ----------------------------------------------------------------------------- built-ins


@register_magnitude("sphere", bounded=True, formula="alpha", piecewise_linear=True)
def sphere(norm: Tensor, *, alpha: float | Tensor) -> Tensor:
    """SphereConv: h = alpha (the response depends on the angle only)."""
    return alpha * torch.ones_like(norm)


@register_magnitude("ball", bounded=True, formula="alpha * min(||x||, rho) / rho", piecewise_linear=True)
def ball(norm: Tensor, *, alpha: float | Tensor, rho: float | Tensor) -> Tensor:
    """BallConv: h = alpha * min(||x||, rho) / rho."""
    return alpha * torch.minimum(norm, torch.as_tensor(rho, dtype=norm.dtype, device=norm.device)) / rho


@register_magnitude("tanh", bounded=True, formula="alpha * tanh(||x|| / rho)")
def tanh(norm: Tensor, *, alpha: float | Tensor, rho: float | Tensor) -> Tensor:
    """TanhConv: h = alpha * tanh(||x|| / rho).

    Computed as ``(1 - e) / (1 + e)`` with ``e = exp(-2 z)``, ``z = ||x|| / rho`` (clamped at -20,
    where tanh is -1 in float32, so that ``e`` stays finite): equal to ``torch.tanh`` to within float
    rounding in absolute terms, and about 2.5x faster on a CPU, where ``tanh``'s exact vector
    routine is several times slower than ``exp``'s, both eagerly and in compiled kernels.
    With a per-channel radius ``h`` is a full ``(N, C_out, H, W)`` tensor, computed in every
    forward pass and again in the backward pass (benchmarks/README.md, "TanhConv's magnitude").
    """
    e = torch.exp((norm / rho).clamp_min(-20.0) * -2.0)
    return alpha * ((1.0 - e) / (1.0 + e))


@register_magnitude("linear", formula="alpha * ||x||", piecewise_linear=True)
def linear(norm: Tensor, *, alpha: float | Tensor) -> Tensor:
    """LinearConv: h = alpha * ||x||."""
    return alpha * norm


@register_magnitude("seg", formula="alpha*||x|| if ||x|| <= rho else beta*||x|| + (alpha - beta)*rho",
                    piecewise_linear=True)
def seg(norm: Tensor, *, alpha: float | Tensor, beta: float | Tensor, rho: float | Tensor) -> Tensor:
    """SegConv: h = alpha*||x|| for ||x|| <= rho, beta*||x|| + alpha*rho - beta*rho above."""
    return torch.where(norm <= rho, alpha * norm, beta * norm + alpha * rho - beta * rho)


@register_magnitude("log", formula="alpha * log(1 + ||x||)")
def log(norm: Tensor, *, alpha: float | Tensor) -> Tensor:
    """LogConv: h = alpha * log(1 + ||x||)."""
    return alpha * torch.log1p(norm)


@register_magnitude("mix", formula="alpha*||x|| + beta*log(1 + ||x||)")
def mix(norm: Tensor, *, alpha: float | Tensor, beta: float | Tensor) -> Tensor:
    """MixConv: h = alpha*||x|| + beta*log(1 + ||x||)."""
    return alpha * norm + beta * torch.log1p(norm)
