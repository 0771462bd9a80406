"""The loop's three stores on a database server: checks of their URLs (docs/stores.md).

Three stores, three settings:

======================  =================================================  ==========================
store                   setting                                            PostgreSQL URL
======================  =================================================  ==========================
Prefect server          ``PREFECT_SERVER_DATABASE_CONNECTION_URL``         ``postgresql+asyncpg://…``
                        (environment of ``prefect server start``)
MLflow backend store    ``mlflow server --backend-store-uri`` (then the    ``postgresql+psycopg://…``
                        loop's ``tracking_uri`` is the server's http URL),
                        or the loop's ``tracking_uri`` itself
Optuna storage          the loop's ``study``                               ``postgresql+psycopg://…``
======================  =================================================  ==========================

SQLite (the embedded default: ``runs/mlflow.db``, ``WORK/policy.db``, Prefect's
``~/.prefect/prefect.db``) serves one writer at a time; several loops at once want PostgreSQL
(benchmarks/concurrent_stores.py measures why). Prefect's server needs an async driver
(asyncpg), MLflow and Optuna a sync one (psycopg 3; SQLAlchemy 2.1 also picks it for a plain
``postgresql://``).

:func:`check_url` turns what goes wrong into one line naming the setting, the URL without its
password, and the fix: an unparsable URL, a driver of the wrong kind or not installed, a
server that does not answer, a missing database. :func:`create_database` makes a missing one.
No Prefect or MLflow import here: SQLAlchemy (and the driver) only.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from generator.errors import ConfigError, driver_error_line, field_error, redact

Role = Literal["prefect", "sync"]  # Prefect's server (async driver) / MLflow and Optuna (sync driver)

# drivers each role accepts, per dialect; the first is the one to suggest
DRIVERS: dict[Role, dict[str, tuple[str, ...]]] = {
    "prefect": {"postgresql": ("asyncpg",), "sqlite": ("aiosqlite",)},
    "sync": {"postgresql": ("psycopg", ""), "sqlite": ("", "pysqlite")},
}
EXAMPLE: dict[Role, str] = {
    "prefect": "postgresql+asyncpg://postgres@127.0.0.1:5432/synthloop_prefect",
    "sync": "postgresql+psycopg://postgres@127.0.0.1:5432/synthloop_mlflow",
}
CONNECT_TIMEOUT_S = 5
def is_database_url(url: str | None) -> bool:
    """True for a SQLAlchemy URL of a database server (``postgresql…``, ``mysql…``), not a
    file (sqlite) or an http tracking server."""
    return bool(url) and re.match(r"^(postgresql|postgres|mysql|mssql)(\+\w+)?://", str(url)) is not None


def parse(field: str, url: str, role: Role) -> Any:
    """The SQLAlchemy ``URL`` of ``url``, checked for ``role``'s drivers (one ConfigError line)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = EXAMPLE[role]
    try:
        u = make_url(str(url))
    except (ArgumentError, ValueError, TypeError):
        raise field_error(field, "must be a database URL dialect+driver://user@host:port/database",
                          redact(url), f"e.g. {example}") from None
    dialect, _, driver = u.drivername.partition("+")
    if dialect == "postgres":
        raise field_error(field, "must start with postgresql (SQLAlchemy dropped the postgres:// alias)",
                          redact(url), f"e.g. {example}")
    drivers = DRIVERS[role].get(dialect)
    if drivers is None:
        raise field_error(field, f"must use one of {', '.join(DRIVERS[role])}", redact(url), f"e.g. {example}")
    if driver not in drivers:
        want = f"{dialect}+{drivers[0]}" if drivers[0] else dialect
        why = ("Prefect's server needs an async driver" if role == "prefect"
               else "MLflow and Optuna need a sync driver")
        raise field_error(field, f"{why}: use {want}://", redact(url), f"e.g. {example}")
    return u


def _sync_url(u: Any) -> Any:
    """The URL a synchronous check connects with (asyncpg -> psycopg, aiosqlite -> pysqlite)."""
    dialect = u.drivername.partition("+")[0]
    return u.set(drivername="postgresql+psycopg" if dialect == "postgresql" else "sqlite")


def check_url(field: str, url: str, role: Role = "sync") -> str:
    """Check ``url`` for ``role``; for a database server also that it answers and the database
    exists (``SELECT 1`` within :data:`CONNECT_TIMEOUT_S`). Returns the server's version line
    (``"sqlite"`` for a file); raises one ConfigError line otherwise."""
    u = parse(field, url, role)
    if u.drivername.startswith("sqlite"):
        return "sqlite"
    import sqlalchemy as sa

    shown = redact(url)
    try:
        engine = sa.create_engine(_sync_url(u), poolclass=sa.pool.NullPool,
                                  connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    except ImportError as exc:
        raise field_error(field, f"needs a driver that is not installed ({exc})", shown,
                          "pip install 'psycopg[binary]' (in requirements.lock)") from None
    try:
        with engine.connect() as conn:
            return " ".join(str(conn.execute(sa.text("SELECT version()")).scalar()).split()[:2])  # PostgreSQL 15.20
    except sa.exc.SQLAlchemyError as exc:
        msg = driver_error_line(exc)
        if "does not exist" in msg and "database" in msg:
            fix = (f"create it: `createdb -h {u.host or '127.0.0.1'} -p {u.port or 5432} -U {u.username or 'postgres'} "
                   f"{u.database}` or `synthloop stores --create ...`")
        else:
            fix = ("start PostgreSQL (`make sysdeps` installs and starts Debian's on 127.0.0.1:5432) or fix "
                   "the host, port, user or password")
        raise ConfigError(f"{field}: cannot connect to {shown} ({msg}); {fix}") from None
    finally:
        engine.dispose()


def create_database(field: str, url: str, role: Role = "sync") -> bool:
    """Create ``url``'s database on its server when missing (connecting to the ``postgres``
    maintenance database as the URL's user); True when it was created."""
    import sqlalchemy as sa

    u = parse(field, url, role)
    if not u.drivername.startswith("postgresql"):
        raise field_error(field, "can only create a PostgreSQL database", redact(url), "create it yourself")
    name = u.database or ""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,62}", name):
        raise field_error(field, "must name a database of letters, digits, _ and - (max 63)", name or None,
                          f"e.g. {EXAMPLE[role]}")
    admin = sa.create_engine(_sync_url(u).set(database="postgres"), poolclass=sa.pool.NullPool,
                             isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with admin.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
                return False
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            return True
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(f"{field}: cannot create database {name!r} at {redact(url)} ({driver_error_line(exc)}); "
                          "create it as a user with CREATEDB rights (`createdb`) or fix the URL") from None
    finally:
        admin.dispose()


def drop_database(field: str, url: str) -> None:
    """Drop ``url``'s PostgreSQL database if it exists, closing any connection a server left open
    (``WITH (FORCE)``): for tests and benchmarks that made their own database."""
    import sqlalchemy as sa

    u = parse(field, url, "sync")
    admin = sa.create_engine(_sync_url(u).set(database="postgres"), poolclass=sa.pool.NullPool,
                             isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def check_loop_stores(tracking_uri: str | None, study: str | None) -> None:
    """The loop's ``tracking_uri`` and ``study`` when they name a database server: reachable,
    the database there, a sync driver. Files and http URLs are left to MLflow and Optuna."""
    if tracking_uri and is_database_url(tracking_uri):
        check_url("loop.tracking_uri", tracking_uri)
    if study and is_database_url(study):
        check_url("loop.study", study)
