"""``synthloop lineage REF``: where a model came from, back to the loop's first iteration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Print the lineage of a model logged by a tracked loop, newest first, one block per iteration:
model <- shards (params, Optuna trial, fingerprint) <- failure report <- previous model.
REF is an iteration run id, a loop's parent run id (= its latest iteration),
models:/<name>@<alias> (e.g. models:/synthloop-digits@champion) or models:/<name>/<version>.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("lineage", help="trace a model back through the loop (MLflow lineage)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", metavar="REF",
                   help="run id, models:/<name>@<alias> or models:/<name>/<version>")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI (sqlite:///ABS/PATH/mlflow.db or http://host:port; "
                        "default sqlite:///<abs runs>/mlflow.db)")
    p.add_argument("--json", action="store_true", help="print the chain as JSON instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flows.tracking.runs import sqlite_path, sqlite_uri
    from generator.errors import ConfigError

    uri = args.tracking_uri or sqlite_uri(Path("runs") / "mlflow.db")
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # never create an empty store while reading
        raise ConfigError(f"--tracking-uri: no MLflow store at {str(db)!r}; run a tracked loop first "
                          "or pass --tracking-uri sqlite:///ABS/PATH/mlflow.db")
    from flows.tracking.lineage import format_lineage, lineage

    chain = lineage(uri, args.ref)
    print(json.dumps(chain, indent=1) if args.json else format_lineage(chain))
    return 0
