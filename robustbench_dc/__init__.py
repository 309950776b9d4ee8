"""robustbench-dc: adversarial robustness of decoupled convolution operators.

Public entry points live in the submodules:

- :mod:`robustbench_dc.operators` -- the decoupled operator family (``DecoupledConv2d``,
  ``DecoupledLinear``), its registry and ``convert``.
- :mod:`robustbench_dc.zoo` -- ``build_model`` / ``load_model`` and the model cards.
- :mod:`robustbench_dc.data` -- MNIST, Fashion-MNIST and CIFAR-10 loaders.
"""

from robustbench_dc.version import VERSION

__version__ = VERSION
