"""The suite's figures, each returned as a :class:`matplotlib.figure.Figure`.

* :func:`plot_embeddings` / :func:`plot_embedding_grid` -- 2-D feature embeddings per operator
  (Decoupled Networks, Figs. 6-7 layout).
* :func:`plot_eps_curves` -- robust accuracy vs eps, one line per model (one figure per attack).
* :func:`plot_transfer_matrix` -- source x target heatmap of transfer-attack robust accuracy.
* :func:`plot_lipschitz` -- grouped bars of Lipschitz estimates.
* :func:`plot_training_curves` -- loss and accuracy per epoch.

Accuracies are given as fractions in [0, 1] and drawn in percent. Colours are colour-blind-safe
(Okabe-Ito for models, Tableau-10 for classes); natural vs adversarial training is shown by line
style (solid vs dashed) or bar hatching, so it never relies on colour alone.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence, cast

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from robustbench_dc.plots._common import (
    ADVERSARIAL,
    CLASS_COLORS,
    MARKERS,
    eps_axis_label,
    linestyle_for,
    model_colors,
    new_figure,
    pretty_kind,
    styled,
    to_float,
    training_kind,
)

__all__ = [
    "plot_embeddings",
    "plot_embedding_grid",
    "plot_eps_curves",
    "plot_transfer_matrix",
    "plot_lipschitz",
    "plot_training_curves",
    "class_color",
    "EMBEDDING_XLABEL",
    "EMBEDDING_YLABEL",
    "ROBUST_ACC_LABEL",
]

log = logging.getLogger(__name__)

EMBEDDING_XLABEL = "feature 1 (a.u.)"
EMBEDDING_YLABEL = "feature 2 (a.u.)"
ROBUST_ACC_LABEL = "robust accuracy (%)"
_STYLE_NOTE = "solid: natural, dashed: adversarial training"


# ----------------------------------------------------------------------------- embeddings


def class_color(cls: int, classes: Sequence[int]) -> str | tuple[float, float, float, float]:
    """Colour of class ``cls``: Tableau-10 by class index for labels 0-9, else by rank."""
    if all(0 <= int(c) < len(CLASS_COLORS) for c in classes):
        return CLASS_COLORS[int(cls)]
    rank = list(classes).index(cls)
    if len(classes) <= len(CLASS_COLORS):
        return CLASS_COLORS[rank]
    return colormaps["tab20"](rank % 20)


def _check_panel(panel: Mapping[str, Any], i: int) -> tuple[str, np.ndarray, np.ndarray, float | None]:
    label = str(panel.get("label", f"panel {i + 1}"))
    feats = np.asarray(panel.get("features", np.zeros((0, 2))), dtype=float)
    labels = np.asarray(panel.get("labels", np.zeros((0,))))
    if feats.ndim != 2 or feats.shape[1] != 2:
        raise ValueError(f"embedding panel {label!r}: features must have shape (N, 2), got {feats.shape}")
    if labels.shape != (feats.shape[0],):
        raise ValueError(f"embedding panel {label!r}: labels must have shape ({feats.shape[0]},), got {labels.shape}")
    acc = panel.get("accuracy")
    acc = None if acc is None or not math.isfinite(to_float(acc)) else float(acc)
    return label, feats, labels.astype(int), acc


def _half_range(feats: np.ndarray) -> float:
    finite = feats[np.isfinite(feats).all(axis=1)] if feats.size else feats
    m = float(np.abs(finite).max()) if finite.size else 0.0
    return 1.05 * m if m > 0 else 1.0


def _classes_of(checked: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]],
                class_names: Sequence[str] | None) -> list[int]:
    if class_names is not None:
        return list(range(len(class_names)))
    present = sorted({int(c) for _, _, lab, _ in checked for c in np.unique(lab)})
    if present and all(0 <= c < 10 for c in present):
        return list(range(10))  # digits / 10-class data sets: always the full 0-9 legend
    return present


def _panel_title(label: str, acc: float | None) -> str:
    return label if acc is None else f"{label} (test acc {100 * acc:.1f}%)"


def _draw_embedding(ax: Axes, label: str, feats: np.ndarray, labels: np.ndarray, acc: float | None,
                    lim: float, classes: Sequence[int], shared: bool, point_size: float | None,
                    annotate_classes: bool, ylabel: str = EMBEDDING_YLABEL) -> None:
    n = feats.shape[0]
    lut = {c: to_rgba(class_color(c, classes), 0.75) for c in classes}
    for c in np.unique(labels):
        if int(c) not in lut:  # a label outside class_names: grey
            lut[int(c)] = to_rgba("#7f7f7f", 0.75)
    colors = np.array([lut[int(c)] for c in labels]).reshape(n, 4)
    size = point_size if point_size is not None else float(np.clip(4000.0 / max(n, 1), 1.5, 12.0))
    ax.axhline(0.0, color="0.85", linewidth=0.6, zorder=0)
    ax.axvline(0.0, color="0.85", linewidth=0.6, zorder=0)
    ax.scatter(feats[:, 0], feats[:, 1], c=colors, s=size, linewidths=0, rasterized=n > 5000, zorder=2)
    if annotate_classes and n:
        for c in np.unique(labels):
            pts = feats[labels == c]
            pts = pts[np.isfinite(pts).all(axis=1)]
            if len(pts):
                cx, cy = np.median(pts, axis=0)
                ax.text(cx, cy, str(int(c)), ha="center", va="center", fontsize=8, fontweight="bold",
                        color="black", zorder=3,
                        path_effects=[patheffects.withStroke(linewidth=2.0, foreground="white")])
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal", adjustable="box")
    scale = "shared range" if shared else "per-panel range"
    ax.set_title(f"{_panel_title(label, acc)}\n{scale} \u00b1{lim:.3g}, N = {n}")
    ax.set_xlabel(EMBEDDING_XLABEL)
    ax.set_ylabel(ylabel)


def _class_legend(fig: Figure, classes: Sequence[int], class_names: Sequence[str] | None) -> None:
    handles = [Line2D([], [], marker="o", linestyle="", markersize=6, markeredgewidth=0,
                      color=class_color(c, classes)) for c in classes]
    names = [class_names[c] if class_names is not None else str(c) for c in classes]
    title = "class" if class_names is not None or any(c >= 10 for c in classes) else "digit"
    fig.legend(handles, names, loc="outside right upper", title=title, frameon=False)


def _convention(shared: bool) -> str:
    return "axes symmetric about 0, equal aspect, " + ("shared limits" if shared else "per-panel limits")


@styled
def plot_embeddings(panels: Sequence[Mapping[str, Any]], title: str = "2-D feature embeddings", *,
                    class_names: Sequence[str] | None = None, shared_limits: bool = False,
                    ncols: int | None = None, point_size: float | None = None,
                    annotate_classes: bool = True) -> Figure:
    """2-D test features, one panel per operator (in the given order), coloured by class.

    Each panel is ``{"label": str, "features": (N, 2), "labels": (N,) ints, "accuracy": float?}``.
    Every panel's axes are symmetric about 0 with equal aspect; limits are per panel (bounded
    decoupled operators have far smaller feature ranges than the baseline) unless
    ``shared_limits``; the half-range R is written in each panel. One figure legend lists the
    classes (0-9 for 10-class data) and class medians are labelled with the class index.
    """
    if not panels:
        raise ValueError("plot_embeddings: no panels given")
    checked = [_check_panel(p, i) for i, p in enumerate(panels)]
    classes = _classes_of(checked, class_names)
    ncols = max(1, min(ncols or min(len(checked), 4), len(checked)))
    nrows = math.ceil(len(checked) / ncols)
    fig = new_figure(max(6.0, 3.0 * ncols + 0.9), 3.1 * nrows + 0.6)
    shared_lim = max(_half_range(f) for _, f, _, _ in checked)
    for i, (label, feats, labels, acc) in enumerate(checked):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        lim = shared_lim if shared_limits else _half_range(feats)
        _draw_embedding(ax, label, feats, labels, acc, lim, classes, shared_limits, point_size, annotate_classes)
    _class_legend(fig, classes, class_names)
    fig.suptitle(f"{title}\n({_convention(shared_limits)})")
    return fig


@styled
def plot_embedding_grid(natural: Sequence[Mapping[str, Any]], adversarial: Sequence[Mapping[str, Any]],
                        title: str = "2-D feature embeddings \u2014 natural (top) vs adversarial (bottom) training",
                        *, class_names: Sequence[str] | None = None, shared_limits: bool = False,
                        row_labels: tuple[str, str] = ("natural training", "adversarial training"),
                        point_size: float | None = None, annotate_classes: bool = True) -> Figure:
    """Two rows (natural / adversarial training), one column per operator label.

    Columns follow the first appearance of each panel ``label`` (natural first); a panel missing
    from one row is drawn as an empty "not available" cell. Scale conventions as in
    :func:`plot_embeddings` (``shared_limits`` shares one range across the whole grid).
    """
    rows = [[_check_panel(p, i) for i, p in enumerate(natural)],
            [_check_panel(p, i) for i, p in enumerate(adversarial)]]
    columns: list[str] = []
    for row in rows:
        for label, *_ in row:
            if label not in columns:
                columns.append(label)
    if not columns:
        raise ValueError("plot_embedding_grid: no panels given")
    classes = _classes_of(rows[0] + rows[1], class_names)
    fig = new_figure(max(6.5, 3.0 * len(columns) + 1.2), 6.6)
    shared_lim = max(_half_range(f) for row in rows for _, f, _, _ in row)
    for r, row in enumerate(rows):
        by_label = {p[0]: p for p in row}
        for c, col in enumerate(columns):
            ax = fig.add_subplot(2, len(columns), r * len(columns) + c + 1)
            ylabel = f"{row_labels[r]}\n{EMBEDDING_YLABEL}" if c == 0 else EMBEDDING_YLABEL
            if col not in by_label:
                ax.set_xlim(-1, 1)
                ax.set_ylim(-1, 1)
                ax.set_aspect("equal", adjustable="box")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(0, 0, "not available", ha="center", va="center", color="0.5")
                ax.set_title(f"{col} (no {row_labels[r]})")
                ax.set_xlabel(EMBEDDING_XLABEL)
                ax.set_ylabel(ylabel)
                continue
            label, feats, labels, acc = by_label[col]
            lim = shared_lim if shared_limits else _half_range(feats)
            _draw_embedding(ax, label, feats, labels, acc, lim, classes, shared_limits, point_size,
                            annotate_classes, ylabel=ylabel)
    _class_legend(fig, classes, class_names)
    fig.suptitle(f"{title}\n({_convention(shared_limits)})")
    return fig


# ----------------------------------------------------------------------------- eps curves


def _trainings(names: Sequence[str], explicit: Mapping[str, str | None] | None,
               per_item: Mapping[str, Any] | None = None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        value = (explicit or {}).get(n)
        if value is None and per_item is not None and isinstance(per_item.get(n), Mapping):
            value = per_item[n].get("training")
        out[n] = training_kind(n, value)
    return out


@styled
def plot_eps_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], attack: str = "", *,
                    norm: str | None = None, title: str | None = None,
                    colors: Mapping[str, str] | None = None,
                    trainings: Mapping[str, str | None] | None = None, markers: bool = True) -> Figure:
    """Robust accuracy (%) vs eps for one attack, one line per model (``markers=False``: lines only, for
    dense curves).

    ``curves`` maps a model name to ``{"eps": [...], "robust_accuracy": [...]}`` (fractions in
    [0, 1]; an optional ``"training"`` key or ``trainings[name]`` selects solid (natural) or
    dashed (adversarial) lines, else the name is inspected). Points are sorted by eps. ``norm``
    (``"linf"``/``"l2"``; else guessed from the attack label) sets the x-axis label.
    """
    names = list(curves)
    cols = model_colors(names, colors)
    kinds = _trainings(names, trainings, curves)
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    xmax = 0.0
    for i, name in enumerate(names):
        c = curves[name]
        eps = np.array([to_float(e) for e in c.get("eps", [])], dtype=float)
        acc = np.array([to_float(a) for a in c.get("robust_accuracy", [])], dtype=float)
        if eps.shape != acc.shape:
            raise ValueError(f"eps curve {name!r}: {eps.size} eps values but {acc.size} accuracies")
        order = np.argsort(eps, kind="stable")
        eps, acc = eps[order], 100.0 * acc[order]
        if eps.size and np.isfinite(eps).any():
            xmax = max(xmax, float(np.nanmax(eps)))
        ax.plot(eps, acc, color=cols[name], linestyle=linestyle_for(kinds[name]),
                marker=MARKERS[i % len(MARKERS)] if markers else None, markersize=4, linewidth=1.6, label=name)
    ax.set_xlim(0.0, xmax * 1.03 if xmax > 0 else 1.0)
    ax.set_ylim(-2.0, 102.0)
    ax.grid(True, color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel(eps_axis_label(attack, norm))
    ax.set_ylabel(ROBUST_ACC_LABEL)
    ax.set_title(title or (f"Robust accuracy vs eps \u2014 {attack}" if attack else "Robust accuracy vs eps"))
    if names:
        styles = {k for k in kinds.values()}
        ax.legend(title=_STYLE_NOTE if ADVERSARIAL in styles else None, loc="upper right", frameon=True,
                  framealpha=0.9)
    return fig


# ----------------------------------------------------------------------------- transfer heatmap


@styled
def plot_transfer_matrix(matrix: Mapping[str, Mapping[str, float | None]], attack: str = "", *,
                         sources: Sequence[str] | None = None, targets: Sequence[str] | None = None,
                         title: str | None = None, cmap: str = "cividis", decimals: int = 1) -> Figure:
    """Heatmap of transfer robust accuracy (%): rows = source (crafted on), columns = target.

    ``matrix[source][target]`` is a fraction in [0, 1] (None/missing -> "n/a"). Cells where
    source == target (white-box) are outlined. The image data is the matrix in percent.
    """
    sources = list(sources) if sources is not None else list(matrix)
    if targets is None:
        targets = []
        for s in sources:
            for t in matrix.get(s, {}):
                if t not in targets:
                    targets.append(t)
    targets = list(targets)
    data = np.full((len(sources), len(targets)), np.nan)
    for i, s in enumerate(sources):
        for j, t in enumerate(targets):
            data[i, j] = 100.0 * to_float(matrix.get(s, {}).get(t))
    fig = new_figure(max(4.2, 1.05 * len(targets) + 3.0), max(3.2, 0.62 * len(sources) + 2.2))
    ax = fig.add_subplot()
    cm = colormaps[cmap]
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cm, vmin=0.0, vmax=100.0, aspect="auto",
                   interpolation="nearest")
    for i in range(len(sources)):
        for j in range(len(targets)):
            v = data[i, j]
            if math.isfinite(v):
                r, g, b, _ = cm(v / 100.0)
                color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, f"{v:.{decimals}f}", ha="center", va="center", fontsize=8, color=color)
            else:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="0.4")
            if sources[i] == targets[j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.8))
    ax.set_xticks(range(len(targets)), labels=targets, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(sources)), labels=sources)
    ax.set_xlabel("target model (evaluated on)")
    ax.set_ylabel("source model (crafted on)")
    base = title or (f"Transfer-attack robust accuracy (%) \u2014 {attack}" if attack
                     else "Transfer-attack robust accuracy (%)")
    if title is None and set(sources) & set(targets):
        base += "\n(outlined: source = target, i.e. white-box)"
    ax.set_title(base)
    fig.colorbar(im, ax=ax, label=ROBUST_ACC_LABEL, shrink=0.9)
    return fig


# ----------------------------------------------------------------------------- Lipschitz


@styled
def plot_lipschitz(estimates: Mapping[str, Mapping[str, float | None]], *, log_scale: bool | None = False,
                   title: str = "Local Lipschitz estimates per model", colors: Mapping[str, str] | None = None,
                   trainings: Mapping[str, str | None] | None = None, kinds: Sequence[str] | None = None) -> Figure:
    """Grouped bar chart: one group per estimate kind, one bar per model within each group.

    ``estimates[model][kind]`` is a value (None/missing -> no bar, a NaN-height placeholder is
    still created so every group has one bar per model). ``log_scale=None`` picks a log axis when
    the positive values span more than two decades. Adversarially trained models get hatched bars.
    """
    models = list(estimates)
    if kinds is None:
        kinds = []
        for m in models:
            for k in estimates[m]:
                if k not in kinds:
                    kinds.append(k)
    kinds = list(kinds)
    values = np.array([[to_float(estimates[m].get(k)) for k in kinds] for m in models], dtype=float)
    values = values.reshape(len(models), len(kinds))
    positive = values[np.isfinite(values) & (values > 0)]
    if log_scale is None:
        log_scale = bool(positive.size >= 2 and positive.max() / positive.min() > 100.0)
    if log_scale:
        bad = np.isfinite(values) & (values <= 0)
        if bad.any():
            log.warning("plot_lipschitz: %d non-positive value(s) left out of the log-scale chart", int(bad.sum()))
            values = np.where(bad, np.nan, values)
    cols = model_colors(models, colors)
    tr = _trainings(models, trainings)
    fig = new_figure(max(5.0, 1.1 * len(kinds) * max(1, len(models)) * 0.45 + 2.8), 4.4)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    x = np.arange(len(kinds), dtype=float)
    for j, m in enumerate(models):
        pos = x - 0.4 + width * (j + 0.5)
        bars = ax.bar(pos, values[j], width * 0.95, color=cols[m], label=m, edgecolor="black", linewidth=0.4,
                      hatch="//" if tr[m] == ADVERSARIAL else None)
        ax.bar_label(bars, labels=[f"{v:.3g}" if math.isfinite(v) else "" for v in values[j]], fontsize=6.5,
                     padding=1.5)
    ax.set_xticks(x, labels=[pretty_kind(k) for k in kinds])
    if log_scale:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0.0, (np.nanmax(values) * 1.15) if positive.size else 1.0)
    ax.grid(True, axis="y", color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel("estimate kind")
    ax.set_ylabel("Lipschitz constant, estimate (lower bound)" + (" [log scale]" if log_scale else ""))
    ax.set_title(title)
    if models:
        ax.legend(title="hatched: adversarial training" if ADVERSARIAL in tr.values() else None,
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


# ----------------------------------------------------------------------------- training curves


def _history_of(value: Any) -> tuple[list[Mapping[str, Any]], str | None]:
    if isinstance(value, Mapping):
        return list(value.get("history", [])), value.get("training")
    return list(value or []), None


@styled
def plot_training_curves(histories: Mapping[str, Any], *, trainings: Mapping[str, str | None] | None = None,
                         colors: Mapping[str, str] | None = None, title: str = "Training curves") -> Figure:
    """Loss and accuracy (%) per epoch; one colour per model, solid natural / dashed adversarial.

    ``histories[name]`` is a list of ``{"epoch", "loss", "train_accuracy", "eval_accuracy"?}``
    dicts (or ``{"history": [...], "training": ...}``). The training kind comes from
    ``trainings[name]``, a ``"training"`` key (in the mapping or in the entries), or the name.
    Axes: training loss, training accuracy, and held-out accuracy when any ``eval_accuracy`` is given.
    """
    names = list(histories)
    parsed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    kinds: dict[str, str | None] = {}
    for name in names:
        hist, explicit = _history_of(histories[name])
        if explicit is None and trainings and trainings.get(name) is not None:
            explicit = trainings[name]
        if explicit is None:
            explicit = next((h.get("training") for h in hist if h.get("training")), None)
        kinds[name] = training_kind(name, explicit)
        epochs = np.array([to_float(h.get("epoch", i + 1)) for i, h in enumerate(hist)], dtype=float)
        parsed[name] = (epochs,
                        np.array([to_float(h.get("loss")) for h in hist], dtype=float),
                        100.0 * np.array([to_float(h.get("train_accuracy")) for h in hist], dtype=float),
                        100.0 * np.array([to_float(h.get("eval_accuracy")) for h in hist], dtype=float))
    has_eval = any(np.isfinite(p[3]).any() for p in parsed.values())
    n_axes = 3 if has_eval else 2
    fig = new_figure(3.6 * n_axes + 1.6, 3.8)
    axes = [fig.add_subplot(1, n_axes, k + 1) for k in range(n_axes)]
    cols = model_colors(names, colors)
    for name in names:
        epochs, loss, tracc, evacc = parsed[name]
        style: dict[str, Any] = dict(color=cols[name], linestyle=linestyle_for(kinds[name]), linewidth=1.6,
                                     marker="o", markersize=3, label=name)
        axes[0].plot(epochs, loss, **style)
        axes[1].plot(epochs, tracc, **style)
        if has_eval:
            axes[2].plot(epochs, evacc, **style)
    titles = ["Training loss", "Training accuracy", "Held-out accuracy"]
    ylabels = ["loss (cross-entropy, as optimised)", "train accuracy (%)", "eval accuracy (%)"]
    for k, ax in enumerate(axes):
        ax.set_title(titles[k])
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabels[k])
        ax.grid(True, color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        if k > 0:
            ax.set_ylim(-2.0, 102.0)
        cast(MaxNLocator, ax.xaxis.get_major_locator()).set_params(integer=True)  # the default AutoLocator
    if names:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", frameon=False,
                   title=_STYLE_NOTE.replace(", ", "\n") if ADVERSARIAL in kinds.values() else None)
    fig.suptitle(title)
    return fig
