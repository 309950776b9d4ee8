"""Write the reproduction report into a folder (``figures/``) from stored run results.

* from a Tables 7-8 run folder: ``table7.md``, ``table8.md`` (ours beside the paper's, the claims
  judged by rule, provenance) and ``tables78.json`` (every number and verdict, machine-readable);
* from a Figures 6-7 run folder: ``figure6.png`` (natural training) and ``figure7.png``
  (adversarial training), one panel per operator in the paper's order, drawn from the stored
  embeddings, each with a ``.json`` of its provenance, and ``figures67.md``: the claims about
  the figures judged by rule on the stored features.

Nothing is recomputed: the numbers come from ``summary.json``, the features from each model's
``embedding.npz``.

Example::

    >>> write_report("figures", tables_run="runs/table7-8-cpu", figures_run="runs/figures6-7")
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from robustbench_dc._atomic import atomic_write_text
from robustbench_dc.errors import MissingFileError
from robustbench_dc.reproduce.paper import OPERATORS, TABLE7, TABLE8, TRAININGS
from robustbench_dc.reproduce.tables import (
    Claim,
    ReportError,
    build_tables,
    claim_verdict,
    judge_claims,
    render_markdown,
    tables_run_problems,
)

__all__ = ["write_report", "write_tables", "write_figures", "figure_claims", "angular_accuracy", "tables_summary",
           "reproduction_page", "write_reproduction_page"]

_FIGURES = {"natural": ("figure6", "Figure 6: 2-D features on MNIST, natural training"),
            "adversarial": ("figure7", "Figure 7: 2-D features on MNIST, adversarial training")}


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise MissingFileError(f"{path}: no summary (run the protocol first: rbdc run ...)")
    return json.loads(path.read_text())


def _report_command(out_dir: str | Path, tables_run: str | Path | None, figures_run: str | Path | None) -> str:
    """The ``rbdc reproduce`` command that writes this report (recorded beside every output)."""
    parts = ["rbdc reproduce"]
    if tables_run is not None:
        parts.append(f"--tables {tables_run}")
    if figures_run is not None:
        parts.append(f"--figures {figures_run}")
    return " ".join(parts + [f"--out {out_dir}"])


def _refuse(run: Path, family: str, problems: list[str]) -> None:
    if problems:
        raise ReportError(f"{run}: not a run of the {family} protocol family: " + "; ".join(problems)
                          + " (nothing written)")


def _tables_of(run: Path) -> Any:
    """The run's tables, or :class:`ReportError` naming what the run lacks to be a Tables 7-8 run."""
    summary = _summary(run)
    _refuse(run, "Tables 7-8", tables_run_problems(summary))
    return build_tables(summary)


#: The datasets of Figures 6-7 (MNIST; the bundled sample holds MNIST's own images).
FIGURES_DATASETS = ("mnist", "mnist-sample")


def _figures_run(run: Path) -> dict[str, Any]:
    """The loaded run, or :class:`ReportError` naming what it lacks to be a Figures 6-7 run: the
    MNIST dataset, and one model with stored 2-D features per operator and training of the paper."""
    from robustbench_dc.plots import load_run

    loaded = load_run(run)
    problems = []
    dataset = loaded["summary"].get("dataset")
    if dataset not in FIGURES_DATASETS:
        problems.append(f"dataset is {dataset!r}, the figures need {' or '.join(map(repr, FIGURES_DATASETS))}")
    have = {(e["info"].get("training"), e["info"].get("label")) for e in loaded["models"].values()
            if e["info"].get("role", "model") == "model" and e.get("embedding")}
    missing = [f"{op} ({t})" for t in TRAININGS for op in OPERATORS if (t, op) not in have]
    if missing:
        problems.append("no model with stored 2-D features (embedding.npz) for " + ", ".join(missing))
    _refuse(run, "Figures 6-7", problems)
    return loaded


def write_tables(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """``table7.md``, ``table8.md`` and ``tables78.json`` from a Tables 7-8 run folder.

    Raises:
        ReportError: the run is not a run of the Tables 7-8 family (another dataset, a missing
            cell, attack or transfer source); nothing is written.
    """
    run, out = Path(run_dir), Path(out_dir)
    tables = _tables_of(run)
    written = []
    for name in ("table7", "table8"):
        path = out / f"{name}.md"
        atomic_write_text(path, render_markdown(tables, name))
        written.append(path)
    payload = {"run_dir": str(run), "ours": {"white_box": tables.white, "black_box": tables.black},
               "paper": {"table7": TABLE7, "table8": TABLE8}, "models": tables.models, "flags": tables.flags,
               "attack_labels": tables.attack_labels, "source": tables.source,
               "claims": [dataclasses.asdict(c) for c in judge_claims(tables)], "provenance": tables.provenance,
               "settings": tables.settings, "report_command": _report_command(out, run, None),
               "job_seconds": tables.job_seconds}
    path = out / "tables78.json"
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return written + [path]


def tables_summary(report: str | Path | dict[str, Any]) -> str:
    """The claims of a Tables 7-8 report as Markdown bullets (the README's summary), read from its
    ``tables78.json`` (a path or the loaded payload): each claim, its verdict and the numbers that
    decide it, then which models triggered a masking flag or attack-failure indicator."""
    if isinstance(report, dict):
        data = report
    else:
        path = Path(report)
        if not path.is_file():
            raise MissingFileError(f"{path}: no Tables 7-8 report (write it first: rbdc reproduce --tables RUN_DIR)")
        data = json.loads(path.read_text())
    lines = [f"- {c['text']} **{c['status'][:1].upper() + c['status'][1:]}**: {c['evidence']}."
             for c in data["claims"]]
    flags = data.get("flags") or {}
    triggered = {name: f for name, f in flags.items() if f}
    lines.append("")
    if not triggered:
        lines.append(f"No masking flag or attack-failure indicator triggered on any of the {len(flags)} models.")
    else:
        lines.append("Masking flags or attack-failure indicators triggered: "
                     + "; ".join(f"`{name}`: {', '.join(map(str, f))}" for name, f in sorted(triggered.items())) + ".")
    return "\n".join(lines) + "\n"


def angular_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of classifying each feature by its angle alone: nearest class-mean direction (cosine)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    classes = np.unique(labels)
    means = np.stack([unit[labels == c].mean(0) for c in classes])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return float((classes[(unit @ means.T).argmax(1)] == labels).mean())


#: Figures 6-7 claims (Decoupled Networks: the magnitude models intra-class variation, the angle the
#: semantic difference; bounded operators bound the features), with their rules' thresholds.
FIGURE_ANGLE_ACC = 0.9
FIGURE_RANGE_RATIO = 0.25


def figure_claims(panels: dict[str, dict[str, dict[str, Any]]]) -> list[Claim]:
    """Claims about Figures 6-7 judged on the stored embeddings: ``panels[training][operator]`` =
    ``{"features": (N, 2), "labels": (N,)}``."""
    angle_checks: list[bool | None] = []
    angle_ev, range_checks, range_ev = [], [], []
    for training in ("natural", "adversarial"):
        ops = panels.get(training, {})
        for op in OPERATORS:
            if op in ops:
                acc = angular_accuracy(ops[op]["features"], ops[op]["labels"])
                angle_checks.append(acc >= FIGURE_ANGLE_ACC)
                angle_ev.append(f"{op} {training} {100 * acc:.1f}")
            else:
                angle_checks.append(None)
        base = ops.get("Baseline")
        base_r = float(np.abs(base["features"]).max()) if base else None
        for op in OPERATORS[1:]:
            r = float(np.abs(ops[op]["features"]).max()) if op in ops else None
            range_checks.append(None if r is None or base_r is None else r <= FIGURE_RANGE_RATIO * base_r)
            if r is not None and base_r is not None:
                range_ev.append(f"{op} {training} {r:.3g} vs Baseline {base_r:.3g}")
    return [
        Claim("features-by-angle", "(Figures 6-7) The classes are separated by the angle of the features "
              "(the angular function models the semantic difference).",
              f"classifying test features by angle alone (nearest class-mean direction) is >= "
              f"{100 * FIGURE_ANGLE_ACC:.0f}% accurate for every network", claim_verdict(angle_checks),
              "angle-only accuracy (%): " + ", ".join(angle_ev)),
        Claim("bounded-features", "(Figures 6-7) Bounded operators keep the features in a bounded region, "
              "far smaller than the baseline's.",
              f"largest absolute feature value of each bounded operator <= {FIGURE_RANGE_RATIO} x the "
              "baseline's (same training)",
              claim_verdict(range_checks), "largest absolute feature value: " + "; ".join(range_ev)),
    ]


def write_figures(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """``figure6.png`` / ``figure7.png`` (and their provenance ``.json``) from a Figures 6-7 run.

    Raises:
        ReportError: the run is not a run of the Figures 6-7 family (not MNIST, or an operator
            and training without stored features); nothing is written.
    """
    from robustbench_dc.plots import plot_embeddings, save_figure

    run, out = Path(run_dir), Path(out_dir)
    loaded = _figures_run(run)
    summary = loaded["summary"]
    written: list[Path] = []
    by_training: dict[str, dict[str, dict[str, Any]]] = {}
    for training, (stem, title) in _FIGURES.items():
        panels, names = [], []
        for op in OPERATORS:
            match = [(n, e) for n, e in loaded["models"].items()
                     if e["info"].get("label") == op and e["info"].get("training") == training
                     and e["info"].get("role", "model") == "model" and e.get("embedding")]
            if len(match) > 1:
                raise ReportError(f"{run}: several {op} models with {training} training: {[n for n, _ in match]}")
            if match:
                name, e = match[0]
                names.append(name)
                panels.append({"label": op, "features": e["embedding"]["features"], "labels": e["embedding"]["labels"],
                               "accuracy": e["embedding"].get("accuracy", e["info"].get("clean_accuracy"))})
                by_training.setdefault(training, {})[op] = e["embedding"]
        if not panels:
            continue
        fig = plot_embeddings(panels, title=title)
        written += save_figure(fig, out / stem, formats=("png",))
        prov = {"figure": f"{stem}.png", "run_dir": str(run), "models": names, "training": training,
                "report_command": _report_command(out, None, run), "started": summary.get("started"),
                **{k: summary.get(k) for k in ("run_id", "protocol", "dataset", "n_train", "n_test", "seed",
                                               "data_sha256", "train_data_sha256", "command", "versions",
                                               "finished")}}
        path = out / f"{stem}.json"
        atomic_write_text(path, json.dumps(prov, indent=1, sort_keys=True) + "\n")
        written.append(path)
    if by_training:
        claims = figure_claims(by_training)
        lines = ["# Figures 6-7: the paper's claims, judged by rule on the stored features", "",
                 f"Run: `{summary.get('command')}` (seed {summary.get('seed')}, data sha256 "
                 f"{summary.get('data_sha256')}); report: `{_report_command(out, None, run)}`.", "",
                 "| claim | rule | verdict | numbers |", "|---|---|---|---|"]
        lines += [f"| {c.text} | {c.rule} | **{c.status}** | {c.evidence} |" for c in claims]
        path = out / "figures67.md"
        atomic_write_text(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def write_report(out_dir: str | Path, *, tables_run: str | Path | None = None,
                 figures_run: str | Path | None = None) -> list[Path]:
    """Everything :mod:`robustbench_dc.reproduce` can write from the given run folders."""
    if tables_run is None and figures_run is None:
        raise ReportError("give a Tables 7-8 run folder, a Figures 6-7 run folder, or both")
    # Both runs are checked before anything is written: a wrong second folder leaves no half report.
    if tables_run is not None:
        _tables_of(Path(tables_run))
    if figures_run is not None:
        _figures_run(Path(figures_run))
    written: list[Path] = []
    if tables_run is not None:
        written += write_tables(tables_run, out_dir)
    if figures_run is not None:
        written += write_figures(figures_run, out_dir)
    return written



# ----------------------------------------------------------------------------- docs/reproduction.md
def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingFileError(f"{path}: no {what} (write the report first: rbdc reproduce --tables/--figures ...)")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a {what}")
    return data


def _noise_lines(path: Path) -> list[str]:
    """One bullet for a comparison of two runs written by ``python -m benchmarks.table78_noise``."""
    from robustbench_dc.reproduce.tables import machine_text

    d = _read_json(path, "run-to-run comparison")
    claims = d.get("claims_same_verdict") or {}
    runs = " against ".join(
        f"the run of {str(r.get('finished') or '?')[:10]} on {machine_text(r.get('machine')).split(' (')[0]}"
        for r in d.get("provenance") or [] if isinstance(r, dict))
    verdicts = (f"{claims.get('same')} of {claims.get('evaluated_in_both')} claims keep their verdict"
                if claims.get("evaluated_in_both") else "no claim is evaluated in both")
    return [f"- {runs or ' and '.join(map(str, d.get('runs') or []))}: {d.get('n_different')} of "
            f"{d.get('n_numbers')} numbers differ, by at most {100 * float(d.get('max_abs_difference') or 0):.1f} "
            f"points; {verdicts} ([{path.name}](../{path.as_posix()}))."
            + (" The checkpoints are identical." if d.get("checkpoints_identical") is True else "")]


def reproduction_page(report_dir: str | Path = "figures", *, phases: str | Path | None = None,
                      noise: list[str | Path] | None = None, command: str | None = None) -> str:
    """The reproduction's reference page (``docs/reproduction.md``), from the written report in
    ``report_dir`` (``tables78.json``, ``figure6.json``, ``figure7.json``, ``figures67.md``): the
    paper's claims judged on our numbers, every model's settings, the run's machine and wall time
    per phase (from the report, or a phases file of ``python -m benchmarks.table78_phases`` for a
    report written before the report kept its job times), and the run-to-run noise measured by
    ``python -m benchmarks.table78_noise``. Nothing is typed by hand: every line comes from a file."""
    from robustbench_dc.reproduce.tables import machine_text, minutes_text, phases_of, protocol_path, recipe_text

    folder = Path(report_dir)
    data = _read_json(folder / "tables78.json", "Tables 7-8 report (tables78.json)")
    prov = data.get("provenance") or {}
    job_seconds: dict[str, float] = dict(data.get("job_seconds") or {})
    timing_source = f"[`{folder.as_posix()}/tables78.json`](../{folder.as_posix()}/tables78.json)"
    if phases is not None:
        ph = _read_json(Path(phases), "phases file")
        if ph.get("run_id") != prov.get("run_id"):
            raise ReportError(f"{phases}: the phases of run {ph.get('run_id')!r}, the report is of run "
                              f"{prov.get('run_id')!r}")
        job_seconds = {k: float(v) for k, v in (ph.get("job_seconds") or {}).items()}
        timing_source = f"[`{Path(phases).as_posix()}`](../{Path(phases).as_posix()})"
    lines = ["# Reproducing Decoupled Networks: Tables 7-8 and Figures 6-7", "",
             f"Generated by `{command or 'rbdc reproduce --page docs/reproduction.md'}` from the report in "
             f"[`{folder.as_posix()}/`](../{folder.as_posix()}/); do not edit by hand.", "",
             "## Tables 7-8: the paper's claims, judged by rule on our numbers", "",
             f"The tables, each of our numbers beside the paper's: [table7.md](../{folder.as_posix()}/table7.md) "
             f"(white-box), [table8.md](../{folder.as_posix()}/table8.md) (black-box).", "",
             tables_summary(data).rstrip(), "",
             "## The run", "",
             f"- protocol: `{protocol_path(prov.get('protocol') or {})}`, seed {prov.get('seed')}, the first "
             f"{prov.get('n_test')} test images; command `{prov.get('command')}`",
             f"- machine: {machine_text(prov.get('machine'))}",
             f"- versions: {prov.get('versions')}",
             f"- started {prov.get('started')}, finished {prov.get('finished')}", "",
             "| model | operator | parameters | training recipe | seed |", "|---|---|---|---|---|"]
    for name, m in (data.get("settings") or {}).items():
        params = {**(m.get("arch_params") or {}), **(m.get("operator_params") or {})}
        lines.append(f"| `{name}` ({m.get('label')}) | `{m.get('operator')}` | "
                     + ", ".join(f"{k}={v}" for k, v in params.items())
                     + f" | {recipe_text(m.get('recipe'), m.get('trained_with'))} | {m.get('seed')} |")
    if job_seconds:
        lines += ["", f"## Wall time per phase ({timing_source})", "", "| phase | wall time |", "|---|---:|"]
        lines += [f"| {k} | {minutes_text(v)} |" for k, v in phases_of(job_seconds).items()]
        lines.append(f"| all jobs | {minutes_text(sum(job_seconds.values()))} |")
    if noise:
        lines += ["", "## Run-to-run noise", "",
                  "Each comparison is of two runs of the protocol, number by number "
                  "(`python -m benchmarks.table78_noise A B --out FILE`):", ""]
        for path in noise:
            lines += _noise_lines(Path(path))
    fig = folder / "figures67.md"
    if fig.is_file():
        claims = [line for line in fig.read_text().splitlines() if line.startswith("|")]
        lines += ["", "## Figures 6-7: the paper's claims, judged by rule on the stored features", "",
                  f"[figure6.png](../{folder.as_posix()}/figure6.png) (natural training), "
                  f"[figure7.png](../{folder.as_posix()}/figure7.png) (adversarial training).", "", *claims]
        f6 = folder / "figure6.json"
        if f6.is_file():
            info = json.loads(f6.read_text())
            lines += ["", f"Run: `{info.get('command')}` (seed {info.get('seed')}), started {info.get('started')}, "
                          f"finished {info.get('finished')}."]
    return "\n".join(lines) + "\n"


def write_reproduction_page(path: str | Path, report_dir: str | Path = "figures", *,
                            phases: str | Path | None = None, noise: list[str | Path] | None = None,
                            command: str | None = None) -> Path:
    """Write :func:`reproduction_page` to ``path`` (atomically)."""
    out = Path(path)
    atomic_write_text(out, reproduction_page(report_dir, phases=phases, noise=noise, command=command))
    return out
