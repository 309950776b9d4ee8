"""Shared plotting helpers: palettes, labels, figure creation and atomic saving.

Figures are built as :class:`matplotlib.figure.Figure` objects directly (never through
``pyplot``), so no global backend or figure-manager state is touched; ``Figure.savefig``
renders PNG with Agg and SVG with the SVG backend.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import matplotlib
from matplotlib.figure import Figure

from robustbench_dc._atomic import atomic_write
from robustbench_dc.errors import InvalidParameterError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "OKABE_ITO", "CLASS_COLORS", "MARKERS", "SUPPORTED_FORMATS", "styled", "new_figure", "save_figure",
    "model_colors", "training_kind", "linestyle_for", "safe_filename", "eps_axis_label",
    "to_float", "pretty_kind",
]

# Okabe & Ito (2008) colour-blind-safe palette, ordered for contrast on white (yellow last).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)

# Tableau-10 (matplotlib "tab10"), colour-blind-friendlier than the old default cycles; one per class.
CLASS_COLORS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)

MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")

SUPPORTED_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")

_RC: Any = {  # matplotlib rc settings (its stubs type the keys as one Literal)
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "axes.grid": False,
    "svg.fonttype": "none",      # keep text as text in SVG (searchable, small)
    "svg.hashsalt": "robustbench-dc",  # deterministic SVG ids -> byte-stable redraws
}

NATURAL = "natural"
ADVERSARIAL = "adversarial"


def styled(func: F) -> F:
    """Run a plotting function under the suite's rc settings (fonts, SVG options)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(_RC):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout :class:`Figure` not registered with pyplot (no global state)."""
    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def save_figure(fig: Figure, path_without_suffix: str | os.PathLike[str],
                formats: Sequence[str] = ("png", "svg"), *, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<path>.<fmt>`` for each format, atomically (temp file + ``os.replace``).

    ``path_without_suffix`` is used verbatim as the stem (dots in it are kept, no suffix is
    stripped). Parent folders are created. Returns the written paths in ``formats`` order.
    """
    if isinstance(formats, str):
        formats = (formats,)
    fmts: list[str] = []
    for f in formats:
        f = str(f).lower().lstrip(".")
        if f not in SUPPORTED_FORMATS:
            raise InvalidParameterError(f"unsupported figure format {f!r}; choose from {', '.join(SUPPORTED_FORMATS)}")
        if f not in fmts:
            fmts.append(f)
    if not fmts:
        raise ValueError("no figure format given")
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fmt in fmts:
        target = base.parent / f"{base.name}.{fmt}"
        with atomic_write(target) as fh, matplotlib.rc_context(_RC):
            metadata: dict[str, Any] = {"Date": None} if fmt in ("svg", "pdf") else {}
            fig.savefig(fh, format=fmt, dpi=dpi, metadata=metadata or None)
        log.debug("wrote %s", target)
        written.append(target)
    return written


def model_colors(names: Iterable[str], colors: Mapping[str, str] | None = None) -> dict[str, str]:
    """Colour per name: ``colors`` where given, else the Okabe-Ito palette in order."""
    out: dict[str, str] = {}
    i = 0
    for n in names:
        if colors and n in colors:
            out[n] = colors[n]
        else:
            out[n] = OKABE_ITO[i % len(OKABE_ITO)]
            i += 1
    return out


_ADV_TOKENS = {"adv", "adversarial", "at", "pgd", "pgdat", "madry", "trades", "fgsm", "fgsmrs", "robust"}
_NAT_TOKENS = {"nat", "natural", "clean", "std", "standard"}


def _kind_from_tokens(text: str) -> str | None:
    tokens = [t for t in re.split(r"[^a-z0-9]+", str(text).lower()) if t]
    if any(t in _ADV_TOKENS or t.startswith("adv") for t in tokens):
        return ADVERSARIAL
    if any(t in _NAT_TOKENS or t.startswith("nat") for t in tokens):
        return NATURAL
    return None


def training_kind(name: str, explicit: str | None = None) -> str | None:
    """``"natural"`` / ``"adversarial"`` from an explicit value (e.g. ``"adversarial"``,
    ``"pgd-at"``, ``"natural"``) or else from the model name's tokens; None when unknown."""
    if explicit:
        return _kind_from_tokens(str(explicit)) or str(explicit).lower()
    return _kind_from_tokens(name)


def linestyle_for(kind: str | None) -> str:
    """Solid for natural (or unknown) training, dashed for adversarial."""
    return "--" if kind == ADVERSARIAL else "-"


def safe_filename(text: str) -> str:
    """A file-name-safe version of an attack label (keeps letters, digits, ``._-``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return s or "unnamed"


def eps_axis_label(attack: str | None = None, norm: str | None = None) -> str:
    """x-axis label stating the threat model and the pixel scale."""
    n = (norm or "").lower()
    if not n and attack:
        tokens = re.split(r"[^a-z0-9]+", attack.lower())
        n = "l2" if "l2" in tokens else "linf" if ("linf" in tokens or "inf" in tokens) else ""
    if n == "l2":
        return "eps (L2 norm, pixel units in [0, 1])"
    if n in ("linf", "inf", "l-inf"):
        return "eps (L-inf, pixel units in [0, 1])"
    return "eps (pixel units in [0, 1])"


def to_float(v: Any) -> float:
    """float(v), with None / unparsable values as NaN."""
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def pretty_kind(kind: str) -> str:
    """``"grad-norm-l2"`` -> ``"grad-norm L2"``, ``"clever-linf"`` -> ``"CLEVER L-inf"``."""
    s = str(kind)
    s = re.sub(r"(?i)[-_ ]l2$", " L2", s)
    s = re.sub(r"(?i)[-_ ]l-?inf$", " L-inf", s)
    s = re.sub(r"(?i)^clever", "CLEVER", s)
    return s
