"""MLflow only: the loop's runs and tags (runs), one iteration's record (iteration), its
artifacts, the model and its registry versions (model), the warm start's init run, the
production windows' runs (windows) and lineage queries. Imports :mod:`flows.loop`, never Prefect.
"""
