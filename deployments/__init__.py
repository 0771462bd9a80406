"""Prefect deployments of the closed loop (served by ``synthloop serve`` or ``prefect deploy``)."""
