"""synthloop orchestration: CLI glue, Prefect flows and MLflow lineage.

The CLI imports Prefect/MLflow lazily, only in the subcommands that need them.
"""
