"""``synthloop stores``: check (and create) the PostgreSQL databases of the three stores.

Several loops at once need their stores on a database server, not SQLite files: the Prefect
server's database, MLflow's backend store and the Optuna storage (docs/stores.md). This command
checks each URL given — the right driver for its store, the server answers, the database
exists (``--create`` makes it) — and prints how to start the servers on them.
"""

from __future__ import annotations

import argparse
import os
import shlex

PREFECT_DB_ENV = "PREFECT_SERVER_DATABASE_CONNECTION_URL"  # Prefect 3.9's name (old alias: PREFECT_API_...)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stores", help="check (and create) the PostgreSQL databases of Prefect, MLflow and Optuna",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--prefect-db", metavar="URL", default=os.environ.get(PREFECT_DB_ENV),
                   help=f"the Prefect server's database, postgresql+asyncpg://USER@HOST:PORT/DB "
                        f"(default: ${PREFECT_DB_ENV})")
    p.add_argument("--mlflow-db", metavar="URL",
                   help="MLflow's backend store, postgresql+psycopg://USER@HOST:PORT/DB")
    p.add_argument("--study", metavar="URL", help="the Optuna storage (loop setting `study`), postgresql+psycopg://…")
    p.add_argument("--create", action="store_true", help="create the databases that do not exist yet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.orchestration.stores import check_url, create_database
    from generator.errors import ConfigError, redact

    given = [("--prefect-db", args.prefect_db, "prefect"), ("--mlflow-db", args.mlflow_db, "sync"),
             ("--study", args.study, "sync")]
    given = [g for g in given if g[1]]
    if not given:
        raise ConfigError("stores: needs at least one of --prefect-db, --mlflow-db, --study, but got none; e.g. "
                          "--mlflow-db postgresql+psycopg://postgres@127.0.0.1:5432/synthloop_mlflow")
    for field, url, role in given:
        created = create_database(field, url, role) if args.create else False  # type: ignore[arg-type]
        version = check_url(field, url, role)  # type: ignore[arg-type]
        print(f"{field:<13} {redact(url)}  ok ({version}{', created' if created else ''})")
    urls = {field: shlex.quote(redact(url)) for field, url, _ in given}
    print("\nstart the servers on them (keep passwords in ~/.pgpass or PGPASSWORD, not in URLs):")
    if "--prefect-db" in urls:
        print(f"  {PREFECT_DB_ENV}={urls['--prefect-db']} prefect server start --host 127.0.0.1 --port 4200")
        print("  export PREFECT_API_URL=http://127.0.0.1:4200/api")
    if "--mlflow-db" in urls:
        print(f"  mlflow server --backend-store-uri {urls['--mlflow-db']} --artifacts-destination runs/mlartifacts "
              "--host 127.0.0.1 --port 5000")
        print("  loop setting: --set tracking_uri=http://127.0.0.1:5000")
    if "--study" in urls:
        print(f"  loop setting: --set study={urls['--study']}")
    return 0
