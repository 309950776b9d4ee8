"""``KEY=VALUE`` parameters: the one parser behind ``--param``, ``--set`` and the benchmarks'
operator specs (``"mix+sigmoid,weighted=separable,rho=0.5"``).

Values are YAML (``0.5``, ``true``, ``[8, 16, 32]``, ``{eps: 0.2}``, ``separable``) with two
fixes for command lines: ``none``/``None`` is ``None``, and every number written with an
exponent is a float (PyYAML reads ``1e-3`` as a string, ``1.0e-3`` as a number).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import yaml

from robustbench_dc._yaml import safe_load
from robustbench_dc.errors import UsageError

__all__ = ["parse_value", "parse_params", "parse_eps"]

_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_value(text: str, *, what: str = "parameter") -> Any:
    """``"0.5"`` -> 0.5, ``"1e-3"`` -> 0.001, ``"[8,16]"`` -> [8, 16], ``"none"`` -> None,
    ``"tanh"`` -> ``"tanh"``; :class:`UsageError` for an empty value or text YAML cannot read."""
    s = text.strip()
    if not s:
        raise UsageError(f"{what}: no value (write none for None)")
    if _INT.fullmatch(s):
        return int(s)  # decimal, whatever YAML 1.1 thinks of a leading 0
    if _FLOAT.fullmatch(s):
        return float(s)
    try:
        value = safe_load(s)
    except yaml.YAMLError as exc:
        raise UsageError(f"{what}: cannot read the value {text!r} ({' '.join(str(exc).split())})") from None
    if isinstance(value, str) and value.lower() == "none":
        return None
    return value


def parse_params(items: Iterable[str] | None, *, what: str = "--param") -> dict[str, Any]:
    """``["rho=0.5", "widths=[8,16,32]"]`` -> ``{"rho": 0.5, "widths": [8, 16, 32]}``; a later
    key overrides an earlier one.

    ``what`` names the source in error messages (``--param``, ``--set``, ``operator spec ...``).

    Raises:
        UsageError: an item without ``=``, with an empty key or value, or a value that is not YAML.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value, what=f"{what} {key.strip()}")
    return out


_FRACTION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*")


def parse_eps(value: Any, *, what: str = "eps") -> Any:
    """A perturbation budget as users write it: a number (``0.3``, ``0.0314``) or a fraction string
    (``"8/255"``, RobustBench's spelling), as a float; ``None`` stays ``None``; anything else is
    returned unchanged for the caller's own check (a bool, a list...).

    Raises:
        UsageError: a string that is neither a number nor ``A/B`` with ``B`` non-zero.
    """
    if not isinstance(value, str):
        return value
    m = _FRACTION.fullmatch(value)
    if m is not None:
        num, den = float(m.group(1)), float(m.group(2))
        if den == 0:
            raise UsageError(f"{what}: division by zero in {value!r}")
        return num / den
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{what}: expected a number or a fraction like 8/255, got {value!r}") from None
