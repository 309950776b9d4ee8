"""Figures of the suite (matplotlib, no pyplot): embeddings, eps curves, transfer heatmaps,
Lipschitz bars, training curves; and :func:`redraw_run` to redraw a run folder's figures.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure`; write it with
:func:`save_figure` (atomic PNG / SVG / PDF). Accuracies are passed as fractions in [0, 1]
and drawn in percent.
"""

from robustbench_dc.plots._common import CLASS_COLORS, OKABE_ITO, SUPPORTED_FORMATS, save_figure
from robustbench_dc.plots.figures import (
    plot_embedding_grid,
    plot_embeddings,
    plot_eps_curves,
    plot_lipschitz,
    plot_training_curves,
    plot_transfer_matrix,
)
from robustbench_dc.plots.run import load_run, redraw_run, run_figures

__all__ = [
    "CLASS_COLORS",
    "OKABE_ITO",
    "SUPPORTED_FORMATS",
    "save_figure",
    "plot_embeddings",
    "plot_embedding_grid",
    "plot_eps_curves",
    "plot_transfer_matrix",
    "plot_lipschitz",
    "plot_training_curves",
    "load_run",
    "redraw_run",
    "run_figures",
]
