"""Minimum-norm attacks and robustness curves.

A fixed-budget attack answers "is this example broken at eps?"; a minimum-norm attack answers
"how large a perturbation does this example need?". This package holds the suite's native
minimum-norm attacks -- FMN (Pintor et al., NeurIPS 2021) and FAB (Croce & Hein, ICML 2020),
untargeted and targeted, L-inf and L2 -- and the *robustness curve* built from them: per example,
the smallest perturbation found by any attack, hence robust accuracy at every eps, the median
minimal perturbation and the area under the curve, each with a bootstrap interval.
"""
