"""robustbench-dc: adversarial robustness of decoupled convolution operators.

``benchmark(model, dataset=...)`` evaluates any model in one call (:mod:`robustbench_dc.bench`);
``load_examples(dataset, n)`` gives the first ``n`` test examples as float tensors. The rest lives in
the submodules:

- :mod:`robustbench_dc.operators` -- the decoupled operator family (``DecoupledConv2d``,
  ``DecoupledLinear``), its registry and ``convert``.
- :mod:`robustbench_dc.zoo` -- ``build_model`` / ``load_model`` and the model cards.
- :mod:`robustbench_dc.data` -- MNIST, Fashion-MNIST and CIFAR-10 loaders.
"""

from robustbench_dc.version import VERSION

__version__ = VERSION

__all__ = ["benchmark", "load_examples", "BenchmarkResult", "__version__"]


def __getattr__(name: str) -> object:
    """``robustbench_dc.benchmark`` and ``robustbench_dc.load_examples``, imported on first use (the
    package itself imports nothing heavy)."""
    if name in ("benchmark", "BenchmarkResult"):
        from robustbench_dc import bench

        return getattr(bench, name)
    if name == "load_examples":
        from robustbench_dc.data import load_examples

        return load_examples
    raise AttributeError(f"module 'robustbench_dc' has no attribute {name!r}")
