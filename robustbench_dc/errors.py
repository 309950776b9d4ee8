"""Errors caused by the user's input, on the ground floor of the package (no imports).

Every error a user can fix — a bad flag, a malformed ``KEY=VALUE``, an unknown name, an
out-of-range parameter, a missing file, an invalid card, recipe, protocol or attack
configuration — is a :class:`UserError`. The ``rbdc`` command reports a user error as one
line (``rbdc: error: ...``, one line per problem when the error lists several in
``errors``) with exit code 2; any other exception is a bug and keeps its traceback.

The subclasses also derive from the built-in exception that the library raised before
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``, ...), so ``except ValueError``
callers keep working. The domain errors live next to their code and derive from these:
``DataError`` (:mod:`robustbench_dc.data`), ``CardError`` (:mod:`robustbench_dc.zoo`),
``UnknownOperatorError`` (:mod:`robustbench_dc.operators`), ``RecipeError``
(:mod:`robustbench_dc.training`), ``ProtocolError`` (:mod:`robustbench_dc.protocol`),
``AttackConfigError`` and ``BackendMissingError`` (:mod:`robustbench_dc.attacks`),
``ReportError`` (:mod:`robustbench_dc.reproduce`).
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["UserError", "UsageError", "FieldError", "InvalidParameterError", "MissingFileError", "StorageError", "UserErrors",
           "gather"]


class UserError(Exception):
    """An error caused by the user's input; the message says what to change.

    A subclass that reports several problems at once keeps them, one line each, in a list
    attribute ``errors`` (:class:`~robustbench_dc.protocol.ProtocolError` does).
    """


class UsageError(UserError, ValueError):
    """Arguments that are malformed, missing or inconsistent (``KEY=VALUE`` syntax, a model
    given twice, an architecture without its dataset, ...)."""


class FieldError(UsageError):
    """A value that is wrong for one field of a configuration: ``field`` names the field, ``problem``
    says why (``str()`` is ``"field: problem"``). Callers that prefix a location tell fields apart by
    this type, never by parsing a message."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


class InvalidParameterError(UserError, ValueError):
    """A named thing or a parameter value that is unknown or out of range (an architecture,
    an operator or layer parameter, a metric, a number of examples, ...)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class StorageError(UserError, OSError):
    """A file could not be written: the disk is full, a size limit was reached, or the folder is
    read-only or not ours. Writes are atomic, so nothing already stored was changed.
    ``StorageError(errno, message)``; ``str()`` is the message alone."""

    def __str__(self) -> str:
        return str(self.strerror)


class UserErrors(UserError, ValueError):
    """Several user errors found at once (every problem of a command line); ``errors`` holds one
    line each, as :class:`~robustbench_dc.protocol.ProtocolError` does for a protocol file."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def gather(*steps: Callable[[], Any]) -> list[Any]:
    """Run every step, even after one failed, and report every user error among them at once.

    Returns the steps' results (None for a step that failed). One failure is re-raised as it is
    (its type kept); several become one :class:`UserErrors` listing each line. Other exceptions
    propagate at once.
    """
    results: list[Any] = []
    failed: list[UserError] = []
    for step in steps:
        try:
            results.append(step())
        except UserError as exc:
            results.append(None)
            failed.append(exc)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        lines: list[str] = []
        for error in failed:
            errors = getattr(error, "errors", None)
            lines += [str(e) for e in errors] if isinstance(errors, list) and errors else [str(error)]
        raise UserErrors(lines)
    return results
