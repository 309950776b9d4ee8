"""AutoAttack (Croce & Hein, ICML 2020) with every component native: the ensemble
(:mod:`~robustbench_dc.autoattack.ensemble`: APGD-CE, APGD-T, FAB-T, Square; the ``rand`` version
with EOT), FAB (:mod:`~robustbench_dc.autoattack.fab`: also the minimum-norm attack of
:mod:`robustbench_dc.minimum_norm`) and the Square Attack (:mod:`~robustbench_dc.autoattack.square`).
Beside it, ``malt`` (:mod:`~robustbench_dc.autoattack.malt`): a fast evaluation that is not
AutoAttack -- APGD-CE, then APGD-T on the few targets MALT's targeting ranks first.

This package sits above :mod:`robustbench_dc.attacks` (whose APGD, checks and step primitives it
uses) and below the evaluation; ``AttackSpec(name="autoattack")`` and ``AttackSpec(name="square")``
reach it through the attack registry. Croce & Hein's own code (``pyautoattack``) and torchattacks'
components stay runnable beside it (:mod:`robustbench_dc.evaluation.reference`,
``AttackSpec(name="fab"/"square", backend="torchattacks")``).

Example::

    >>> from robustbench_dc.autoattack import autoattack
    >>> x_adv, parts = autoattack(model, x, y, eps=8 / 255)
"""

from robustbench_dc.autoattack.ensemble import AUTOATTACK_VERSIONS, COMPONENTS, VERSIONS, autoattack
from robustbench_dc.autoattack.fab import fab
from robustbench_dc.autoattack.malt import malt
from robustbench_dc.autoattack.square import square

__all__ = ["autoattack", "fab", "malt", "square", "COMPONENTS", "VERSIONS", "AUTOATTACK_VERSIONS"]
