"""Guards against known problems of the third-party backends (torchattacks 3.5.1, foolbox 3.3.4).

Each guard is checked against the installed code by a test in ``tests/test_autoattack.py`` that
fails without it:

* **Last iterate instead of the best** (foolbox's ``LinfPGD`` / ``L2PGD`` and other fixed-budget
  attacks return their final iterate, with no per-example best-iterate tracking): the backend
  sees the model through a :class:`SuccessRecorder`, which keeps, per example, the first input
  it was queried on that is valid (finite, in [0, 1], within the budget of that example) and
  misclassified (or classified as the target). Where the returned point is not adversarial but
  such an input was seen, the recorded one is returned: a success found earlier is never lost.
* **Model flags** (torchattacks calls ``model.train()`` at the end of an attack on a model that
  was in training mode, which turns every submodule, frozen BatchNorm included, to training
  mode): :func:`preserved_flags` restores each submodule's ``training`` flag and each
  parameter's ``requires_grad`` after the backend ran, and the model is in eval mode during the
  attack.
* ``n_classes`` (torchattacks' default 10) and the number of target classes of APGD-T / FAB
  (torchattacks: ``n_classes - 1``; AutoAttack: 9) are set from the model's output by
  :func:`~robustbench_dc.attacks.backends.run_torchattacks`.
* torchattacks' ``CW`` (its margin takes ``max(one_hot * logits)`` as the true-class logit and
  ``max((1 - one_hot) * logits)`` as the best other one: both wrong when logits are negative)
  and ``AutoAttack`` (10 iterations per component instead of 100) are refused by
  :class:`~robustbench_dc.attacks.spec.AttackSpec` with the reason and the alternative.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from robustbench_dc.attacks.checks import valid_rows
from robustbench_dc.attacks.losses import attack_loss, attack_success
from robustbench_dc.attacks.trace import TraceView

__all__ = ["SuccessRecorder", "preserved_flags"]

log = logging.getLogger(__name__)


class SuccessRecorder(nn.Module):
    """The model as a backend sees it: records the first valid adversarial input of each example.

    Only queries on a batch of the full size are attributed (row ``i`` is example ``i``); a row
    counts only if it is valid for example ``i``'s budget and the model's prediction on it is a
    success for example ``i``, so the record is a genuine adversarial example whatever order or
    subset the backend used.

    Args:
        model (nn.Module): the attacked model.
        x (Tensor): (N, ...) clean inputs. y (Tensor): (N,) labels.
        eps (float): budget. threat_model (str): ``"linf"`` or ``"l2"``.
        targets (Tensor | None): (N,) targets of a targeted attack.
        trace (TraceView | None): also records, for every full-size query, the cross-entropy
            objective and which rows were valid adversarial inputs, and the examples
            :meth:`rescue` restored (:mod:`~robustbench_dc.attacks.trace`).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, threat_model: str,
                 targets: torch.Tensor | None = None, trace: TraceView | None = None) -> None:
        super().__init__()
        self.model = model
        self._x, self._y, self._targets = x.detach(), y.detach(), targets
        self._eps, self._tm = float(eps), threat_model
        self.found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.x_found = x.detach().clone()
        self.trace = trace
        if trace is not None:
            trace.new_segment()

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        out = self.model(inp)
        if inp.shape == self._x.shape and out.dim() == 2:
            with torch.no_grad():
                xi = inp.detach().to(self._x.dtype)
                success = attack_success(out.detach(), self._y, self._targets)
                adversarial = None  # success & inside the budget, computed once when needed
                if self.trace is not None:
                    adversarial = success & valid_rows(xi, self._x, self._eps, self._tm)
                    self.trace.record(attack_loss(out.detach().float(), self._y, "ce", self._targets), adversarial)
                new = ~self.found & success
                if bool(new.any()):
                    new &= adversarial if adversarial is not None else valid_rows(xi, self._x, self._eps, self._tm)
                    self.x_found[new] = xi[new]
                    self.found |= new
        return out

    def rescue(self, x_adv: torch.Tensor, label: str) -> torch.Tensor:
        """``x_adv`` where it is adversarial; elsewhere the recorded adversarial input, if any."""
        if not bool(self.found.any()):
            return x_adv
        with torch.no_grad():
            success = attack_success(self.model(x_adv), self._y, self._targets)
        lost = self.found & ~success
        if self.trace is not None:
            self.trace.mark_rescued(lost)
        n_lost = int(lost.sum())
        if n_lost:
            log.info("%s: the backend returned a non-adversarial point for %d/%d examples where one of its "
                        "iterates was adversarial; the earlier success is kept", label, n_lost, x_adv.shape[0])
            x_adv = torch.where(lost.view(-1, *([1] * (x_adv.dim() - 1))), self.x_found.to(x_adv.dtype), x_adv)
        return x_adv


@contextlib.contextmanager
def preserved_flags(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's ``training`` flag and every parameter's ``requires_grad`` on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)
