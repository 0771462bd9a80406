"""Prefect: the closed-loop flow, the production monitor, the loop's published artifacts,
the validated settings, the task runner (process or Dask), the stores and the deployment
builder. Imports :mod:`flows.tracking` and :mod:`flows.loop`.
"""
