"""Lipschitz analysis of (decoupled) networks: how decoupling changes local and global sensitivity.

Three kinds of numbers, never to be confused:

- empirical local estimates -- LOWER bounds of the true local Lipschitz constant: the largest
  input-gradient norm of the logit margin or of the logit map over the data and over eps-balls
  (:func:`gradient_norm_estimate`);
- the CLEVER score (Weng et al., ICLR 2018), an extreme-value extrapolation of the local constant
  turned into an estimate of the minimum adversarial distortion (:func:`clever_score`);
- exact per-layer operator norms of affine layers and, for plain chains of affine layers and
  Lipschitz activations only, their product as an UPPER bound (:func:`layer_operator_norms`,
  :func:`affine_product_bound`). Decoupled layers (Liu et al., CVPR 2018) divide by ``||x||`` and
  ``||w||``: they are not affine and no bound is computed for them or for networks containing them;
  residual networks get none either.

:func:`lipschitz_report` runs everything; the ``rbdc lipschitz`` command prints it.

Example::

    from robustbench_dc.lipschitz import lipschitz_report
    report = lipschitz_report(model, x, y, ball_eps={"l2": 0.5, "linf": 0.03}, n_batches=20, batch_size=64)
    json.dump(report.to_dict(), open("lipschitz.json", "w"))
"""

from robustbench_dc.lipschitz.chain import BoundResult, affine_product_bound
from robustbench_dc.lipschitz.clever import (
    CleverResult,
    TargetScore,
    WeibullFit,
    clever_score,
    clever_scores,
    fit_reverse_weibull,
)
from robustbench_dc.lipschitz.estimates import Estimate, gradient_norm_estimate, jacobian_norms, second_order_status
from robustbench_dc.lipschitz.opnorm import LayerNorm, layer_operator_norms, operator_norm
from robustbench_dc.lipschitz.report import CleverSummary, LipschitzReport, dataset_radii, lipschitz_report

__all__ = [
    "Estimate", "gradient_norm_estimate", "jacobian_norms", "second_order_status",
    "CleverResult", "TargetScore", "WeibullFit", "clever_score", "clever_scores", "fit_reverse_weibull",
    "BoundResult", "LayerNorm", "affine_product_bound", "layer_operator_norms", "operator_norm",
    "CleverSummary", "LipschitzReport", "dataset_radii", "lipschitz_report",
]
