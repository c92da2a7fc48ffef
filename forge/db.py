"""The project's store: one DuckDB file with a versioned schema.

Every stage writes here and users browse it with plain SQL (`duckdb forge.duckdb`). The schema is
a list of migrations applied in order on first use; `schema_version` records which ran. Tables
are documented in docs/data.md. Writers use `transaction()` so that an interrupted run leaves no
half-written rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

DEFAULT_DB = "forge.duckdb"
DB_ENV = "FORGE_DB"


class ForgeError(Exception):
    """Base class of forge's own errors: their message says what to do."""


def db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the store's path: explicit argument, then $FORGE_DB, then ./forge.duckdb."""
    return Path(path or os.environ.get(DB_ENV) or DEFAULT_DB)


# Migrations are the SQL files in forge/migrations/, applied in file-name order, each in one
# transaction. Append new files; never edit one that has shipped (existing stores ran it).
MIGRATION_DIR = Path(__file__).resolve().parent / "migrations"


def _load_migrations() -> list[str]:
    return [p.read_text() for p in sorted(MIGRATION_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


MIGRATIONS: list[str] = _load_migrations()


def connect(path: str | os.PathLike[str] | None = None, *, read_only: bool = False
            ) -> duckdb.DuckDBPyConnection:
    """Open the store (creating it and applying pending migrations) and return the connection."""
    p = db_path(path)
    if str(p) != ":memory:":
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(p), read_only=read_only)
    except duckdb.Error as e:
        raise ForgeError(f"cannot open the DuckDB store {p}: {e}") from e
    if not read_only:
        migrate(con)
    return con


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply every migration newer than the store's version; return the resulting version."""
    current = schema_version(con)
    if current > len(MIGRATIONS):
        raise ForgeError(
            f"the store is at schema version {current}, newer than this forge "
            f"({len(MIGRATIONS)}): upgrade forge or use another --db"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        with transaction(con):
            con.execute(MIGRATIONS[version - 1])
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    return len(MIGRATIONS)


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK if the block raises (including KeyboardInterrupt)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
