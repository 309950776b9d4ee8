"""The architecture registry and ``build_model`` (timm-style: one decorator, one builder)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from torch import nn

from robustbench_dc._text import did_you_mean
from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.operators import OperatorSpec, UnknownOperatorError, get_operator

__all__ = ["ARCHS", "register_arch", "list_archs", "build_model", "split_params"]

ARCHS: dict[str, Callable[..., nn.Module]] = {}


def register_arch(name: str, *, overwrite: bool = False) -> Callable[[Callable[..., nn.Module]],
                                                                     Callable[..., nn.Module]]:
    """Register ``builder(operator: OperatorSpec, num_classes=..., **arch_params) -> nn.Module``.

    Like the operator registries, an existing name is refused (a ``ValueError``) unless
    ``overwrite=True``; registering the same builder again is allowed (a module re-import).
    """

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name.lower()
        old = ARCHS.get(key)
        same = old is builder or (getattr(old, "__module__", None), getattr(old, "__qualname__", None)) == (
            builder.__module__, builder.__qualname__)
        if old is not None and not overwrite and not same:
            raise ValueError(f"architecture {name!r} is already registered; pass overwrite=True to replace it")
        ARCHS[key] = builder
        return builder

    return decorator


def list_archs() -> list[str]:
    """Registered architecture names."""
    return sorted(ARCHS)


def _arch_keywords(builder: Callable[..., nn.Module]) -> set[str]:
    params = inspect.signature(builder).parameters
    return {n for n in params if n != "operator"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_arch_params(arch: str, builder: Callable[..., nn.Module], params: dict[str, Any]) -> None:
    """A parameter whose default is a number must be a number, one whose default is a sequence of
    numbers a sequence of numbers (``--param width=abc`` is a user's mistake, not a traceback);
    ``width`` must be > 0."""
    defaults = {n: p.default for n, p in inspect.signature(builder).parameters.items()}
    for k, v in params.items():
        d = defaults.get(k, inspect.Parameter.empty)
        if _is_number(d) and not _is_number(v):
            raise InvalidParameterError(f"{k}: architecture {arch!r} takes a number, got {v!r}")
        if isinstance(d, (list, tuple)) and d and all(_is_number(e) for e in d) and not (
                isinstance(v, (list, tuple)) and all(_is_number(e) for e in v)):
            raise InvalidParameterError(f"{k}: architecture {arch!r} takes a list of numbers, got {v!r}")
    if "width" in params and _is_number(params["width"]) and not params["width"] > 0:
        raise InvalidParameterError(f"width: must be > 0, got {params['width']!r}")


def split_params(arch: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword parameters into (architecture parameters, operator parameters)."""
    builder = _builder(arch)
    keys = _arch_keywords(builder)
    return {k: v for k, v in params.items() if k in keys}, {k: v for k, v in params.items() if k not in keys}


def _builder(arch: str) -> Callable[..., nn.Module]:
    key = arch.lower()
    if key not in ARCHS:
        raise InvalidParameterError(f"arch: unknown {arch!r}{did_you_mean(arch, ARCHS)}; known: {', '.join(list_archs())}")
    return ARCHS[key]


def build_model(arch: str, operator: str | OperatorSpec = "baseline", num_classes: int | None = None,
                dataset: str | None = None, base_dir: str | Path | None = None, **params: Any) -> nn.Module:
    """Build a zoo architecture with any operator.

    Args:
        arch: ``"cnn9"``, ``"resnet32"``, ``"mnist2d"``, ... (see :func:`list_archs`).
        operator: operator spec, e.g. ``"baseline"``, ``"tanh+cos"``, ``"my_ops.py:MyOp"``.
        num_classes: number of logits (default: the dataset's, else 10).
        dataset: optional dataset name (``"mnist"``, ``"cifar10"``, ...): sets the input
            channels and size, the normalization constants and the number of classes.
        base_dir: folder against which a relative ``path/to/file.py:Name`` operator resolves.
        **params: architecture parameters (``width``, ``widths``, ...) and operator
            parameters (``rho``, ``alpha``, ``weighted``, ...), told apart by name.

    Returns:
        a model taking ``[0, 1]`` NCHW inputs and returning logits, with
        ``model.info`` recording how it was built.

    Example::

        >>> model = build_model("cnn9", "tanh+cos", dataset="cifar10", width=0.25, rho=1.0)
    """
    builder = _builder(arch)
    arch_params, op_params = split_params(arch, params)
    _check_arch_params(arch, builder, arch_params)
    keys = _arch_keywords(builder)
    if dataset is not None:
        from robustbench_dc.data import dataset_info

        info = dataset_info(dataset)
        defaults = {"in_channels": info.shape[0], "input_size": info.shape[1], "mean": info.mean,
                    "std": info.std}
        for k, v in defaults.items():
            if k in keys:
                arch_params.setdefault(k, v)
        if num_classes is None:
            num_classes = info.num_classes
    if isinstance(operator, OperatorSpec):
        spec = operator.with_params(**op_params)
    else:
        try:
            spec = get_operator(operator, base_dir=base_dir, **op_params)
        except (UnknownOperatorError, InvalidParameterError) as exc:
            if not op_params:
                raise
            # A misspelt architecture parameter ends up with the operator's: say what the architecture takes.
            raise type(exc)(f"{exc} (architecture {arch!r} takes: {', '.join(sorted(keys))})") from exc
    model = builder(spec, num_classes=10 if num_classes is None else num_classes, **arch_params)
    record = getattr(model, "info", None)
    if isinstance(record, dict):
        record["dataset"] = dataset
    return model
