"""Reproduction of Decoupled Networks (Liu et al., CVPR 2018): the paper's Tables 7-8 beside ours,
built from a protocol run's stored results, and the paper's claims judged by rule.

* :mod:`~robustbench_dc.reproduce.paper` -- the paper's numbers (reference data, shown beside ours).
* :func:`build_tables` -- our numbers from a run's ``summary.json`` in the paper's layout.
* :func:`judge_claims` -- each claim: reproduced / not reproduced / mixed / not evaluated, with
  the numbers that decide it.
* :func:`render_markdown` -- ``figures/table7.md`` / ``figures/table8.md``.
* :func:`write_report` -- the whole report into a folder (``rbdc reproduce``), tables and
  ``figure6.png`` / ``figure7.png`` from stored results.
* :func:`tables_summary` -- the claims of a written report as Markdown bullets (the README's summary).
"""

from robustbench_dc.reproduce.paper import ATTACKS, OPERATORS, TABLE7, TABLE8, TRAININGS
from robustbench_dc.reproduce.report import (
    reproduction_page,
    tables_summary,
    write_figures,
    write_report,
    write_reproduction_page,
    write_tables,
)
from robustbench_dc.reproduce.tables import (
    CLAIM_RULES,
    Claim,
    ReportError,
    Tables,
    attack_kind,
    build_tables,
    judge_claims,
    phase_seconds,
    render_markdown,
    strong_attack_gaps,
    tables_run_problems,
)

__all__ = ["ReportError", "OPERATORS", "TRAININGS", "ATTACKS", "TABLE7", "TABLE8", "Tables", "Claim", "CLAIM_RULES",
           "attack_kind", "build_tables", "judge_claims", "render_markdown", "phase_seconds", "strong_attack_gaps",
           "tables_run_problems",
           "write_report", "write_tables", "write_figures", "tables_summary", "reproduction_page",
           "write_reproduction_page"]
