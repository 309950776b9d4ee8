"""Constraint checker run on every adversarial batch before it is scored.

An adversarial input is *valid* for a threat model ``p`` in {linf, l2} and budget
``eps`` when, per example,

1. every value is finite (no NaN / inf),
2. every value is inside the image box [0, 1],
3. ``||x_adv - x_clean||_p <= eps + atol``.

A violation raises :class:`ConstraintViolation` naming the check, how many
examples violate it and the worst value; nothing is clipped or scored silently.

Example::

    >>> check_adversarial(x_adv, x, eps=8 / 255, threat_model="linf")  # raises or returns None
    >>> norms = perturbation_norms(x_adv, x, "linf")                   # shape (N,)
"""

from __future__ import annotations

import torch

__all__ = ["ConstraintViolation", "check_adversarial", "perturbation_norms", "valid_rows"]


class ConstraintViolation(ValueError):
    """An adversarial batch violates its threat model.

    Attributes:
        check (str): ``"shape"``, ``"finite"``, ``"range"`` or ``"budget"``.
        n_violations (int): number of offending examples.
        n_total (int): batch size.
        worst (float): the worst offending value (for ``"finite"``: the number of
            non-finite entries; ``"range"``: the farthest value outside [0, 1];
            ``"budget"``: the largest perturbation norm).
        limit (float | None): the limit that was exceeded (eps + atol for ``"budget"``).
        indices (list[int]): up to 10 offending example indices.
    """

    def __init__(
        self,
        check: str,
        n_violations: int,
        n_total: int,
        worst: float,
        limit: float | None,
        indices: list[int],
        detail: str,
    ) -> None:
        self.check = check
        self.n_violations = n_violations
        self.n_total = n_total
        self.worst = worst
        self.limit = limit
        self.indices = indices
        super().__init__(
            f"adversarial batch fails the {check!r} check on {n_violations}/{n_total} "
            f"examples (first indices {indices}): {detail}"
        )


def perturbation_norms(x_adv: torch.Tensor, x_clean: torch.Tensor, threat_model: str) -> torch.Tensor:
    """Per-example perturbation norm, shape (N,), in the threat model's norm.

    Args:
        x_adv (Tensor): (N, ...) adversarial inputs.
        x_clean (Tensor): (N, ...) clean inputs.
        threat_model (str): ``"linf"`` or ``"l2"``.
    """
    d = (x_adv - x_clean).flatten(1)
    if threat_model == "linf":
        return d.abs().amax(dim=1) if d.shape[1] else d.new_zeros(d.shape[0])
    if threat_model == "l2":
        return d.norm(p=2, dim=1)
    raise ValueError(f"threat_model: must be 'linf' or 'l2', got {threat_model!r}")


def valid_rows(x_adv: torch.Tensor, x_clean: torch.Tensor, eps: float, threat_model: str,
               atol: float = 1e-6) -> torch.Tensor:
    """Bool (N,): the rows of ``x_adv`` that pass :func:`check_adversarial` (finite, in [0, 1],
    within ``eps + atol`` of the same row of ``x_clean``). Never raises on a violation."""
    xa = x_adv.detach().flatten(1)
    xc = x_clean.detach().to(xa.device, xa.dtype).flatten(1)
    ok = torch.isfinite(xa).all(dim=1) & (xa >= 0).all(dim=1) & (xa <= 1).all(dim=1)
    norms = perturbation_norms(torch.nan_to_num(xa), xc, threat_model)
    return ok & (norms.double() <= eps + atol)


def _first(mask: torch.Tensor, k: int = 10) -> list[int]:
    return mask.nonzero().flatten()[:k].tolist()


def check_adversarial(
    x_adv: torch.Tensor,
    x_clean: torch.Tensor,
    eps: float | torch.Tensor,
    threat_model: str,
    atol: float = 1e-6,
) -> None:
    """Raise :class:`ConstraintViolation` unless ``x_adv`` is a valid adversarial batch.

    Args:
        x_adv (Tensor): (N, ...) adversarial inputs.
        x_clean (Tensor): (N, ...) clean inputs, same shape.
        eps (float | Tensor): budget, a float or a per-example tensor of shape (N,).
        threat_model (str): ``"linf"`` or ``"l2"``.
        atol (float): tolerance on the budget only (float rounding). Default 1e-6;
            raised to 4 ulps of 1.0 for low-precision dtypes (float16/bfloat16), where
            ``x + eps`` cannot be represented more finely. The [0, 1] box is checked exactly.

    Example::

        >>> check_adversarial(x + 8 / 255 * torch.sign(g), x, 8 / 255, "linf")
    """
    n = x_adv.shape[0] if x_adv.dim() else 1
    if x_adv.shape != x_clean.shape:
        raise ConstraintViolation(
            "shape", n, n, float("nan"), None, [],
            f"x_adv has shape {tuple(x_adv.shape)}, clean input {tuple(x_clean.shape)}",
        )
    if not x_adv.is_floating_point():
        raise ConstraintViolation("shape", n, n, float("nan"), None, [], f"x_adv has dtype {x_adv.dtype}")
    if n == 0:
        return
    xa = x_adv.detach().flatten(1)
    xc = x_clean.detach().to(xa.device, xa.dtype).flatten(1)

    nonfinite = ~torch.isfinite(xa)
    bad = nonfinite.any(dim=1)
    if bool(bad.any()):
        cnt = int(nonfinite.sum())
        raise ConstraintViolation(
            "finite", int(bad.sum()), n, float(cnt), None, _first(bad),
            f"{cnt} non-finite values (NaN/inf)",
        )

    below = (-xa).clamp_min(0).amax(dim=1)
    above = (xa - 1).clamp_min(0).amax(dim=1)
    out = torch.maximum(below, above)
    bad = out > 0
    if bool(bad.any()):
        lo, hi = float(xa.min()), float(xa.max())
        worst = lo if (-lo) > (hi - 1) else hi
        raise ConstraintViolation(
            "range", int(bad.sum()), n, worst, None, _first(bad),
            f"values outside [0, 1] (min {lo:.6g}, max {hi:.6g})",
        )

    norms = perturbation_norms(xa, xc, threat_model)
    eps_t = torch.as_tensor(eps, dtype=torch.float64, device=norms.device)
    if eps_t.dim() == 0:
        eps_t = eps_t.expand(n)
    atol = max(atol, 4 * torch.finfo(x_adv.dtype).eps) if torch.finfo(x_adv.dtype).bits < 32 else atol
    limit = eps_t + atol
    bad = norms.double() > limit
    if bool(bad.any()):
        excess = norms.double() - eps_t
        i = int(excess.argmax())
        raise ConstraintViolation(
            "budget", int(bad.sum()), n, float(norms[i]), float(limit[i]), _first(bad),
            f"{threat_model} perturbation norm up to {float(norms[i]):.6g} > eps "
            f"{float(eps_t[i]):.6g} + atol {atol:g}",
        )
