"""Leaderboard entries and their ranking.

A :class:`LeaderboardEntry` is one model of one protocol run, with RobustBench-like fields.
Entries are ranked by a metric (:func:`rank_entries`). The default, ``tracks``, splits the board
in two (:func:`boards`): naturally trained entries are ranked by the median minimal L-inf
perturbation of their robustness curve (:mod:`~robustbench_dc.minimum_norm.curve`; by the
worst case where no curve ran), adversarially trained ones by the worst-case robust accuracy (the
per-example worst case over the protocol's attack set, AutoAttack included), as RobustBench ranks.
Other metrics: ``worst_case``, ``clean_accuracy``, ``median:linf`` / ``median:l2`` / ``auc:linf``
/ ``auc:l2``, a white-box attack label (e.g. ``fgsm-linf-eps0.3000-s1``) or
``transfer:<source>:<attack>``.

Ties (:func:`tie_ranks`): a ranked number that has a 95% interval (the worst case and the curve's
numbers) gets the rank ``1 + the number of entries whose interval lies entirely above its own``,
the rule of Chatbot Arena's leaderboard; entries that share a rank are tied (two entries whose
intervals overlap share a rank unless a third entry's interval separates one of them from the top).
Entries are listed by rank, then by the number itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from robustbench_dc._text import did_you_mean
from robustbench_dc.errors import InvalidParameterError

__all__ = ["LeaderboardEntry", "DEFAULT_METRIC", "WORST_CASE_METRIC", "TRACKS_METRIC", "available_metrics",
           "metric_value", "metric_interval", "metric_title", "rank_entries", "tie_ranks", "boards",
           "resolve_metric", "latest_entries", "configuration_key"]

TRACKS_METRIC = "tracks"
WORST_CASE_METRIC = "worst_case"
DEFAULT_METRIC = TRACKS_METRIC
CLEAN_METRIC = "clean_accuracy"
TRANSFER_PREFIX = "transfer:"
#: the robustness curve's numbers, ``KIND:NORM`` (``median:linf``, ``auc:l2``, ...)
CURVE_KINDS = ("median", "auc")
_ALIASES = {
    "worst_case": WORST_CASE_METRIC, "worst-case": WORST_CASE_METRIC, "worst_case_robust_accuracy": WORST_CASE_METRIC,
    "clean_accuracy": CLEAN_METRIC, "clean": CLEAN_METRIC, "tracks": TRACKS_METRIC,
}


@dataclass
class LeaderboardEntry:
    """One model of one protocol run, as shown on the leaderboard (accuracies are fractions in [0, 1])."""

    name: str
    architecture: str
    operator: str
    operator_params: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    threat_model: str = ""
    eps: float | None = None
    clean_accuracy: float | None = None
    #: white-box robust accuracy per attack label
    robust_accuracy: dict[str, float | None] = field(default_factory=dict)
    #: per-example worst case over the protocol's attack set (AutoAttack-style)
    worst_case_robust_accuracy: float | None = None
    #: transfer robust accuracy: {source model: {attack label: accuracy}}
    transfer_robust_accuracy: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: names of the triggered gradient-masking flags
    flags: list[str] = field(default_factory=list)
    training: str | None = None
    recipe: Any = None
    date: str | None = None
    version: str | None = None
    run_id: str = ""
    protocol: str = ""
    n_test: int | None = None
    label: str | None = None
    attack_success_rate: dict[str, float | None] = field(default_factory=dict)
    lipschitz: dict[str, float | None] = field(default_factory=dict)
    seed: int | None = None
    checkpoint: str | None = None
    #: per ensemble attack label (AutoAttack), each component's budget and robust accuracy after it
    components: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: per attack label, its binarization test (attack success rate, construction failures, noise baseline)
    binarization: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the model's role in its protocol: ``model`` (an entry) or ``source`` (a transfer source only)
    role: str | None = None
    #: architecture parameters (width, ...) of the model
    arch_params: dict[str, Any] = field(default_factory=dict)
    #: the 95% bootstrap interval of the worst-case robust accuracy
    worst_case_interval: list[float] | None = None
    #: per threat model, the robustness curve's numbers (:class:`~robustbench_dc.minimum_norm.curve.RobustnessCurve`
    #: without the per-example norms): ``median``, ``median_interval``, ``auc``, ``eps``, ``robust_accuracy``, ...
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers become ``None``)."""
        return _finite(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeaderboardEntry:
        """The inverse of :meth:`to_dict` (unknown keys, e.g. ``rank``, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def entry_attack_labels(entries: Iterable[LeaderboardEntry]) -> list[str]:
    return sorted({a for e in entries for a in e.robust_accuracy})


def entry_transfer_pairs(entries: Iterable[LeaderboardEntry]) -> list[tuple[str, str]]:
    return sorted({(s, a) for e in entries for s, attacks in e.transfer_robust_accuracy.items() for a in attacks})


def available_metrics(entries: Iterable[LeaderboardEntry]) -> list[str]:
    """The metric names :func:`rank_entries` accepts for these entries."""
    entries = list(entries)
    norms = sorted({tm for e in entries for tm in e.curves})
    return ([TRACKS_METRIC, WORST_CASE_METRIC, CLEAN_METRIC] + [f"{k}:{tm}" for k in CURVE_KINDS for tm in norms]
            + entry_attack_labels(entries)
            + [f"{TRANSFER_PREFIX}{s}:{a}" for s, a in entry_transfer_pairs(entries)])


def resolve_metric(entries: Iterable[LeaderboardEntry], metric: str | None) -> str:
    """The canonical name of ``metric`` (``None`` -> the default); :class:`InvalidParameterError`
    (a ``ValueError``) listing the choices."""
    if metric is None:
        return DEFAULT_METRIC
    if metric in _ALIASES:
        return _ALIASES[metric]
    choices = available_metrics(entries)
    if metric in choices:
        return metric
    raise InvalidParameterError(f"unknown leaderboard metric {metric!r}{did_you_mean(metric, [*choices, *_ALIASES])}; "
                                f"available: {', '.join(choices)}")


def metric_value(entry: LeaderboardEntry, metric: str) -> float | None:
    """``entry``'s value of the canonical ``metric`` (``None`` when the entry lacks it)."""
    if metric == TRACKS_METRIC:
        return metric_value(entry, track_metric(entry, [entry]))
    if metric == WORST_CASE_METRIC:
        value = entry.worst_case_robust_accuracy
    elif _curve_metric(metric) is not None:
        kind, tm = _curve_metric(metric)  # type: ignore[misc]
        curve = entry.curves.get(tm)
        if curve is None:
            return None
        value = curve.get(kind)
        return math.inf if value is None else float(value)  # a median no attack reached is infinite
    elif metric == CLEAN_METRIC:
        value = entry.clean_accuracy
    elif metric in entry.robust_accuracy:
        value = entry.robust_accuracy[metric]
    elif metric.startswith(TRANSFER_PREFIX):
        value = None
        for source, attacks in entry.transfer_robust_accuracy.items():
            for attack, acc in attacks.items():
                if metric == f"{TRANSFER_PREFIX}{source}:{attack}":
                    value = acc
    else:
        value = None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _curve_metric(metric: str) -> tuple[str, str] | None:
    kind, sep, tm = metric.partition(":")
    return (kind, tm) if sep and kind in CURVE_KINDS and tm in ("linf", "l2") else None


def metric_interval(entry: LeaderboardEntry, metric: str) -> tuple[float, float] | None:
    """The 95% interval of ``entry``'s value of the canonical ``metric`` (None where it has none)."""
    if metric == TRACKS_METRIC:
        return metric_interval(entry, track_metric(entry, [entry]))
    if metric == WORST_CASE_METRIC:
        iv = entry.worst_case_interval
    elif _curve_metric(metric) is not None:
        kind, tm = _curve_metric(metric)  # type: ignore[misc]
        iv = entry.curves.get(tm, {}).get(f"{kind}_interval")
    else:
        iv = None
    if not iv or len(iv) != 2:
        return None
    return (math.inf if iv[0] is None else float(iv[0]), math.inf if iv[1] is None else float(iv[1]))


def track_metric(entry: LeaderboardEntry, board: Iterable[LeaderboardEntry]) -> str:
    """What ranks ``entry``'s track on a ``tracks`` board: the worst case for adversarial training; the
    median minimal L-inf perturbation for natural training where some entry of the ``board``'s track
    has a curve (else the worst case)."""
    if entry.training == "adversarial":
        return WORST_CASE_METRIC
    natural = [e for e in board if e.training != "adversarial"]
    return "median:linf" if any("linf" in e.curves for e in natural) else WORST_CASE_METRIC


def boards(entries: Iterable[LeaderboardEntry], metric: str | None = None
           ) -> list[tuple[str | None, str, list[LeaderboardEntry], list[int]]]:
    """The tables a leaderboard shows: ``(title, metric, entries best first, their ranks)``. A
    ``tracks`` board is two tables (natural, then adversarial training; an empty one is left out),
    any other metric one table (title None)."""
    entries = list(entries)
    metric = resolve_metric(entries, metric)
    if metric != TRACKS_METRIC:
        groups: list[tuple[str | None, str, list[LeaderboardEntry]]] = [(None, metric, entries)]
    else:
        natural = [e for e in entries if e.training != "adversarial"]
        adversarial = [e for e in entries if e.training == "adversarial"]
        groups = [(title, track_metric(group[0], group), group) for title, group in
                  (("Natural training", natural), ("Adversarial training", adversarial)) if group]
    out = []
    for title, m, group in groups:
        ranked = rank_entries(group, m)
        out.append((title, m, ranked, tie_ranks(ranked, m)))
    return out


def tie_ranks(ranked: list[LeaderboardEntry], metric: str) -> list[int]:
    """The ranks of ``ranked`` (as :func:`rank_entries` orders them): ``1 +`` the number of entries whose
    95% interval lies entirely above the entry's own; an entry without an interval counts its value as
    one. Entries that share a rank are tied."""
    bounds = []
    for e in ranked:
        value = metric_value(e, metric)
        iv = metric_interval(e, metric)
        bounds.append(iv if iv is not None else (None if value is None else (value, value)))
    ranks = []
    for i, b in enumerate(bounds):
        if b is None:
            ranks.append(len(ranked))
            continue
        ranks.append(1 + sum(1 for j, o in enumerate(bounds) if j != i and o is not None and o[0] > b[1]))
    return ranks


def metric_title(metric: str) -> str:
    """A human-readable name of the canonical ``metric``."""
    if metric == TRACKS_METRIC:
        return "track (natural: median minimal L-inf perturbation; adversarial: worst-case robust accuracy)"
    if metric == WORST_CASE_METRIC:
        return "worst-case robust accuracy"
    if _curve_metric(metric) is not None:
        kind, tm = _curve_metric(metric)  # type: ignore[misc]
        norm = {"linf": "L-inf", "l2": "L2"}[tm]
        return f"median minimal {norm} perturbation" if kind == "median" else f"area under the {norm} robustness curve"
    if metric == CLEAN_METRIC:
        return "clean accuracy"
    if metric.startswith(TRANSFER_PREFIX):
        source, _, attack = metric[len(TRANSFER_PREFIX):].partition(":")
        return f"transfer robust accuracy ({source} \u2192 {attack})"
    return f"robust accuracy under {metric}"


def configuration_key(entry: LeaderboardEntry) -> str:
    """What makes two rows the same leaderboard entry: the board (protocol, dataset, threat model,
    eps, test examples), the model's name and everything that defines it (architecture, operator
    and parameters, training, recipe, seed). A short sha256 of them."""
    config = [entry.protocol, entry.dataset, entry.threat_model, entry.eps, entry.n_test, entry.name,
              entry.architecture, entry.arch_params, entry.operator, entry.operator_params, entry.training,
              entry.recipe, entry.seed]
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _source_only(entry: LeaderboardEntry) -> bool:
    # Summaries written before roles were stored: a transfer source is the model with no clean accuracy.
    return entry.role == "source" or (entry.role is None and entry.clean_accuracy is None)


def latest_entries(entries: Iterable[LeaderboardEntry]) -> list[LeaderboardEntry]:
    """One row per leaderboard entry: of the rows of an identical configuration
    (:func:`configuration_key`), the newest (``entries`` oldest first, as the store returns them),
    without the models that are only transfer sources. When one name stands for several
    configurations on one board (a model re-run with other parameters), each is its own entry,
    named ``NAME [KEY]`` with its configuration key."""
    newest: dict[str, LeaderboardEntry] = {}
    for entry in entries:
        if not _source_only(entry):
            newest.pop(key := configuration_key(entry), None)  # re-insert: the order is the newest run's
            newest[key] = entry
    board = lambda e: (e.protocol, e.dataset, e.threat_model, e.eps, e.n_test, e.name)  # noqa: E731
    configs: dict[tuple[Any, ...], int] = {}
    for entry in newest.values():
        configs[board(entry)] = configs.get(board(entry), 0) + 1
    return [dataclasses.replace(e, name=f"{e.name} [{key}]") if configs[board(e)] > 1 else e
            for key, e in newest.items()]


def rank_entries(entries: Iterable[LeaderboardEntry], metric: str | None = None) -> list[LeaderboardEntry]:
    """``entries`` best first by ``metric`` (descending; ties by clean accuracy, then name, then run id).

    Entries without a value for the metric come last. Unknown metric -> ``ValueError``.
    """
    entries = list(entries)
    metric = resolve_metric(entries, metric)
    if metric == TRACKS_METRIC:
        return [e for _, _, ranked, _ in boards(entries, metric) for e in ranked]

    def key(e: LeaderboardEntry) -> tuple[Any, ...]:
        value = metric_value(e, metric)
        clean = metric_value(e, CLEAN_METRIC)
        return (value is None, -(value or 0.0), clean is None, -(clean or 0.0), e.name, e.run_id)

    ordered = sorted(entries, key=key)
    ranks = tie_ranks(ordered, metric)
    return [e for _, e in sorted(zip(ranks, ordered), key=lambda p: p[0])]  # stable: by rank, then the value
