"""The closed loop as plain library calls (never Prefect, never MLflow): the loop's
config and history (state), its checks, its steps, the warm start, the driver (run) and the
work-directory lock. The floors above: :mod:`flows.tracking` (MLflow), :mod:`flows.orchestration`
(Prefect), then the CLI.
"""
