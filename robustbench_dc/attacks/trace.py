"""What an attack's iterates did, per example: the record behind the attack-failure indicators.

Pintor et al., "Indicators of Attack Failure: Debugging and Improving Optimization of Adversarial
Examples" (NeurIPS 2022) judge an attack by its path, not only by the point it returns. An
:class:`AttackTrace` collects that path while the attack runs:

* the attack's objective (the loss it maximises) at every iterate, per example, grouped in
  *segments* (one per restart, per target class of APGD-T, per component of AutoAttack);
* whether any iterate was adversarial for the example (``ever_adversarial``), as the attack saw it;
* how many examples a third-party backend returned as non-adversarial although one of its own
  iterates was adversarial (``rescued``: the suite keeps the earlier success, see
  :class:`~robustbench_dc.attacks.guards.SuccessRecorder`).

The suite's native attacks (FGSM, BIM, PGD, APGD and AutoAttack's APGD components) record every
iterate; third-party backends record the queries made on the whole batch (where a query's rows
are the batch's examples in order: torchattacks' and foolbox's gradient attacks). Attacks work on
batches and on subsets of them (examples that succeeded leave the batch on the CPU), so an attack
records through a *view* (:meth:`AttackTrace.view`) that maps its rows to the evaluation's examples.

Example::

    >>> trace = AttackTrace(n=len(y))
    >>> x_adv = run_attack(model, x, y, spec, trace=trace)
    >>> trace.ever_adversarial.sum(), trace.final_segments()[0]
"""

from __future__ import annotations

import torch

__all__ = ["AttackTrace", "TraceView"]


class AttackTrace:
    """Per-example record of an attack's iterates over ``n`` examples (kept on the CPU).

    Attributes:
        n (int): examples.
        ever_adversarial (Tensor): bool (n,), some iterate was adversarial for the example (as
            judged by the attack's own forward pass).
        rescued (Tensor): bool (n,), a backend returned a non-adversarial point although one of its
            iterates was adversarial; the suite returned that iterate instead.
    """

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self.ever_adversarial = torch.zeros(self.n, dtype=torch.bool)
        self.rescued = torch.zeros(self.n, dtype=torch.bool)
        self._records: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (segment, rows, objective)
        self._segment = 0

    # -- recording (through views) ------------------------------------------------------------
    def view(self, rows: torch.Tensor | None = None) -> TraceView:
        """A view whose row ``i`` is example ``rows[i]`` of this trace (all examples when None)."""
        return TraceView(self, torch.arange(self.n) if rows is None else rows.detach().to("cpu", torch.long))

    def _new_segment(self) -> None:
        self._segment += 1

    def _record(self, rows: torch.Tensor, objective: torch.Tensor | None, success: torch.Tensor | None) -> None:
        if objective is not None:
            self._records.append((self._segment, rows, objective.detach().to("cpu", torch.float64).reshape(-1)))
        if success is not None:
            self.ever_adversarial[rows[success.detach().to("cpu", torch.bool).reshape(-1)]] = True

    # -- reading ------------------------------------------------------------------------------
    def final_segments(self) -> list[torch.Tensor]:
        """Per example, the objective over the iterates of the last segment it took part in
        (float64, possibly empty): the trajectory that produced the returned point."""
        out: list[list[float]] = [[] for _ in range(self.n)]
        last = [-1] * self.n
        for seg, rows, obj in self._records:
            for r, v in zip(rows.tolist(), obj.tolist()):
                if seg > last[r]:
                    last[r], out[r] = seg, []
                out[r].append(v)
        return [torch.tensor(v, dtype=torch.float64) for v in out]

    @property
    def iterations(self) -> int:
        """The longest per-example trajectory of :meth:`final_segments` (0 when nothing was recorded)."""
        return max((len(t) for t in self.final_segments()), default=0)


class TraceView:
    """Rows of an attack's batch mapped onto an :class:`AttackTrace`'s examples."""

    def __init__(self, trace: AttackTrace, rows: torch.Tensor) -> None:
        self.trace, self.rows = trace, rows

    def view(self, idx: torch.Tensor | None) -> TraceView:
        """The sub-view of the batch rows ``idx`` (this view when None)."""
        return self if idx is None else TraceView(self.trace, self.rows[idx.detach().to("cpu", torch.long)])

    def new_segment(self) -> None:
        """Start a new trajectory (a restart, a target class, a component)."""
        self.trace._new_segment()

    def record(self, objective: torch.Tensor | None, success: torch.Tensor | None = None,
               idx: torch.Tensor | None = None) -> None:
        """The objective (m,) and success (m,) at one iterate of the rows ``idx`` of this view (all when None)."""
        rows = self.rows if idx is None else self.rows[idx.detach().to("cpu", torch.long)]
        self.trace._record(rows, objective, success)

    def mark_rescued(self, lost: torch.Tensor) -> None:
        """The rows ``lost`` (bool) were non-adversarial on return although an iterate was adversarial."""
        self.trace.rescued[self.rows[lost.detach().to("cpu", torch.bool)]] = True
