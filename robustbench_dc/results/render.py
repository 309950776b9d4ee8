"""Render a leaderboard as Markdown, CSV, JSON or a static self-contained HTML page.

Markdown and HTML show accuracies as percentages with one decimal; CSV and JSON keep the raw
fractions (for further processing). Every string taken from the results is escaped: HTML with
``html.escape(..., quote=True)``, Markdown cells by escaping ``|``, ``\\``, ``<`` and ``>``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from robustbench_dc._atomic import atomic_write_text
from robustbench_dc.errors import InvalidParameterError
from robustbench_dc.results.leaderboard import (
    TRANSFER_PREFIX,
    LeaderboardEntry,
    boards,
    entry_attack_labels,
    entry_transfer_pairs,
    metric_title,
    resolve_metric,
)

__all__ = ["FORMATS", "render_leaderboard", "write_leaderboard", "caption"]

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "json", "html")
#: the tables of a board: (title, metric, entries best first, their ranks), see :func:`boards`
_Tables = list[tuple[str | None, str, list[LeaderboardEntry], list[int]]]
_MISSING = "\u2013"
_WARN = "\u26a0"


# ----------------------------------------------------------------------------- cell helpers


def _pct(value: float | None) -> str:
    return _MISSING if value is None else f"{100.0 * value:.1f}"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _model_cell(e: LeaderboardEntry) -> str:
    return e.name if not e.label or e.label == e.name else f"{e.name} ({e.label})"


def _operator_cell(e: LeaderboardEntry) -> str:
    return f"{e.operator} ({_params(e.operator_params)})" if e.operator_params else e.operator


def _training_cell(e: LeaderboardEntry) -> str:
    recipe = e.recipe.get("name") if isinstance(e.recipe, dict) else e.recipe
    parts = [str(p) for p in (e.training, recipe) if p]
    return " / ".join(parts) if parts else _MISSING


def _flags_cell(e: LeaderboardEntry) -> str:
    return f"{_WARN} {', '.join(e.flags)}" if e.flags else ""


def _binarization_cell(b: dict[str, Any] | None) -> tuple[str, float | None]:
    """Attack success on the binarization test, with the random-noise baseline beside it."""
    if not b or b.get("attack_success_rate") is None:
        return _MISSING, None
    asr, noise = b["attack_success_rate"], b.get("noise_success_rate")
    return f"{_pct(asr)} (noise {_pct(noise)}, n={b.get('n_valid')})", asr


def _norm(value: float | None) -> str:
    if value is None:
        return _MISSING
    return "\u221e" if value == float("inf") else f"{value:.3g}"


def _interval(iv: Any, show: Any = _norm) -> str:
    if not iv or len(iv) != 2:
        return ""
    lo, hi = (float("inf") if v is None else v for v in iv)
    return f" [{show(lo)}, {show(hi)}]"


def _curve_cell(e: LeaderboardEntry, tm: str, kind: str) -> tuple[str, float | None]:
    c = e.curves.get(tm)
    if c is None:
        return _MISSING, None
    value = c.get(kind)
    if kind == "median" and value is None:
        value = float("inf")
    if kind == "robust_accuracy_eps_max":
        return _pct(value) + _interval(c.get("robust_accuracy_interval"), _pct), value
    return _norm(value) + _interval(c.get(f"{kind}_interval")), value


def _curve_checks(e: LeaderboardEntry) -> str:
    """Where the minimum-norm attacks fell short: examples a fixed-budget attack broke that they left
    robust, and examples no attack broke."""
    notes = []
    for tm, c in e.curves.items():
        missed = sum((c.get("missed") or {}).values())
        if missed:
            notes.append(f"{tm}: fixed-eps attacks broke {missed} the minimum-norm attacks missed")
        if c.get("unbroken"):
            notes.append(f"{tm}: {c['unbroken']} never broken")
    return f"{_WARN} " + "; ".join(notes) if notes else ("ok" if e.curves else "")


def _eps(value: float | None) -> str:
    return _MISSING if value is None else f"{value:.4g}"


def _unique(values: Iterable[Any]) -> str:
    seen = list(dict.fromkeys(str(v) for v in values if v is not None))
    return ", ".join(seen) if seen else _MISSING


def caption(entries: Sequence[LeaderboardEntry], metric: str) -> str:
    """One line naming the dataset(s), threat model(s), eps, n_test and the ranking metric."""
    eps = list(dict.fromkeys(_eps(e.eps) for e in entries)) or [_MISSING]
    return (f"Dataset: {_unique(e.dataset for e in entries)} \u00b7 threat model: "
            f"{_unique(e.threat_model for e in entries)} \u00b7 eps = {', '.join(eps)} \u00b7 "
            f"n_test = {_unique(e.n_test for e in entries)} \u00b7 ranked by {metric_title(metric)}")


def _columns(entries: Sequence[LeaderboardEntry]) -> list[tuple[str, str, Any]]:
    """(header, kind 'num'|'text', getter -> (display text, sort value)) of the displayed table."""
    cols: list[tuple[str, str, Any]] = [
        ("Model", "text", lambda e: (_model_cell(e), e.name)),
        ("Architecture", "text", lambda e: (e.architecture, e.architecture)),
        ("Operator", "text", lambda e: (_operator_cell(e), _operator_cell(e))),
        ("Training", "text", lambda e: (_training_cell(e), _training_cell(e))),
        ("Clean (%)", "num", lambda e: (_pct(e.clean_accuracy), e.clean_accuracy)),
    ]
    norms = [tm for tm in ("linf", "l2") if any(tm in e.curves for e in entries)]
    names = {"linf": "L-inf", "l2": "L2"}
    for tm in norms:
        cols.append((f"Median minimal {names[tm]} [95% CI]", "num", lambda e, t=tm: _curve_cell(e, t, "median")))
    for tm in norms:
        eps = next((e.curves[tm].get("eps_max") for e in entries if tm in e.curves), None)
        cols.append((f"AUC {names[tm]} on [0, {_eps(eps)}] [95% CI]", "num", lambda e, t=tm: _curve_cell(e, t, "auc")))
    cols.append(("Worst-case (%) [95% CI]", "num", lambda e: (
        _pct(e.worst_case_robust_accuracy) + _interval(e.worst_case_interval, _pct), e.worst_case_robust_accuracy)))
    for attack in entry_attack_labels(entries):
        cols.append((f"{attack} (%)", "num",
                     lambda e, a=attack: (_pct(e.robust_accuracy.get(a)), e.robust_accuracy.get(a))))
        if any(attack in e.binarization for e in entries):
            cols.append((f"{attack} binarization test: attack success (%)", "num",
                         lambda e, a=attack: _binarization_cell(e.binarization.get(a))))
    for source, attack in entry_transfer_pairs(entries):
        def get(e: LeaderboardEntry, s: str = source, a: str = attack) -> tuple[str, float | None]:
            v = e.transfer_robust_accuracy.get(s, {}).get(a)
            return _pct(v), v
        cols.append((f"transfer {source} \u2192 {attack} (%)", "num", get))
    if norms:
        cols.append(("Curve checks", "text", lambda e: (_curve_checks(e), _curve_checks(e))))
    cols += [
        ("Flags", "text", lambda e: (_flags_cell(e), _flags_cell(e))),
        ("Date", "text", lambda e: ((e.date or _MISSING)[:10], e.date or "")),
        ("Version", "text", lambda e: (e.version or _MISSING, e.version or "")),
        ("Run", "text", lambda e: (e.run_id, e.run_id)),
    ]
    return cols


# ----------------------------------------------------------------------------- formats


def _md_escape(text: str) -> str:
    text = " ".join(str(text).splitlines())
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;"))


def _render_md(tables: _Tables, metric: str) -> str:
    lines: list[str] = []
    for title, m, ranked, ranks in tables:
        cols = _columns(ranked)
        header = ["#"] + [c[0] for c in cols]
        align = ["---:"] + ["---:" if c[1] == "num" else ":---" for c in cols]
        if title:
            lines += [f"**{_md_escape(title)}**", ""]
        lines += [f"_{_md_escape(caption(ranked, m))}_", "",
                  "| " + " | ".join(_md_escape(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
        for rank, e in zip(_rank_labels(ranks), ranked):
            cells = [rank] + [_md_escape(get(e)[0]) for _, _, get in cols]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if any(len(set(r)) < len(r) for *_, r in tables):
        lines.append("_Equal ranks are ties: an entry's rank is 1 + the number of entries whose 95% interval lies "
                     "entirely above its own._")
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"


def _rank_labels(ranks: list[int]) -> list[str]:
    """``2=`` for a rank shared with another entry (a tie), ``2`` otherwise."""
    return [f"{r}=" if ranks.count(r) > 1 else str(r) for r in ranks]


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


#: the binarization test's fields in the CSV, one column each per tested attack
_BINARIZATION_CSV = ("attack_success_rate", "noise_success_rate", "construction_failure_rate", "n_valid", "n_points")


def _csv_binarization(b: dict[str, Any] | None, key: str) -> str:
    value = (b or {}).get(key)
    if value is None:
        return ""
    return str(value) if key.startswith("n_") else _csv_number(value)


def _render_csv(tables: _Tables, metric: str) -> str:
    ranked = [e for *_, group, _ in tables for e in group]
    ranks = [(t or "", r) for t, _, group, rs in tables for r in rs]
    attacks = entry_attack_labels(ranked)
    pairs = entry_transfer_pairs(ranked)
    tested = [a for a in attacks if any(a in e.binarization for e in ranked)]
    norms = [tm for tm in ("linf", "l2") if any(tm in e.curves for e in ranked)]
    curve_keys = ("median", "median_interval", "auc", "auc_interval", "robust_accuracy_eps_max", "unbroken")
    header = (["rank", "table", "name", "label", "architecture", "operator", "operator_params", "dataset",
               "threat_model", "eps", "n_test", "clean_accuracy", "worst_case_robust_accuracy",
               "worst_case_interval"] + [f"curve:{tm}:{k}" for tm in norms for k in curve_keys]
              + [f"robust_accuracy:{a}" for a in attacks] + [f"{TRANSFER_PREFIX}{s}:{a}" for s, a in pairs]
              + [f"binarization:{a}:{k}" for a in tested for k in _BINARIZATION_CSV]
              + ["flags", "training", "recipe", "date", "version", "protocol", "run_id"])
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    for (table, rank), e in zip(ranks, ranked):
        writer.writerow(
            [rank, table, e.name, e.label or "", e.architecture, e.operator,
             json.dumps(e.operator_params, sort_keys=True), e.dataset, e.threat_model, _csv_number(e.eps),
             "" if e.n_test is None else e.n_test, _csv_number(e.clean_accuracy),
             _csv_number(e.worst_case_robust_accuracy), json.dumps(e.worst_case_interval)]
            + [json.dumps(e.curves.get(tm, {}).get(k)) for tm in norms for k in curve_keys]
            + [_csv_number(e.robust_accuracy.get(a)) for a in attacks]
            + [_csv_number(e.transfer_robust_accuracy.get(s, {}).get(a)) for s, a in pairs]
            + [_csv_binarization(e.binarization.get(a), k) for a in tested for k in _BINARIZATION_CSV]
            + [";".join(e.flags), e.training or "", "" if e.recipe is None else json.dumps(e.recipe, sort_keys=True),
               e.date or "", e.version or "", e.protocol, e.run_id])
    return buf.getvalue()


def _render_json(tables: _Tables, metric: str) -> str:
    rows = [{"table": title, "ranked_by": m, "rank": rank, **e.to_dict()}
            for title, m, ranked, ranks in tables for rank, e in zip(ranks, ranked)]
    return json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
table.leaderboard { border-collapse: collapse; font-size: 0.9em; }
table.leaderboard caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.5em 0; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
table.leaderboard th { background: #f3f3f3; cursor: pointer; user-select: none; white-space: nowrap; }
table.leaderboard th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.leaderboard th[aria-sort="descending"]::after { content: " \\25BC"; }
table.leaderboard td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.leaderboard tbody tr:nth-child(even) { background: #fafafa; }
table.leaderboard td.flags { color: #a15c00; }
footer { margin-top: 1em; font-size: 0.8em; color: #666; }
"""

# Click a header to sort by that column: numbers by their data-sort value (missing values last),
# text alphabetically; a second click reverses the order.
_JS = """
(function () {
  function key(cell, numeric) {
    var v = cell.getAttribute("data-sort");
    if (v === null) { v = cell.textContent; }
    if (!numeric) { return v.toLowerCase(); }
    return v === "" ? null : parseFloat(v);
  }
  document.querySelectorAll("table.leaderboard").forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, col) {
      th.addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "num";
        var current = th.getAttribute("aria-sort");
        var ascending = current ? current === "descending" : !numeric;
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
          if (x === y) { return 0; }
          if (x === null || (numeric && isNaN(x))) { return 1; }
          if (y === null || (numeric && isNaN(y))) { return -1; }
          var c = numeric ? x - y : (x < y ? -1 : 1);
          return ascending ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _render_html(tables: _Tables, metric: str, title: str = "robustbench-dc leaderboard") -> str:
    sections = []
    for heading, m, ranked, ranks in tables:
        cols = _columns(ranked)
        head = ['<th data-type="num" scope="col">#</th>'] + [
            f'<th data-type="{kind}" scope="col">{_esc(name)}</th>' for name, kind, _ in cols]
        body = []
        for rank, label, e in zip(ranks, _rank_labels(ranks), ranked):
            cells = [f'<td class="num" data-sort="{rank}">{_esc(label)}</td>']
            for _, kind, get in cols:
                text, sort = get(e)
                if kind == "num":
                    cells.append(f'<td class="num" data-sort="{"" if sort is None else _esc(repr(float(sort)))}">'
                                 f"{_esc(text)}</td>")
                else:
                    cls = ' class="flags"' if text.startswith(_WARN) else ""
                    cells.append(f'<td{cls} data-sort="{_esc(sort)}">{_esc(text)}</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        sections += ([f"<h2>{_esc(heading)}</h2>"] if heading else []) + [
            '<table class="leaderboard">', f"<caption>{_esc(caption(ranked, m))}</caption>",
            "<thead><tr>" + "".join(head) + "</tr></thead>", "<tbody>", *body, "</tbody>", "</table>"]
    from robustbench_dc.version import VERSION

    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_esc(title)}</h1>",
        *sections,
        f"<footer>Accuracies in %; {_esc(_WARN)} marks triggered gradient-masking flags; brackets are 95% bootstrap "
        f"intervals over the test examples, and equal ranks (2=) are ties: an entry's rank is 1 + the number of "
        f"entries whose interval lies entirely above its own. Click a column header to sort. Generated by "
        f"robustbench-dc {_esc(VERSION)}.</footer>",
        f"<script>{_JS}</script>",
        "</body>",
        "</html>",
        "",
    ])


_RENDERERS = {"md": _render_md, "csv": _render_csv, "json": _render_json, "html": _render_html}
_ALIASES = {"markdown": "md", "htm": "html"}


def _format(fmt: str) -> str:
    fmt = _ALIASES.get(fmt.lower(), fmt.lower())
    if fmt not in _RENDERERS:
        raise InvalidParameterError(f"unknown leaderboard format {fmt!r}; available: {', '.join(FORMATS)}")
    return fmt


def render_leaderboard(entries: Iterable[LeaderboardEntry], fmt: str = "md", metric: str | None = None,
                       ranked: bool = True) -> str:
    """The leaderboard of ``entries`` ranked by ``metric`` (default ``tracks``: one table per training track,
    see :func:`~robustbench_dc.results.leaderboard.boards`) as text.

    ``fmt`` is ``md``, ``csv``, ``json`` or ``html``; ``ranked=False`` keeps the order of ``entries``
    (the history of runs). Unknown format or metric -> ``ValueError``.
    """
    entries = list(entries)
    fmt = _format(fmt)
    canonical = resolve_metric(entries, metric)
    tables: _Tables = (boards(entries, canonical) if ranked
                       else [(None, canonical, entries, list(range(1, len(entries) + 1)))])
    return _RENDERERS[fmt](tables, canonical)


def write_leaderboard(entries: Iterable[LeaderboardEntry], out_dir: str | Path, formats: Iterable[str] = FORMATS,
                      metric: str | None = None, stem: str = "leaderboard", ranked: bool = True) -> list[Path]:
    """Write ``out_dir/<stem>.<fmt>`` for each format (atomically: temp file + ``os.replace``).

    Everything is rendered before anything is written, so a bad format or metric writes nothing.
    Returns the written paths.
    """
    entries = list(entries)
    out = Path(out_dir)
    rendered = {fmt: render_leaderboard(entries, fmt, metric, ranked) for fmt in dict.fromkeys(_format(f) for f in formats)}
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, text in rendered.items():
        path = out / f"{stem}.{fmt}"
        atomic_write_text(path, text)
        log.info("wrote %s (%d entries)", path, len(entries))
        paths.append(path)
    return paths

