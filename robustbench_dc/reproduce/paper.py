"""The numbers of Decoupled Networks (Liu et al., CVPR 2018) that the suite reproduces.

Tables 7 (white-box) and 8 (black-box) attacks on CIFAR-10, accuracy in %, as printed in the
paper (seed 000 of ``shared/seeds``; ``shared/REFERENCE.md`` section 2). These are the
paper's numbers, shown beside ours; nothing of ours is derived from them.
"""

from __future__ import annotations

__all__ = ["OPERATORS", "TRAININGS", "ATTACKS", "TABLE7", "TABLE8", "PAPER_TABLES"]

#: Columns of Tables 7-8, in the paper's order.
OPERATORS: tuple[str, ...] = ("Baseline", "SphereConv", "BallConv", "TanhConv")
#: Row groups: natural training, then FGSM adversarial training.
TRAININGS: tuple[str, ...] = ("natural", "adversarial")
#: Rows of each group: no attack (clean accuracy), FGSM, BIM.
ATTACKS: tuple[str, ...] = ("none", "fgsm", "bim")

#: Table 7, white-box attacks: {training: {attack: {operator: accuracy %}}}.
TABLE7: dict[str, dict[str, dict[str, float]]] = {
    "natural": {
        "none": {"Baseline": 85.35, "SphereConv": 88.58, "BallConv": 91.13, "TanhConv": 91.45},
        "fgsm": {"Baseline": 18.82, "SphereConv": 43.64, "BallConv": 50.47, "TanhConv": 52.60},
        "bim": {"Baseline": 8.67, "SphereConv": 8.89, "BallConv": 7.74, "TanhConv": 10.18},
    },
    "adversarial": {
        "none": {"Baseline": 83.70, "SphereConv": 87.41, "BallConv": 87.47, "TanhConv": 87.54},
        "fgsm": {"Baseline": 78.96, "SphereConv": 85.98, "BallConv": 82.20, "TanhConv": 81.46},
        "bim": {"Baseline": 7.96, "SphereConv": 35.07, "BallConv": 17.38, "TanhConv": 19.86},
    },
}

#: Table 8, black-box (transfer) attacks crafted on a separately trained baseline.
TABLE8: dict[str, dict[str, dict[str, float]]] = {
    "natural": {
        "none": TABLE7["natural"]["none"],
        "fgsm": {"Baseline": 50.90, "SphereConv": 56.71, "BallConv": 49.50, "TanhConv": 50.61},
        "bim": {"Baseline": 36.22, "SphereConv": 43.10, "BallConv": 27.48, "TanhConv": 29.06},
    },
    "adversarial": {
        "none": TABLE7["adversarial"]["none"],
        "fgsm": {"Baseline": 77.57, "SphereConv": 76.29, "BallConv": 78.67, "TanhConv": 80.38},
        "bim": {"Baseline": 78.55, "SphereConv": 77.79, "BallConv": 80.59, "TanhConv": 82.47},
    },
}

PAPER_TABLES = {"table7": TABLE7, "table8": TABLE8}
