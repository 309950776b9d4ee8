"""Validation of a run summary's values before they enter the results database: every
helper names the field (``where``) in its error."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def required_value(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"results summary: {where} must be a mapping, got {type(mapping).__name__}")
    if key not in mapping or mapping[key] is None:
        raise ValueError(f"results summary: missing key {where}.{key}" if where else
                         f"results summary: missing key {key!r}")
    return mapping[key]


def present_value(mapping: Mapping[str, Any], key: str) -> Any:
    """``mapping[key]``, which must exist but may be ``None``."""
    if key not in mapping:
        raise ValueError(f"results summary: missing key {key!r}")
    return mapping[key]


def as_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"results summary: {where} must be a mapping, got {type(value).__name__}")
    return value


def as_number(value: Any, where: str, *, fraction: bool = False, finite: bool = True) -> float | None:
    """``value`` as a float (``None`` stays ``None``); a fraction must lie in [0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"results summary: {where} must be a number, got {value!r}")
    x = float(value)
    if math.isnan(x):
        return None
    if finite and math.isinf(x):
        raise ValueError(f"results summary: {where} must be finite, got {value!r}")
    if fraction and not 0.0 <= x <= 1.0:
        raise ValueError(f"results summary: {where} must be a fraction in [0, 1], got {value!r}")
    return x


def as_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"results summary: {where} must be an integer, got {value!r}")
    return value


def as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def split_accuracy(value: Any, where: str) -> tuple[float | None, float | None, dict[str, Any]]:
    """(robust_accuracy, attack_success_rate, other fields) of an evaluation entry (a number or a mapping)."""
    if isinstance(value, Mapping):
        if "robust_accuracy" not in value:
            raise ValueError(f"results summary: missing key {where}.robust_accuracy")
        extra = {k: v for k, v in value.items()
                 if k not in {"robust_accuracy", "attack_success_rate", "eps", "threat_model", "backend"}}
        return (as_number(value["robust_accuracy"], f"{where}.robust_accuracy", fraction=True),
                as_number(value.get("attack_success_rate"), f"{where}.attack_success_rate", fraction=True), extra)
    return as_number(value, where, fraction=True), None, {}
