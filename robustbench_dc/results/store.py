"""The results store: every protocol run's summary, in one SQLite database.

The database uses the standard library's :mod:`sqlite3` in WAL mode with a busy timeout, so
several processes (parallel protocol runs, a leaderboard being rendered meanwhile) may use the
same file at once. Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, rolled
back on any error: an ingest either stores a whole run or nothing, and re-ingesting a
``run_id`` replaces that run's rows.

Tables (see :data:`~robustbench_dc.results.schema.SCHEMA`): ``runs``, ``models``, ``evaluations`` (kind ``whitebox``,
``transfer`` or ``worst_case``), ``flags``, ``lipschitz`` and ``schema_version``.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from robustbench_dc.errors import StorageError, UserError
from robustbench_dc.results.leaderboard import LeaderboardEntry, latest_entries
from robustbench_dc.results.schema import CHILD_TABLES, DEFAULT_DB, SCHEMA, SCHEMA_VERSION, WORST_CASE_LABEL, find_db
from robustbench_dc.results.validate import (
    as_int,
    as_json,
    as_mapping,
    as_number,
    as_text,
    present_value,
    required_value,
    split_accuracy,
)

__all__ = ["ResultsStore", "ResultsStoreError", "SCHEMA_VERSION", "SCHEMA", "DEFAULT_DB", "find_db"]  # the last four
# live in robustbench_dc.results.schema and are re-exported here for the store's users

log = logging.getLogger(__name__)


class ResultsStoreError(UserError, ValueError):
    """A results database this version cannot use: not an SQLite file, another application's
    database, or one written by a newer robustbench-dc."""


# ----------------------------------------------------------------------------- the store

#: The columns the store reads, per table: a database whose tables lack one is not ours.
_REQUIRED_COLUMNS = {
    "runs": {"run_id", "protocol", "dataset", "threat_model", "eps", "n_test", "seed", "versions", "summary",
             "ingested"},
    "models": {"run_id", "name", "arch", "operator", "operator_params", "label", "training", "recipe",
               "clean_accuracy", "checkpoint"},
    "evaluations": {"run_id", "model", "kind", "source", "attack", "robust_accuracy", "attack_success_rate", "extra"},
    "flags": {"run_id", "model", "name", "triggered"},
    "lipschitz": {"run_id", "model", "kind", "value"},
}
_SQLITE_HEADER = b"SQLite format 3\x00"


def _sqlite_error_name(exc: sqlite3.Error) -> str:
    """SQLite's name of an error (``SQLITE_FULL``, ``SQLITE_IOERR_WRITE``, ``SQLITE_BUSY``, ...): its
    ``sqlite_errorname`` (Python >= 3.11); on older Pythons, the error its message names."""
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        return str(name)
    text = str(exc).lower()  # pragma: no cover - Python 3.10
    return ("SQLITE_FULL" if "full" in text else "SQLITE_IOERR" if "disk i/o" in text
            else "SQLITE_BUSY" if "locked" in text else "SQLITE_ERROR")


def _disk_error(exc: sqlite3.Error) -> bool:
    """A full disk, a size limit or an I/O error."""
    return _sqlite_error_name(exc).startswith(("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN"))


def _busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock."""
    return _sqlite_error_name(exc).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _check_header(path: Path) -> None:
    """A file that exists must be empty or start with SQLite's header (SQLite itself notices a
    foreign file only at the first query, some of which would write)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise ResultsStoreError(f"{path}: a folder, not a results database") from None
    if head and head != _SQLITE_HEADER[:len(head)] or 0 < len(head) < len(_SQLITE_HEADER):
        raise ResultsStoreError(f"{path}: not a robustbench-dc results database (not an SQLite file); "
                                "nothing was changed")



class ResultsStore:
    """A SQLite database of protocol runs (safe for concurrent writers in several processes).

    >>> with ResultsStore("runs/results.sqlite") as store:       # doctest: +SKIP
    ...     store.ingest_summary(summary)
    ...     board = store.entries(dataset="mnist-sample")
    """

    def __init__(self, path: str | Path = DEFAULT_DB, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _check_header(self.path)
        # isolation_level=None: no implicit transactions; every write opens BEGIN IMMEDIATE itself.
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=self.timeout, isolation_level=None)
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._check_schema()
            self._enable_wal()
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            self.close()
            if isinstance(exc, sqlite3.OperationalError):  # a full disk, a lock: not a foreign file
                if _disk_error(exc):
                    raise StorageError(errno.ENOSPC, f"cannot write {self.path}: {exc}; nothing already stored "
                                                     "was changed") from exc
                raise
            raise ResultsStoreError(f"{self.path}: not a robustbench-dc results database "
                                    f"(SQLite: {' '.join(str(exc).split())}); nothing was changed") from None
        except ResultsStoreError:
            self.close()
            raise

    @staticmethod
    def check(path: str | Path) -> None:
        """Refuse, without changing or creating anything, a file at ``path`` that this store would
        refuse (not SQLite, another application's database, a newer schema); a missing file is fine."""
        path = Path(path)
        if not path.exists() or (path.is_file() and path.stat().st_size == 0):
            return
        _check_header(path)
        # immutable: read the file as it is, creating no -wal/-shm file and taking no lock
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro&immutable=1", uri=True)
        try:
            probe = ResultsStore.__new__(ResultsStore)
            probe.path, probe._conn = path, conn
            probe._check_schema()
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ResultsStoreError(f"results store {path} has schema version {version}; this robustbench-dc "
                                        f"understands up to {SCHEMA_VERSION} (upgrade robustbench-dc)")
        except sqlite3.OperationalError:
            return  # cannot be read now (an I/O error): the store reports it when it opens the file
        except sqlite3.DatabaseError as exc:
            raise ResultsStoreError(f"{path}: not a robustbench-dc results database "
                                    f"(SQLite: {' '.join(str(exc).split())}); nothing was changed") from None
        finally:
            conn.close()

    # -- connection -----------------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection (``ValueError`` once closed)."""
        if self._conn is None:
            raise ValueError(f"results store {self.path} is closed")
        return self._conn

    def _check_schema(self) -> None:
        """A database that holds tables must be this suite's (its ``schema_version`` and tables):
        another application's SQLite file is refused, never read as an empty board or written into."""
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return  # a new (empty) database: the schema is created
        ours = {"schema_version", "runs", *CHILD_TABLES}
        if not ours <= tables:
            missing = sorted(ours - tables)
            raise ResultsStoreError(f"{self.path}: not a robustbench-dc results database (it has the tables "
                                    f"{', '.join(sorted(tables)) or 'none'}; missing {', '.join(missing)}); "
                                    "nothing was changed (pass another --db)")
        for table, columns in _REQUIRED_COLUMNS.items():
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            if not columns <= have:
                raise ResultsStoreError(f"{self.path}: not a robustbench-dc results database (table {table} lacks "
                                        f"{', '.join(sorted(columns - have))}); nothing was changed")
        version = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if not isinstance(version, int):
            raise ResultsStoreError(f"{self.path}: not a robustbench-dc results database (no schema version); "
                                    "nothing was changed")

    def _enable_wal(self) -> None:
        # Switching to WAL takes an exclusive lock; another process doing the same at the same moment
        # may make it fail immediately despite busy_timeout, so retry for up to `timeout` seconds.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            log.warning("results store %s: journal mode is %s, not WAL", self.path, mode)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction; rolled back on any error."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _disk_error(exc):  # full, or an I/O error
                raise StorageError(errno.ENOSPC, f"cannot write {self.path}: {exc}; the transaction was rolled "
                                                 "back and nothing already stored was changed") from exc
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same snapshot."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        with self._write() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0]
            if version is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise ResultsStoreError(f"results store {self.path} has schema version {version}; this robustbench-dc "
                                 f"understands up to {SCHEMA_VERSION} (upgrade robustbench-dc)")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # -- writing --------------------------------------------------------------------------------

    def ingest_summary(self, summary: Mapping[str, Any]) -> str:
        """Store one run's summary (replacing any earlier rows of its ``run_id``); returns the run_id.

        Everything happens in one transaction: a summary that turns out to be invalid part-way
        (``ValueError`` naming the offending key) leaves the database exactly as it was.
        """
        run_id = str(required_value(summary, "run_id", ""))
        if not run_id.strip():
            raise ValueError("results summary: run_id is empty")
        protocol = required_value(summary, "protocol", "")
        if isinstance(protocol, str):  # tolerate a bare protocol name
            protocol = {"name": protocol}
        protocol_name = str(required_value(protocol, "name", "protocol"))
        dataset = str(required_value(summary, "dataset", ""))
        # a protocol without attacks has no threat model / eps: the keys must exist, None is allowed
        threat_model = as_text(present_value(summary, "threat_model"))
        eps = as_number(present_value(summary, "eps"), "eps")
        models = required_value(summary, "models", "")
        if not isinstance(models, Mapping):
            raise ValueError(f"results summary: models must be a mapping of model name to results, "
                             f"got {type(models).__name__}")
        versions = as_mapping(summary.get("versions"), "versions")

        with self._write() as conn:
            replaced = conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None
            for table in CHILD_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            conn.execute(
                "INSERT INTO runs (run_id, protocol, protocol_path, protocol_sha256, dataset, n_test, seed, "
                "data_sha256, threat_model, eps, started, finished, command, versions, summary, ingested) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, protocol_name, as_text(protocol.get("path")), as_text(protocol.get("sha256")), dataset,
                 as_int(summary.get("n_test"), "n_test"), as_int(summary.get("seed"), "seed"),
                 as_text(summary.get("data_sha256")), threat_model, eps, as_text(summary.get("started")),
                 as_text(summary.get("finished")), as_text(summary.get("command")), as_json(dict(versions)),
                 as_json(summary), datetime.now(timezone.utc).isoformat(timespec="seconds")))
            for name, model in models.items():
                self._insert_model(conn, run_id, str(name), model, threat_model, eps)
        log.info("results store %s: %s run %s (%d models)", self.path, "replaced" if replaced else "added",
                 run_id, len(models))
        return run_id

    @staticmethod
    def _insert_model(conn: sqlite3.Connection, run_id: str, name: str, model: Any,
                      threat_model: str | None, eps: float | None) -> None:
        where = f"models.{name}"
        if not isinstance(model, Mapping):
            raise ValueError(f"results summary: {where} must be a mapping, got {type(model).__name__}")
        recipe = model.get("recipe")
        conn.execute(
            "INSERT INTO models (run_id, name, arch, operator, operator_params, label, training, recipe, "
            "clean_accuracy, checkpoint, checkpoint_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, name, str(required_value(model, "arch", where)), str(required_value(model, "operator", where)),
             as_json(dict(as_mapping(model.get("operator_params"), f"{where}.operator_params"))),
             as_text(model.get("label")), as_text(model.get("training")), None if recipe is None else as_json(recipe),
             as_number(model.get("clean_accuracy"), f"{where}.clean_accuracy", fraction=True),
             as_text(model.get("checkpoint")), as_text(model.get("checkpoint_sha256"))))

        insert_eval = ("INSERT INTO evaluations (run_id, model, kind, source, attack, threat_model, eps, backend, "
                       "robust_accuracy, attack_success_rate, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        for attack, result in as_mapping(model.get("whitebox"), f"{where}.whitebox").items():
            w = f"{where}.whitebox.{attack}"
            acc, asr, extra = split_accuracy(result, w)
            info = result if isinstance(result, Mapping) else {}
            conn.execute(insert_eval, (
                run_id, name, "whitebox", None, str(attack), as_text(info.get("threat_model") or threat_model),
                as_number(info.get("eps", eps), f"{w}.eps"), as_text(info.get("backend")), acc, asr, as_json(extra)))

        worst = model.get("worst_case")
        if worst is not None:
            w = f"{where}.worst_case"
            acc, asr, extra = split_accuracy(worst, w)
            conn.execute(insert_eval, (run_id, name, "worst_case", None, WORST_CASE_LABEL, threat_model, eps,
                                       None, acc, asr, as_json(extra)))

        for source, attacks in as_mapping(model.get("transfer"), f"{where}.transfer").items():
            for attack, result in as_mapping(attacks, f"{where}.transfer.{source}").items():
                w = f"{where}.transfer.{source}.{attack}"
                acc, asr, extra = split_accuracy(result, w)
                info = result if isinstance(result, Mapping) else {}
                conn.execute(insert_eval, (
                    run_id, name, "transfer", str(source), str(attack), as_text(info.get("threat_model") or threat_model),
                    as_number(info.get("eps", eps), f"{w}.eps"), as_text(info.get("backend")), acc, asr, as_json(extra)))

        for flag, result in as_mapping(model.get("flags"), f"{where}.flags").items():
            w = f"{where}.flags.{flag}"
            if isinstance(result, Mapping):
                triggered = result.get("triggered", False)
                value = result.get("value")
                value = as_number(float(value) if isinstance(value, bool) else value, f"{w}.value", finite=False)
                message = as_text(result.get("message"))
            else:
                triggered, value, message = result, None, None
            if not isinstance(triggered, (bool, int)):
                raise ValueError(f"results summary: {w}.triggered must be a boolean, got {triggered!r}")
            conn.execute("INSERT INTO flags (run_id, model, name, triggered, value, message) VALUES (?, ?, ?, ?, ?, ?)",
                         (run_id, name, str(flag), int(bool(triggered)), value, message))

        for kind, value in as_mapping(model.get("lipschitz"), f"{where}.lipschitz").items():
            if isinstance(value, Mapping):
                value = value.get("value")
            conn.execute("INSERT INTO lipschitz (run_id, model, kind, value) VALUES (?, ?, ?, ?)",
                         (run_id, name, str(kind), as_number(value, f"{where}.lipschitz.{kind}", finite=False)))

    def delete_run(self, run_id: str) -> bool:
        """Remove one run and all its rows; ``True`` when it existed."""
        with self._write() as conn:
            for table in CHILD_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

    # -- reading --------------------------------------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        """Every stored run (without its full summary), oldest first, each with ``models`` (names)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT run_id, protocol, protocol_path, protocol_sha256, dataset, n_test, seed, data_sha256, "
                "threat_model, eps, started, finished, command, versions, ingested FROM runs "
                "ORDER BY COALESCE(finished, started, ingested), run_id").fetchall()
            names: dict[str, list[str]] = {}
            for r in conn.execute("SELECT run_id, name FROM models ORDER BY run_id, rowid"):
                names.setdefault(r["run_id"], []).append(r["name"])
        out = []
        for r in rows:
            d = dict(r)
            d["versions"] = json.loads(d["versions"] or "{}")
            d["models"] = names.get(d["run_id"], [])
            out.append(d)
        return out

    def summary(self, run_id: str) -> dict[str, Any]:
        """The summary dict stored for ``run_id`` (``KeyError`` when unknown)."""
        with self._read() as conn:
            row = conn.execute("SELECT summary FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return json.loads(row["summary"])

    def entries(self, dataset: str | None = None, threat_model: str | None = None, eps: float | None = None,
                protocol: str | None = None, *, latest: bool = False) -> list[LeaderboardEntry]:
        """Leaderboard rows (one per model of each matching run, the history), oldest run first, unranked.

        ``eps`` matches within a relative tolerance of 1e-9. With ``latest=True``: the leaderboard,
        one row per entry (:func:`~robustbench_dc.results.leaderboard.latest_entries`: the newest run
        of each configuration, transfer sources left out).
        """
        where, params = [], []  # type: list[str], list[Any]
        if dataset is not None:
            where.append("r.dataset = ?")
            params.append(dataset)
        if threat_model is not None:
            where.append("r.threat_model = ?")
            params.append(threat_model)
        if eps is not None:
            where.append("ABS(r.eps - ?) <= 1e-9 * MAX(1.0, ABS(?))")
            params += [float(eps), float(eps)]
        if protocol is not None:
            where.append("r.protocol = ?")
            params.append(protocol)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT m.*, r.protocol, r.dataset, r.threat_model, r.eps AS run_eps, r.n_test, r.seed, "
                "r.started, r.finished, r.ingested, r.versions, r.summary FROM models m JOIN runs r ON r.run_id = m.run_id "
                f"{clause} ORDER BY COALESCE(r.finished, r.started, r.ingested), r.run_id, m.rowid",
                params).fetchall()
            run_ids = sorted({r["run_id"] for r in rows})
            evals = self._by_model(conn, "SELECT run_id, model, kind, source, attack, robust_accuracy, "
                                         "attack_success_rate, extra FROM evaluations", run_ids)
            flags = self._by_model(conn, "SELECT run_id, model, name, triggered FROM flags", run_ids)
            lips = self._by_model(conn, "SELECT run_id, model, kind, value FROM lipschitz", run_ids)

        infos: dict[str, dict[str, Any]] = {}  # per run: each model's summary (role, seed, arch parameters)
        entries = []
        for r in rows:
            key = (r["run_id"], r["name"])
            if r["run_id"] not in infos:
                models = json.loads(r["summary"] or "{}").get("models") or {}
                infos[r["run_id"]] = {n: m for n, m in models.items() if isinstance(m, Mapping)}
            info = infos[r["run_id"]].get(r["name"], {})
            robust: dict[str, float | None] = {}
            success: dict[str, float | None] = {}
            transfer: dict[str, dict[str, float | None]] = {}
            components: dict[str, list[dict[str, Any]]] = {}
            binarization: dict[str, dict[str, Any]] = {}
            worst = None
            for e in evals.get(key, []):
                if e["kind"] == "whitebox":
                    robust[e["attack"]] = e["robust_accuracy"]
                    if e["attack_success_rate"] is not None:
                        success[e["attack"]] = e["attack_success_rate"]
                    extra = json.loads(e["extra"] or "{}")
                    if extra.get("components"):
                        components[e["attack"]] = extra["components"]
                    if extra.get("binarization"):
                        binarization[e["attack"]] = extra["binarization"]
                elif e["kind"] == "transfer":
                    transfer.setdefault(e["source"], {})[e["attack"]] = e["robust_accuracy"]
                else:
                    worst = e["robust_accuracy"]
            versions = json.loads(r["versions"] or "{}")
            entries.append(LeaderboardEntry(
                name=r["name"], architecture=r["arch"], operator=r["operator"],
                operator_params=json.loads(r["operator_params"] or "{}"), dataset=r["dataset"],
                threat_model=r["threat_model"], eps=r["run_eps"], clean_accuracy=r["clean_accuracy"],
                robust_accuracy=robust, worst_case_robust_accuracy=worst, transfer_robust_accuracy=transfer,
                flags=[f["name"] for f in flags.get(key, []) if f["triggered"]],
                training=r["training"], recipe=None if r["recipe"] is None else json.loads(r["recipe"]),
                date=r["finished"] or r["started"] or r["ingested"],
                version=str(versions.get("robustbench_dc")) if versions.get("robustbench_dc") else None,
                run_id=r["run_id"], protocol=r["protocol"], n_test=r["n_test"], label=r["label"],
                attack_success_rate=success, lipschitz={x["kind"]: x["value"] for x in lips.get(key, [])},
                seed=info.get("seed", r["seed"]), checkpoint=r["checkpoint"], components=components,
                binarization=binarization, role=info.get("role"), arch_params=dict(info.get("arch_params") or {}),
                worst_case_interval=(info.get("worst_case") or {}).get("interval"),
                curves=dict(info.get("curves") or {})))
        return latest_entries(entries) if latest else entries

    @staticmethod
    def _by_model(conn: sqlite3.Connection, query: str, run_ids: list[str]) -> dict[tuple[str, str], list[sqlite3.Row]]:
        out: dict[tuple[str, str], list[sqlite3.Row]] = {}
        if not run_ids:
            return out
        # One query per chunk of run ids (SQLite limits the number of bound parameters).
        for i in range(0, len(run_ids), 500):
            chunk = run_ids[i:i + 500]
            marks = ", ".join("?" * len(chunk))
            for row in conn.execute(f"{query} WHERE run_id IN ({marks}) ORDER BY rowid", chunk):
                out.setdefault((row["run_id"], row["model"]), []).append(row)
        return out

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` (``"ok"`` for a sound database), plus any foreign-key violations."""
        rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        result = "\n".join(str(r[0]) for r in rows)
        fk = self.conn.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            result += "\n" + "\n".join(f"foreign key violation: {tuple(r)}" for r in fk)
        return result
