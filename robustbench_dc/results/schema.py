"""Where the results database is and what it holds: the SQLite schema (version
:data:`SCHEMA_VERSION`) and :func:`find_db`, which finds the database of the run made last."""

from __future__ import annotations

from pathlib import Path

from robustbench_dc.errors import MissingFileError

__all__ = ["SCHEMA", "SCHEMA_VERSION", "DEFAULT_DB", "WORST_CASE_LABEL", "CHILD_TABLES", "find_db"]

SCHEMA_VERSION = 1
DEFAULT_DB = Path("runs") / "results.sqlite"
WORST_CASE_LABEL = "worst-case"


def find_db(db: str | Path | None = None, *, root: str | Path = "runs") -> Path:
    """The results database to read: ``db`` when given, else the most recently modified of
    ``ROOT/results.sqlite`` (the leaderboard protocols' database) and ``ROOT/*/results.sqlite``
    (a run's own database, e.g. ``runs/quickstart/results.sqlite``): the run made last.

    Raises:
        MissingFileError: ``db`` does not exist, or no database was found under ``root``.
    """
    if db is not None:
        path = Path(db)
        if not path.is_file():
            raise MissingFileError(f"results database not found: {path} (run a protocol first, or pass --db)")
        return path
    root = Path(root)
    found = [p for p in [root / "results.sqlite", *sorted(root.glob("*/results.sqlite"))] if p.is_file()]
    if not found:
        raise MissingFileError(f"results database not found: no {root / 'results.sqlite'} nor "
                               f"{root / '*' / 'results.sqlite'} (run a protocol first, or pass --db)")
    return max(found, key=lambda p: p.stat().st_mtime_ns)


SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id          TEXT PRIMARY KEY,
    protocol        TEXT NOT NULL,
    protocol_path   TEXT,
    protocol_sha256 TEXT,
    dataset         TEXT NOT NULL,
    n_test          INTEGER,
    seed            INTEGER,
    data_sha256     TEXT,
    threat_model    TEXT,
    eps             REAL,
    started         TEXT,
    finished        TEXT,
    command         TEXT,
    versions        TEXT NOT NULL DEFAULT '{}',
    summary         TEXT NOT NULL,
    ingested        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_board ON runs (dataset, threat_model, eps, protocol);
CREATE TABLE IF NOT EXISTS models (
    run_id            TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    arch              TEXT NOT NULL,
    operator          TEXT NOT NULL,
    operator_params   TEXT NOT NULL DEFAULT '{}',
    label             TEXT,
    training          TEXT,
    recipe            TEXT,
    clean_accuracy    REAL,
    checkpoint        TEXT,
    checkpoint_sha256 TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS evaluations (
    id                  INTEGER PRIMARY KEY,
    run_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    kind                TEXT NOT NULL CHECK (kind IN ('whitebox', 'transfer', 'worst_case')),
    source              TEXT,
    attack              TEXT NOT NULL,
    threat_model        TEXT,
    eps                 REAL,
    backend             TEXT,
    robust_accuracy     REAL,
    attack_success_rate REAL,
    extra               TEXT NOT NULL DEFAULT '{}',
    CHECK ((kind = 'transfer') = (source IS NOT NULL)),
    FOREIGN KEY (run_id, model) REFERENCES models (run_id, name) ON DELETE CASCADE
);
CREATE UNIQUE INDEX IF NOT EXISTS evaluations_unique
    ON evaluations (run_id, model, kind, IFNULL(source, ''), attack);
CREATE TABLE IF NOT EXISTS flags (
    run_id    TEXT NOT NULL,
    model     TEXT NOT NULL,
    name      TEXT NOT NULL,
    triggered INTEGER NOT NULL CHECK (triggered IN (0, 1)),
    value     REAL,
    message   TEXT,
    PRIMARY KEY (run_id, model, name),
    FOREIGN KEY (run_id, model) REFERENCES models (run_id, name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS lipschitz (
    run_id TEXT NOT NULL,
    model  TEXT NOT NULL,
    kind   TEXT NOT NULL,
    value  REAL,
    PRIMARY KEY (run_id, model, kind),
    FOREIGN KEY (run_id, model) REFERENCES models (run_id, name) ON DELETE CASCADE
);
"""

CHILD_TABLES = ("evaluations", "flags", "lipschitz", "models")
