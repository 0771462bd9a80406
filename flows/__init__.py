"""synthloop's loop, its tracking, its orchestration and the CLI, in four floors.

Each floor imports only the floors below it (tests/test_layers.py):

- :mod:`flows.commands` and :mod:`flows.cli`: the ``synthloop`` command;
- :mod:`flows.orchestration`: Prefect (the flow, the monitor, settings, deployments);
- :mod:`flows.tracking`: MLflow (runs, iteration records, models, lineage);
- :mod:`flows.loop`: the loop as plain library calls (never Prefect or MLflow).

The CLI imports Prefect/MLflow lazily, only in the subcommands that need them.
"""
