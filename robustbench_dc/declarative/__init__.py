"""Declarative layers of the same line of work as decoupled convolution (Gould et al., "Deep
Declarative Networks"): robust global pooling (:mod:`.pooling`, penalties in :mod:`.penalties`)
and Euclidean feature projections (:mod:`.projections`), each solved exactly in the forward pass
and differentiated implicitly in the backward pass."""

from __future__ import annotations

from robustbench_dc.declarative.penalties import PENALTIES, Penalty, get_penalty
from robustbench_dc.declarative.pooling import RobustGlobalPool2d, robust_pool, solve_robust_pool
from robustbench_dc.declarative.projections import NORMS, SETS, FeatureProjection, project

__all__ = ["PENALTIES", "Penalty", "get_penalty", "RobustGlobalPool2d", "robust_pool", "solve_robust_pool",
           "FeatureProjection", "project", "NORMS", "SETS"]
