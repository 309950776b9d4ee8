"""Read a protocol run folder and redraw all of its figures (no retraining, no attacks).

Layout (every part optional)::

    RUN_DIR/summary.json                      {"dataset", "models": {name: {"label", "operator", "training"}}}
    RUN_DIR/models/<name>/train.json          {"history": [{epoch, loss, train_accuracy, eval_accuracy?}]}
    RUN_DIR/models/<name>/whitebox.json       {"clean_accuracy", "results": [{"attack", "eps", "robust_accuracy"}]}
    RUN_DIR/models/<name>/sweep-<attack>.json {"attack", "eps": [...], "robust_accuracy": [...]}
    RUN_DIR/models/<name>/lipschitz.json      {"estimates": {kind: value}}  (or a LipschitzReport dict)
    RUN_DIR/models/<name>/embedding.npz       "features" (N, 2), "labels" (N,)
    RUN_DIR/transfer.json                     {"sources", "targets", "attacks", "matrices": {attack: {src: {tgt: acc}}}}
    RUN_DIR/figures/                          output
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from robustbench_dc.errors import MissingFileError
from robustbench_dc.plots._common import (
    ADVERSARIAL,
    NATURAL,
    OKABE_ITO,
    safe_filename,
    save_figure,
    to_float,
    training_kind,
)
from robustbench_dc.plots.figures import (
    plot_embedding_grid,
    plot_embeddings,
    plot_eps_curves,
    plot_lipschitz,
    plot_training_curves,
    plot_transfer_matrix,
)

__all__ = ["load_run", "redraw_run", "run_figures"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- reading


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        msg = f"{path}: unreadable JSON ({exc})"
        log.warning(msg)
        problems.append(msg)
        return None


def _read_embedding(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            feats = np.asarray(z["features"], dtype=float)
            labels = np.asarray(z["labels"])
            acc = float(z["accuracy"]) if "accuracy" in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        msg = f"{path}: unreadable embedding ({exc})"
        log.warning(msg)
        problems.append(msg)
        return None
    if feats.ndim != 2 or feats.shape[1] != 2 or labels.shape != (feats.shape[0],):
        msg = f"{path}: expected features (N, 2) and labels (N,), got {feats.shape} and {labels.shape}"
        log.warning(msg)
        problems.append(msg)
        return None
    out: dict[str, Any] = {"features": feats, "labels": labels.astype(int)}
    if acc is not None:
        out["accuracy"] = acc
    return out


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything stored in a run folder, tolerating missing or unreadable parts.

    Returns ``{"run_dir": Path, "summary": dict, "dataset": str | None, "models": {name: {"info":
    dict, "train": dict | None, "whitebox": dict | None, "sweeps": {attack: dict}, "lipschitz":
    dict | None, "curve": dict | None, "embedding": {"features", "labels", "accuracy"?} | None}},
    "transfer": dict | None,
    "problems": [str]}``. Models are ordered as in ``summary.json``, then any other folder under
    ``models/`` (sorted). Unreadable files are logged and listed in ``problems``.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist or is not a folder.
    """
    root = Path(run_dir)
    if not root.exists():
        raise MissingFileError(f"run folder not found: {root}")
    if not root.is_dir():
        raise MissingFileError(f"not a run folder (expected a directory): {root}")
    problems: list[str] = []
    summary: dict[str, Any] = {}
    if (root / "summary.json").is_file():
        s = _read_json(root / "summary.json", problems)
        if isinstance(s, dict):
            summary = s
    models_info = summary.get("models")
    infos: Mapping[str, Any] = models_info if isinstance(models_info, Mapping) else {}
    names = list(infos)
    mdir = root / "models"
    if mdir.is_dir():
        names += sorted(p.name for p in mdir.iterdir() if p.is_dir() and p.name not in infos)
    models: dict[str, dict[str, Any]] = {}
    for name in names:
        d = mdir / name
        info = dict(infos.get(name) or {}) if isinstance(infos.get(name, {}), Mapping) else {}
        entry: dict[str, Any] = {"info": info, "train": None, "whitebox": None, "sweeps": {},
                                 "lipschitz": None, "embedding": None, "curve": None}
        for key in ("train", "whitebox", "lipschitz", "curve"):
            if (d / f"{key}.json").is_file():
                v = _read_json(d / f"{key}.json", problems)
                entry[key] = v if isinstance(v, dict) else None
        if d.is_dir():
            for p in sorted(d.glob("sweep-*.json")):
                v = _read_json(p, problems)
                if isinstance(v, dict):
                    entry["sweeps"][str(v.get("attack") or p.stem[len("sweep-"):])] = v
        if (d / "embedding.npz").is_file():
            entry["embedding"] = _read_embedding(d / "embedding.npz", problems)
        models[name] = entry
    transfer = None
    if (root / "transfer.json").is_file():
        t = _read_json(root / "transfer.json", problems)
        transfer = t if isinstance(t, dict) else None
    dataset = summary.get("dataset")
    return {"run_dir": root, "summary": summary, "dataset": str(dataset) if dataset else None, "models": models,
            "transfer": transfer, "problems": problems}


# ----------------------------------------------------------------------------- naming and colours


def _base_label(name: str, info: Mapping[str, Any]) -> str:
    return str(info.get("label") or name)


def _training(name: str, entry: Mapping[str, Any]) -> str | None:
    info = entry.get("info") or {}
    explicit = info.get("training")
    if explicit is None and isinstance(entry.get("train"), Mapping):
        explicit = entry["train"].get("training")
    return training_kind(name, explicit)


def _display_names(run: Mapping[str, Any]) -> dict[str, str]:
    """Short unique names: the operator label, plus the training kind or the model name if needed."""
    models = run["models"]
    base = {n: _base_label(n, e["info"]) for n, e in models.items()}
    counts = Counter(base.values())
    out: dict[str, str] = {}
    for n, e in models.items():
        out[n] = base[n] if counts[base[n]] == 1 else f"{base[n]} ({_training(n, e) or n})"
    counts = Counter(out.values())
    return {n: (v if counts[v] == 1 else n) for n, v in out.items()}


def _colors(run: Mapping[str, Any], display: Mapping[str, str]) -> dict[str, str]:
    """Colour per displayed name, shared by every model with the same operator label."""
    by_label: dict[str, str] = {}
    out: dict[str, str] = {}
    for n, e in run["models"].items():
        label = _base_label(n, e["info"])
        if label not in by_label:
            by_label[label] = OKABE_ITO[len(by_label) % len(OKABE_ITO)]
        out[display[n]] = by_label[label]
    return out


def _dataset_title(run: Mapping[str, Any]) -> str:
    from robustbench_dc.data.errors import DataError
    from robustbench_dc.data.registry import dataset_info  # here: importing the data package loads torch

    ds = run.get("dataset")
    if not ds:
        return ""
    try:
        return dataset_info(str(ds)).display_name + " "
    except DataError:
        return f"{ds} "


def _accuracy(entry: Mapping[str, Any]) -> float | None:
    emb = entry.get("embedding") or {}
    if emb.get("accuracy") is not None:
        return float(emb["accuracy"])
    wb = entry.get("whitebox")
    if isinstance(wb, Mapping) and wb.get("clean_accuracy") is not None:
        return to_float(wb["clean_accuracy"])
    train = entry.get("train")
    if isinstance(train, Mapping):
        for h in reversed(train.get("history") or []):
            if isinstance(h, Mapping) and h.get("eval_accuracy") is not None:
                return to_float(h["eval_accuracy"])
    return None


def _lipschitz_values(data: Mapping[str, Any]) -> dict[str, float]:
    """``{kind: value}`` from ``{"estimates": {kind: value}}`` or a LipschitzReport dict."""
    out: dict[str, float] = {}
    est = data.get("estimates")
    if isinstance(est, Mapping):
        for k, v in est.items():
            if isinstance(v, Mapping):  # {"kind": {"value": ...}} or {"max": ...}
                v = v.get("value", v.get("max"))
            out[str(k)] = to_float(v)
    elif isinstance(est, list):  # LipschitzReport.to_dict(): Estimate dicts, value = max over points
        for e in est:
            if not isinstance(e, Mapping):
                continue
            kind = "grad-norm" if e.get("ball_eps") is None else "ball-grad-norm"
            if e.get("target") not in (None, "margin"):
                kind += f"-{e['target']}"
            out[f"{kind}-{e.get('norm', '')}".rstrip("-")] = to_float(e.get("max"))
    for c in data.get("clever") or []:
        if isinstance(c, Mapping) and isinstance(c.get("summary"), Mapping):
            out[f"clever-{c.get('norm', '')}".rstrip("-")] = to_float(c["summary"].get("max_lipschitz"))
    return {k: v for k, v in out.items() if not math.isnan(v)}


def _whitebox_curves(models: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """eps curves from white-box results: one curve per attack label with its eps part removed."""
    curves: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name, e in models.items():
        wb = e.get("whitebox")
        if not isinstance(wb, Mapping):
            continue
        for r in wb.get("results") or []:
            if not isinstance(r, Mapping) or r.get("eps") is None or r.get("source"):
                continue
            key = re.sub(r"-eps(?:[0-9.eE+-]+?|std)(?=-|@|$)", "", str(r.get("attack", "attack")))
            c = curves.setdefault(key, {}).setdefault(name, {"eps": [], "robust_accuracy": []})
            c["eps"].append(to_float(r["eps"]))
            c["robust_accuracy"].append(to_float(r.get("robust_accuracy")))
    # only attacks evaluated at two or more budgets make a curve
    return {k: v for k, v in curves.items() if any(len(set(c["eps"])) > 1 for c in v.values())}


# ----------------------------------------------------------------------------- drawing


def run_figures(run: Mapping[str, Any]) -> list[tuple[str, Figure]]:
    """``(file stem, Figure)`` for everything present in a :func:`load_run` result."""
    models = run["models"]
    display = _display_names(run)
    colors = _colors(run, display)
    trainings = {display[n]: _training(n, e) for n, e in models.items()}
    ds = _dataset_title(run)
    figs: list[tuple[str, Figure]] = []

    def attempt(stem: str, make: Any) -> None:
        try:
            figs.append((stem, make()))
        except (ValueError, TypeError, KeyError) as exc:
            log.error("could not draw %s: %s", stem, exc)

    # embeddings
    emb = [(n, e) for n, e in models.items() if e.get("embedding")]
    if emb:
        def panel(n: str, e: Mapping[str, Any], label: str) -> dict[str, Any]:
            return {"label": label, "features": e["embedding"]["features"], "labels": e["embedding"]["labels"],
                    "accuracy": _accuracy(e)}

        kinds = {n: _training(n, e) for n, e in emb}
        adv = [(n, e) for n, e in emb if kinds[n] == ADVERSARIAL]
        nat = [(n, e) for n, e in emb if kinds[n] != ADVERSARIAL]
        if adv and nat:
            def grid() -> Figure:
                rows = []
                for group in (nat, adv):
                    labels = [_base_label(n, e["info"]) for n, e in group]
                    unique = len(set(labels)) == len(labels)
                    rows.append([panel(n, e, lab if unique else display[n]) for (n, e), lab in zip(group, labels)])
                return plot_embedding_grid(rows[0], rows[1],
                                           title=f"2-D {ds}features \u2014 natural (top) vs adversarial (bottom) training")
            attempt("embeddings", grid)
        else:
            kind = next(iter(set(kinds.values()))) if len(set(kinds.values())) == 1 else None
            suffix = f" \u2014 {kind} training" if kind in (NATURAL, ADVERSARIAL) else ""
            labels = [_base_label(n, e["info"]) for n, e in emb]
            unique = len(set(labels)) == len(labels)
            attempt("embeddings", lambda: plot_embeddings(
                [panel(n, e, lab if unique else display[n]) for (n, e), lab in zip(emb, labels)],
                title=f"2-D {ds}features{suffix}"))

    # eps curves (sweeps; white-box results at several budgets when there is no sweep at all)
    sweeps: dict[str, dict[str, dict[str, Any]]] = {}
    norms: dict[str, str] = {}
    for n, e in models.items():
        for attack, s in e.get("sweeps", {}).items():
            sweeps.setdefault(attack, {})[display[n]] = {"eps": s.get("eps", []),
                                                          "robust_accuracy": s.get("robust_accuracy", [])}
            spec = s.get("spec")
            if isinstance(spec, Mapping) and spec.get("threat_model"):
                norms[attack] = str(spec["threat_model"])
    if not sweeps:
        sweeps = {a: {display[n]: c for n, c in v.items()} for a, v in _whitebox_curves(models).items()}
    for attack, curves in sweeps.items():
        attempt(f"eps-{safe_filename(attack)}", lambda a=attack, c=curves: plot_eps_curves(
            c, attack=a, norm=norms.get(a), colors=colors, trainings=trainings,
            title=f"{ds}robust accuracy vs eps \u2014 {a}" if ds else None))

    # robustness curves: per example the smallest perturbation over all attacks (minimum-norm and fixed-eps)
    by_norm: dict[str, dict[str, dict[str, Any]]] = {}
    for n, e in models.items():
        cv = e.get("curve")
        for tm, c in ((cv or {}).get("curves") or {}).items():
            if isinstance(c, Mapping):
                by_norm.setdefault(str(tm), {})[display[n]] = {"eps": c.get("eps", []),
                                                               "robust_accuracy": c.get("robust_accuracy", [])}
    for tm, curves in by_norm.items():
        norm = {"linf": "L-inf", "l2": "L2"}.get(tm, tm)
        attempt(f"robustness-curve-{safe_filename(tm)}", lambda c=curves, t=tm, nm=norm: plot_eps_curves(
            c, norm=t, colors=colors, trainings=trainings, markers=False,
            title=f"{ds}robustness curves, {nm} (smallest perturbation of any attack)"))

    # transfer matrices
    t = run.get("transfer")
    if isinstance(t, Mapping) and isinstance(t.get("matrices"), Mapping):
        rename = lambda x: display.get(x, x)  # noqa: E731
        for attack, m in t["matrices"].items():
            if not isinstance(m, Mapping):
                continue
            matrix = {rename(s): {rename(tg): v for tg, v in (row or {}).items()} for s, row in m.items()}
            src = [rename(s) for s in t.get("sources") or []] or None
            tgt = [rename(x) for x in t.get("targets") or []] or None
            attempt(f"transfer-{safe_filename(attack)}", lambda mm=matrix, a=attack, s=src, tg=tgt:
                    plot_transfer_matrix(mm, attack=a, sources=s, targets=tg))

    # Lipschitz
    lips = {display[n]: _lipschitz_values(e["lipschitz"]) for n, e in models.items()
            if isinstance(e.get("lipschitz"), Mapping)}
    lips = {k: v for k, v in lips.items() if v}
    if lips:
        attempt("lipschitz", lambda: plot_lipschitz(lips, log_scale=None, colors=colors, trainings=trainings,
                                                    title=f"Local Lipschitz estimates per model \u2014 {ds}".strip(" \u2014")))

    # training curves
    hist = {display[n]: e["train"]["history"] for n, e in models.items()
            if isinstance(e.get("train"), Mapping) and e["train"].get("history")}
    if hist:
        attempt("training", lambda: plot_training_curves(hist, trainings=trainings, colors=colors,
                                                         title=f"Training curves \u2014 {ds}".strip(" \u2014")))
    # unique stems (two attack labels may sanitise to the same name)
    seen: Counter[str] = Counter()
    out = []
    for stem, fig in figs:
        seen[stem] += 1
        out.append((stem if seen[stem] == 1 else f"{stem}-{seen[stem]}", fig))
    return out


def redraw_run(run_dir: str | Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Draw every figure whose data is present into ``RUN_DIR/figures``; return the written paths.

    Raises:
        MissingFileError: ``run_dir`` does not exist (a ``FileNotFoundError``).
    """
    run = load_run(run_dir)
    out_dir = Path(run["run_dir"]) / "figures"
    written: list[Path] = []
    for stem, fig in run_figures(run):
        written += save_figure(fig, out_dir / stem, formats)
    if not written:
        log.warning("nothing to draw in %s", run_dir)
    return written
