"""Reading YAML from strangers: protocols, attack configurations and model cards are files users
exchange, so they are read as data only, and within bounds.

* ``yaml.SafeLoader`` semantics: no tag constructs a Python object (``!!python/object`` is an
  error, never a call);
* at most :data:`MAX_BYTES` (1 MiB) of text: a protocol is a page, not a payload;
* nesting at most :data:`MAX_DEPTH` (64) levels deep (a deeper document would exhaust the
  parser's recursion);
* at most :data:`MAX_VALUES` (100,000) values once every alias is expanded: anchors and aliases
  are welcome (protocols share recipes with them), a "billion laughs" document is not (a few
  hundred bytes that expand to billions of values would hang whatever walks them).

Violations raise :class:`YAMLLimitError` (a ``yaml.YAMLError``), reported like any invalid YAML.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["safe_load", "YAMLLimitError", "MAX_BYTES", "MAX_DEPTH", "MAX_VALUES"]

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_VALUES = 100_000


class YAMLLimitError(yaml.YAMLError):
    """A YAML document beyond the bounds of :func:`safe_load`."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = None


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses documents nested deeper than :data:`MAX_DEPTH`."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - PyYAML's hook
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLLimitError(f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values in ``node`` with every alias expanded (shared nodes counted at each use), memoised."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a cycle (not producible by the composer) counts once
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        total = 1
    memo[key] = total
    return total


def safe_load(text: str | bytes) -> Any:
    """Parse one YAML document within the bounds above (``yaml.safe_load`` otherwise).

    Raises:
        YAMLLimitError: the text is too large, too deep or expands to too many values.
        yaml.YAMLError: the text is not valid YAML.
    """
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_BYTES:
        raise YAMLLimitError(f"{size:,} bytes, more than the {MAX_BYTES:,} a configuration file may have")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_size(node, {})
        if values > MAX_VALUES:
            raise YAMLLimitError(f"expands to {values:,} values with its aliases, more than {MAX_VALUES:,} "
                                 "(a 'billion laughs' document?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()
