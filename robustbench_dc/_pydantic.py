"""Pydantic validation errors flattened in one place: every configuration the suite validates
(protocols, attack specs, recipes, model cards, ``--resources``) reports its problems as
``field.path: message, got VALUE``, one per problem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError

from robustbench_dc.params import parse_eps

__all__ = ["Problem", "problems", "one_line", "Eps"]

#: A budget field: a number, or a fraction string such as ``"8/255"`` (RobustBench's spelling).
Eps = Annotated[float, BeforeValidator(parse_eps)]


def _format_loc(loc: tuple[Any, ...]) -> str:
    """``("models", 0, "recipe")`` -> ``"models[0].recipe"``; pydantic's union-branch and validator
    names (``str``, ``function-after[...]``, ``list[...]``) carry no information and are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part == "str" or "[" in part or part.startswith("function")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Problem:
    """One problem of a validation error.

    Attributes:
        loc: the field's path, ``models[0].recipe`` ("" for the whole object).
        path: the same as a tuple, union-branch names removed (for looking the field up).
        message: pydantic's message, without its ``Value error, `` prefix nor a repeated field name
            (a validator's ``ValueError("eps: must be > 0")`` on field ``eps`` reads ``must be > 0``).
        kind: pydantic's error type (``missing``, ``extra_forbidden``, ``literal_error``, ...).
        input: the value that was refused.
        ctx: pydantic's context of the error (``expected`` of a literal, ...).
    """

    loc: str
    path: tuple[Any, ...]
    message: str
    kind: str
    input: Any
    ctx: dict[str, Any]

    @property
    def got(self) -> str:
        """``", got VALUE"`` for a value worth showing (not for a missing field or a whole mapping)."""
        return "" if self.kind == "missing" or isinstance(self.input, dict) else f", got {_short(self.input)}"

    def line(self, where: str = "", *, got: bool = True) -> str:
        """``where.loc: message, got VALUE`` (``where``: a prefix such as ``evaluation.attacks[0]``)."""
        loc = ".".join(p for p in (where, self.loc) if p)
        return (f"{loc}: " if loc else "") + self.message + (self.got if got else "")


def problems(exc: ValidationError) -> list[Problem]:
    """Every problem of ``exc``, in pydantic's order, without duplicates."""
    out: list[Problem] = []
    seen = set()
    for e in exc.errors():
        path = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function"))))
        loc = _format_loc(path)
        msg = e["msg"].removeprefix("Value error, ")
        if loc and msg.startswith(f"{loc}: "):
            msg = msg[len(loc) + 2:]
        problem = Problem(loc, path, msg, e["type"], e.get("input"), dict(e.get("ctx") or {}))
        key = (loc, msg, problem.got)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out


def one_line(exc: ValidationError, *, got: bool = False) -> str:
    """Every problem of ``exc`` in one line: ``field: message; field: message``."""
    return "; ".join(p.line(got=got) for p in problems(exc))
