"""Declarative layers: robust global pooling and Euclidean feature projections, solved exactly and
differentiated implicitly."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from robustbench_dc.declarative import PENALTIES, FeatureProjection, RobustGlobalPool2d, project, robust_pool

pytestmark = pytest.mark.usefixtures("one_thread")

D = torch.float64


@pytest.mark.parametrize("penalty", sorted(PENALTIES))
def test_robust_pool_gradients_match_finite_differences(penalty: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, dtype=D, requires_grad=True)
    c = torch.tensor(1.3, dtype=D, requires_grad=True)
    a = torch.tensor(1.4, dtype=D, requires_grad=True)
    assert gradcheck(lambda x, c, a: robust_pool(x, penalty, c, a, tol=1e-15, max_iter=5000), (x, c, a),
                     eps=1e-6, atol=1e-5)


def test_backward_is_implicit_not_unrolled() -> None:
    x = torch.randn(4, 5, 16, requires_grad=True)
    y = robust_pool(x, "welsch", 0.5)
    assert type(y.grad_fn).__name__ == "_RobustPoolBackward"  # one node, whatever the iterations


def test_quadratic_is_the_mean_and_huge_huber_too() -> None:
    x = torch.randn(3, 4, 25, dtype=D)
    torch.testing.assert_close(robust_pool(x, "quadratic"), x.mean(-1))
    torch.testing.assert_close(robust_pool(x, "huber", c=1e6), x.mean(-1))
    pool = RobustGlobalPool2d("quadratic")
    torch.testing.assert_close(pool(x.view(3, 4, 5, 5)), x.mean(-1))


@pytest.mark.parametrize("penalty", ["huber", "welsch", "pseudo-huber", "trunc-quad", "adaptive"])
def test_robust_penalties_ignore_twenty_percent_outliers(penalty: str) -> None:
    gen = torch.Generator().manual_seed(1)
    inliers = 0.1 * torch.randn(64, 80, generator=gen, dtype=D)
    outliers = 20.0 + torch.randn(64, 20, generator=gen, dtype=D)
    x = torch.cat([inliers, outliers], 1)[:, torch.randperm(100, generator=gen)]
    y = robust_pool(x, penalty, c=0.5, a=0.5)
    shift = (x.mean(-1) - inliers.mean(-1)).abs()
    assert shift.min() > 3.0  # the mean moves by ~4
    # bounded influence (Huber, pseudo-Huber) moves by at most ~c x outliers / inliers; redescending not at all
    limit = 0.05 if PENALTIES[penalty].convex else 0.01
    assert ((y - inliers.mean(-1)).abs() / shift).max() < limit, penalty


def test_learnable_scale_and_shape_stay_in_range_and_learn() -> None:
    pool = RobustGlobalPool2d("adaptive", c=0.7, a=1.5, learnable=True, channels=4)
    assert torch.allclose(pool.c, torch.full((4, 1), 0.7)) and torch.allclose(pool.a, torch.full((4, 1), 1.5))
    x = torch.randn(8, 4, 3, 3)
    pool(x).pow(2).sum().backward()
    assert pool.c_raw.grad is not None and pool.c_raw.grad.abs().sum() > 0
    assert pool.a_raw is not None and pool.a_raw.grad is not None and pool.a_raw.grad.abs().sum() > 0
    with torch.no_grad():
        pool.c_raw.fill_(-50.0)
        pool.a_raw.fill_(9.0)
    assert bool((pool.c > 0).all()) and bool((pool.a < 3).all())
    with pytest.raises(ValueError, match="penalty: unknown"):
        RobustGlobalPool2d("tukey")


# ----------------------------------------------------------------------------- projections
CASES = [(n, k) for n in ("l1", "l2", "linf") for k in ("sphere", "ball")]
P = {"l1": 1, "l2": 2, "linf": float("inf")}


@pytest.mark.parametrize("norm,kind", CASES)
def test_projection_gradients_match_finite_differences(norm: str, kind: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 6, dtype=D, requires_grad=True)
    r = torch.tensor(2.0 if kind == "sphere" else 1.5, dtype=D, requires_grad=True)
    assert gradcheck(lambda x, r: project(x, r, norm, kind), (x, r), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("norm,kind", CASES)
def test_projection_lands_on_the_set_and_is_idempotent(norm: str, kind: str) -> None:
    torch.manual_seed(1)
    x = torch.cat([3 * torch.randn(5, 7, dtype=D), 0.01 * torch.randn(5, 7, dtype=D)])  # outside and inside
    y = project(x, 1.0, norm, kind)
    norms = y.norm(p=P[norm], dim=1)
    if kind == "sphere":
        torch.testing.assert_close(norms, torch.ones_like(norms))
    else:
        assert bool((norms <= 1.0 + 1e-12).all())
        inside = x.norm(p=P[norm], dim=1) <= 1.0
        torch.testing.assert_close(y[inside], x[inside])  # an inactive ball is the identity
    torch.testing.assert_close(project(y, 1.0, norm, kind), y)
    # the projection is the closest point of the set: no random point of the set is closer
    cand = project(torch.randn(200, 7, dtype=D) * 2, 1.0, norm, kind)
    d_best = (cand[None] - x[:, None]).norm(dim=2).amin(1)
    assert bool(((y - x).norm(dim=1) <= d_best + 1e-9).all())


def test_l2_radius_gradient_is_the_unit_vector() -> None:
    x = torch.randn(4, 5, dtype=D)
    r = torch.tensor(3.0, dtype=D, requires_grad=True)
    for i in range(4):
        (g,) = torch.autograd.grad(project(x[i:i + 1], r, "l2", "sphere")[0, 2], r)
        torch.testing.assert_close(g, x[i, 2] / x[i].norm())


def test_learnable_radius_module() -> None:
    proj = FeatureProjection("l2", "sphere", radius=5.0, learnable=True)
    out = proj(torch.randn(6, 3, 2, 2))
    torch.testing.assert_close(out.norm(dim=1), torch.full((6,), 5.0))
    out.sum().backward()
    assert proj.r_raw.grad is not None
    with pytest.raises(ValueError, match="projection"):
        FeatureProjection("l3")


@pytest.mark.parametrize("penalty", sorted(PENALTIES))
def test_second_derivative_and_optimality_of_the_solution(penalty: str) -> None:
    from robustbench_dc.declarative import get_penalty, solve_robust_pool

    p = get_penalty(penalty)
    z = (torch.randn(200, dtype=D) * 2).requires_grad_(True)
    c, a = torch.tensor(1.3, dtype=D), torch.tensor(0.7, dtype=D)
    (auto,) = torch.autograd.grad(p.dphi(z, c, a).sum(), z)
    torch.testing.assert_close(p.d2phi(z.detach(), c, a), auto)
    x = torch.randn(5, 7, 30, dtype=D)
    stats: dict = {}
    y = solve_robust_pool(x, p, c, a, tol=1e-12, max_iter=200, stats=stats)
    grad = p.dphi(y - x, c, a).sum(-1)
    assert grad.abs().max() < 1e-8 and stats["iterations"] < 200
