"""Operator specs: from a string, a class or a reference to a layer factory.

An operator spec says which layer replaces the convolutions (and hidden fully-connected
layers) of a network:

- ``"baseline"``: plain ``nn.Conv2d`` / ``nn.Linear``;
- ``"<magnitude>+<angular>"``: :class:`DecoupledConv2d` / :class:`DecoupledLinear` with
  those functions, e.g. ``"tanh+cos"``, ``"sphere+sqcos"``; the paper's names
  ``"sphereconv"``, ``"ballconv"``, ``"tanhconv"``, ``"linearconv"``, ``"segconv"``,
  ``"logconv"``, ``"mixconv"`` mean ``"<magnitude>+cos"``;
- a name registered with :func:`register_operator` (a whole conv-like module class);
- a name from the entry-point group ``robustbench_dc.operators`` of an installed package;
- a reference ``path/to/file.py:Name`` or ``package.module:Name`` to a module class, a
  function registered with ``@register_magnitude`` / ``@register_angular`` (the other
  function defaults to ``cos`` / ``tanh``), or an :class:`OperatorSpec`.

Parameters (``alpha``, ``rho``, ``weighted``, ...) come as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import logging
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from robustbench_dc._text import closest, did_you_mean
from robustbench_dc.errors import InvalidParameterError, UserError
from robustbench_dc.operators.angular import ANGULARS
from robustbench_dc.operators.layers import DecoupledConv2d, DecoupledLinear
from robustbench_dc.operators.magnitude import MAGNITUDES

__all__ = [
    "OperatorSpec",
    "UnknownOperatorError",
    "ENTRY_POINT_GROUP",
    "OPERATORS",
    "register_operator",
    "get_operator",
    "list_operators",
    "load_reference",
    "entry_point_operators",
    "reference_source_sha256",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "robustbench_dc.operators"
PAPER_ALIASES = {
    "sphereconv": "sphere", "ballconv": "ball", "tanhconv": "tanh", "linearconv": "linear",
    "segconv": "seg", "logconv": "log", "mixconv": "mix",
}
# Hyper-parameters understood by the built-in decoupled layers.
DECOUPLED_PARAMS = ("magnitude", "angular", "alpha", "beta", "rho", "k", "weighted", "learnable_rho",
                    "rho_mode", "eps")


class UnknownOperatorError(UserError, ValueError):
    """An operator spec that names nothing known; the message lists the known names."""


class PluginError(UserError, RuntimeError):
    """User operator code (a ``file.py:Name`` reference or an entry point) failed: it would not
    import, build a layer, or it returned an output of the wrong shape or with NaN/inf values. The
    message names the plugin and the problem (``-v`` shows the traceback)."""


@dataclass(frozen=True)
class OperatorSpec:
    """A resolved operator: how to build its conv-like and linear-like layers.

    Attributes:
        name: canonical name (``"tanh+cos"``, ``"baseline"``, ``"my_ops.py:MyOp"``).
        conv: factory ``conv(in_channels, out_channels, kernel_size, stride=1, padding=0,
            dilation=1, **params) -> nn.Module``.
        linear: factory ``linear(in_features, out_features, **params) -> nn.Module``, or
            ``None`` when the operator has no fully-connected counterpart (hidden
            fully-connected layers then stay ``nn.Linear``).
        params: keyword arguments passed to both factories.
    """

    name: str
    conv: Callable[..., nn.Module]
    linear: Callable[..., nn.Module] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    #: user code (a file or module reference, an entry point): its layers are built and their first
    #: output checked under :class:`PluginError` (the plugin's name and the problem, one line)
    plugin: bool = False
    #: sha256 of the file of the module that defines a plugin (``None`` for built-in operators); a
    #: protocol job's key includes it, so that editing the file re-runs the jobs that used it
    source_sha256: str | None = None

    @property
    def is_baseline(self) -> bool:
        return self.name == "baseline"

    def make_conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  padding: int = 0, dilation: int = 1, bias: bool = False) -> nn.Module:
        """Build a conv-like layer with this operator."""
        what = f"a convolution ({in_channels} -> {out_channels} channels, kernel {kernel_size}, stride {stride})"
        layer = self._build(self.conv, what, in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                            dilation=dilation, bias=bias, **self.params)
        if self.plugin:
            def expected(x: Tensor) -> tuple[int, ...]:
                size = [(d + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1 for d in x.shape[2:]]
                return (x.shape[0], out_channels, *size)
            _check_first_output(layer, self.name, what, expected)
        return layer

    def make_linear(self, in_features: int, out_features: int, bias: bool = False) -> nn.Module:
        """Build a hidden fully-connected layer with this operator (``nn.Linear`` if it has none)."""
        if self.linear is None:
            return nn.Linear(in_features, out_features, bias=bias)
        what = f"a linear layer ({in_features} -> {out_features})"
        layer = self._build(self.linear, what, in_features, out_features, bias=bias, **self.params)
        if self.plugin:
            _check_first_output(layer, self.name, what, lambda x: (x.shape[0], out_features))
        return layer

    def _build(self, factory: Callable[..., nn.Module], what: str, *args: Any, **kwargs: Any) -> nn.Module:
        if not self.plugin:
            return factory(*args, **kwargs)
        try:
            return factory(*args, **kwargs)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code: report which plugin failed and how
            raise PluginError(f"operator {self.name!r}: building {what} failed: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}") from exc

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description (name and parameters) for model cards and results."""
        return {"name": self.name, "params": {k: _jsonable(v) for k, v in sorted(self.params.items())}}

    def with_params(self, **params: Any) -> "OperatorSpec":
        return dataclasses.replace(self, params={**self.params, **params})


def _check_first_output(layer: nn.Module, name: str, what: str, expected: Callable[[Tensor], tuple[int, ...]]) -> None:
    """On its first forward pass, check a plugin layer's output shape and finiteness (then the hook
    removes itself: later passes cost nothing)."""
    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        handle.remove()
        x = args[0] if args else None
        if not isinstance(out, Tensor) or not isinstance(x, Tensor):
            raise PluginError(f"operator {name!r}: {what} returned {type(out).__name__}, not a tensor")
        want = expected(x)
        if tuple(out.shape) != want:
            raise PluginError(f"operator {name!r}: {what} returned shape {tuple(out.shape)} for an input of shape "
                              f"{tuple(x.shape)}; expected {want}")
        with torch.no_grad():
            bad = int((~torch.isfinite(out.detach())).sum())
        if bad:
            raise PluginError(f"operator {name!r}: {what} returned {bad} NaN/inf values of {out.numel()} "
                              f"(input all finite: {bool(torch.isfinite(x).all())})")

    handle = layer.register_forward_hook(hook)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return getattr(value, "__name__", repr(value))


def _baseline_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                   padding: int = 0, dilation: int = 1, bias: bool = False, **params: Any) -> nn.Module:
    if params:
        raise InvalidParameterError(f"operator 'baseline' takes no parameters, got {sorted(params)}")
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                     dilation=dilation, bias=bias)


def _baseline_linear(in_features: int, out_features: int, bias: bool = False, **params: Any) -> nn.Module:
    if params:
        raise InvalidParameterError(f"operator 'baseline' takes no parameters, got {sorted(params)}")
    return nn.Linear(in_features, out_features, bias=bias)


OPERATORS: dict[str, OperatorSpec] = {}


def register_operator(name: str, *, linear: Callable[..., nn.Module] | None = None,
                      overwrite: bool = False) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a whole conv-like module under ``name``.

    The class is constructed like ``nn.Conv2d``:
    ``cls(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, **params)``
    and must accept ``bias`` as a keyword. ``linear`` optionally gives the
    fully-connected counterpart (same keywords as ``nn.Linear`` plus ``**params``); a
    class attribute ``linear_counterpart`` does the same.
    """

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        key = name.lower()
        if key in OPERATORS and not overwrite and OPERATORS[key].conv is not cls:
            raise ValueError(f"operator {name!r} is already registered; pass overwrite=True to replace it")
        OPERATORS[key] = OperatorSpec(key, cls, linear or getattr(cls, "linear_counterpart", None))
        cls._rbdc_operator = key  # type: ignore[attr-defined]
        return cls

    return decorator


def entry_point_operators() -> dict[str, Any]:
    """Operators advertised by installed packages in the ``robustbench_dc.operators`` group."""
    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _module_name_for(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return f"rbdc_user_{path.stem}_{digest}"


def load_reference(ref: str, base_dir: str | Path | None = None, *, kind: str = "operator") -> Any:
    """Import ``path/to/file.py:Name`` or ``package.module:Name`` and return ``Name``.

    A relative file path is resolved against ``base_dir`` (e.g. the folder of the
    protocol that names it), then the working directory. The file is imported once
    per path (re-used on later calls) under a private module name. ``kind`` names what the
    reference is in error messages (``operator``, ``model``).
    """
    module, attr = _load_reference(ref, base_dir, kind)
    return getattr(module, attr)


def reference_source_sha256(ref: str, base_dir: str | Path | None = None, *, kind: str = "operator") -> str | None:
    """sha256 of the file a loaded reference comes from (None for a ``package.module:Name``)."""
    module, _ = _load_reference(ref, base_dir, kind)
    return module_source_sha256(module) if str(ref).rpartition(":")[0].endswith(".py") else None


_SOURCE_ATTR = "__rbdc_source_sha256__"


def module_source_sha256(module: Any) -> str | None:
    """sha256 of the file a module was loaded from (``None`` without one: a namespace or built-in
    module). Read once per module object and remembered on it, so that it stays the hash of the
    code that runs: a file edited after its import is not imported again in the same process."""
    if module is None:
        return None
    if hasattr(module, _SOURCE_ATTR):
        return getattr(module, _SOURCE_ATTR)
    path = getattr(module, "__file__", None)
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        digest = None
    try:
        setattr(module, _SOURCE_ATTR, digest)
    except (AttributeError, TypeError):  # pragma: no cover - a module object that refuses attributes
        pass
    return digest


def _load_reference(ref: str, base_dir: str | Path | None, kind: str = "operator") -> tuple[Any, str]:
    """The module a reference names, imported, and the name it looks up there (checked to exist)."""
    if ref.count(":") < 1:
        raise UnknownOperatorError(f"reference {ref!r}: expected 'path/to/file.py:Name' or 'package.module:Name'")
    target, _, attr = ref.rpartition(":")
    if not attr.isidentifier():
        raise UnknownOperatorError(f"reference {ref!r}: {attr!r} is not a Python name")
    if target.endswith(".py"):
        candidates = [Path(base_dir) / target] if base_dir is not None else []
        candidates.append(Path(target))
        path = next((p.resolve() for p in candidates if p.is_file()), None)
        if path is None:
            raise UnknownOperatorError(f"reference {ref!r}: file not found (looked at "
                                       f"{', '.join(str(c) for c in candidates)})")
        mod_name = _module_name_for(path)
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise UnknownOperatorError(f"reference {ref!r}: cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            module_source_sha256(module)  # the file as it is now, before it runs
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[mod_name]
                what = "an operator plugin" if kind == "operator" else f"a {kind} file"
                raise PluginError(f"{kind} {ref!r}: importing {path} failed: {type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())} ({what} is user code and runs as such)") from exc
            except BaseException:
                del sys.modules[mod_name]
                raise
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UnknownOperatorError(f"reference {ref!r}: cannot import module {target!r} ({exc})") from exc
    if not hasattr(module, attr):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise UnknownOperatorError(f"reference {ref!r}: {target} has no {attr!r}{did_you_mean(attr, public)}; it "
                                   f"defines {', '.join(public)}")
    return module, attr


def list_operators() -> list[str]:
    """Every operator name a spec string can use (reference strings aside), in the order the
    catalogue lists them: the baseline, every magnitude+angular pair, the paper's aliases, then
    registered and entry-point operators."""
    names = ["baseline"]
    names += [f"{m}+{a}" for m in MAGNITUDES for a in ANGULARS]
    names += sorted(PAPER_ALIASES)
    names += sorted(OPERATORS)
    names += sorted(n for n in entry_point_operators() if n not in OPERATORS)
    return names


def _decoupled(name: str, magnitude: Any, angular: Any, params: dict[str, Any]) -> OperatorSpec:
    unknown = sorted(set(params) - set(DECOUPLED_PARAMS) - {"bias"})
    if unknown:
        raise InvalidParameterError(f"operator {name!r}: unknown parameter(s) {unknown}; "
                         f"known: {', '.join(p for p in DECOUPLED_PARAMS if p not in ('magnitude', 'angular'))}")
    params = {**params, "magnitude": magnitude, "angular": angular}
    # Build one layer now so that a bad parameter fails here, naming the field.
    DecoupledLinear(2, 2, **params)
    return OperatorSpec(name, DecoupledConv2d, DecoupledLinear, params)


def _with_user_source(spec: OperatorSpec, *objs: Any) -> OperatorSpec:
    """``spec`` with the hash of the files of the modules outside this package that define ``objs``
    (functions registered by ``@register_magnitude`` / ``@register_angular``, a class registered by
    ``register_operator``), where it has none: a built-in operator's spec comes back as it is."""
    if spec.source_sha256 is not None:
        return spec
    digests = []
    for obj in objs:
        module = inspect.getmodule(obj) if obj is not None else None
        if module is None or module.__name__.partition(".")[0] == __name__.partition(".")[0]:
            continue
        digest = module_source_sha256(module)
        if digest is not None:
            digests.append(digest)
    if not digests:
        return spec
    return dataclasses.replace(spec, source_sha256=hashlib.sha256("".join(digests).encode()).hexdigest())


def _plugin(obj: Any, name: str, params: dict[str, Any], module: Any) -> OperatorSpec:
    """The operator of user code ``obj``, found in ``module`` (whose file's hash it records)."""
    spec = _from_object(obj, name, params, plugin=True)
    return dataclasses.replace(spec, source_sha256=module_source_sha256(module))


def _from_object(obj: Any, name: str, params: dict[str, Any], plugin: bool = False) -> OperatorSpec:
    if isinstance(obj, OperatorSpec):
        spec = obj.with_params(**params)
        return dataclasses.replace(spec, plugin=spec.plugin or plugin)
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        return OperatorSpec(name, obj, getattr(obj, "linear_counterpart", None), dict(params), plugin)
    if callable(obj) and hasattr(obj, "_rbdc_magnitude"):
        angular = params.pop("angular", "cos")
        return _decoupled(name, obj, angular, params)
    if callable(obj) and hasattr(obj, "_rbdc_angular"):
        magnitude = params.pop("magnitude", "tanh")
        return _decoupled(name, magnitude, obj, params)
    raise UnknownOperatorError(
        f"operator {name!r}: {obj!r} is neither an nn.Module class, an OperatorSpec, nor a function "
        "decorated with @register_magnitude / @register_angular")


def _operator_hint(key: str) -> str:
    """The "did you mean" of a misspelt operator: part by part for ``magnitude+angular``."""
    if "+" in key and ":" not in key:
        mag, _, ang = key.partition("+")
        mag = mag if mag in MAGNITUDES else (closest(mag, MAGNITUDES) or "")
        ang = ang if ang in ANGULARS else (closest(ang, ANGULARS) or "")
        return f" (did you mean '{mag}+{ang}'?)" if mag and ang else ""
    return did_you_mean(key, [*list_operators(), *PAPER_ALIASES])


def get_operator(spec: str | OperatorSpec | type[nn.Module], base_dir: str | Path | None = None,
                 **params: Any) -> OperatorSpec:
    """Resolve an operator spec (see the module docstring) with keyword parameters.

    Raises:
        UnknownOperatorError: the name is unknown; the message lists the known names.
        ValueError: a parameter is unknown or out of range (the message names it).
    """
    if not isinstance(spec, str):
        name = getattr(spec, "name", None) or getattr(spec, "__name__", repr(spec))
        return _from_object(spec, str(name), dict(params))
    text = spec.strip()
    key = text.lower()
    if key == "baseline":
        return OperatorSpec("baseline", _baseline_conv, _baseline_linear, dict(params))
    if key in PAPER_ALIASES:
        key = f"{PAPER_ALIASES[key]}+cos"
    if "+" in key and ":" not in key:
        mag, _, ang = key.partition("+")
        if mag in MAGNITUDES and ang in ANGULARS:
            return _with_user_source(_decoupled(key, mag, ang, dict(params)), MAGNITUDES[mag].fn, ANGULARS[ang].fn)
    if key in OPERATORS:
        spec = OPERATORS[key].with_params(**params)
        return _with_user_source(spec, spec.conv, spec.linear)
    eps_ = entry_point_operators()
    if key in eps_:
        try:
            loaded = eps_[key].load()
        except Exception as exc:  # noqa: BLE001 - user code
            raise PluginError(f"operator {key!r}: loading its entry point failed: {type(exc).__name__}: {exc}") from exc
        module = sys.modules.get(getattr(eps_[key], "module", "")) or inspect.getmodule(loaded)
        return _plugin(loaded, key, dict(params), module)
    if ":" in text:
        module, attr = _load_reference(text, base_dir)
        return _plugin(getattr(module, attr), text, dict(params), module)
    raise UnknownOperatorError(
        f"operator: unknown {spec!r}{_operator_hint(key)}; known: {', '.join(list_operators())} "
        "(or a reference 'path/to/file.py:Name' / 'package.module:Name')")
