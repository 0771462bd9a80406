"""The loader path of MLflow models registered before ``flows/`` got its wings.

A logged pyfunc model names its ``loader_module`` in its MLmodel file; versions registered
before the move name ``flows.tracking_model``, newer ones :mod:`flows.tracking.model`. This
re-export keeps the old ones loading (tests/test_tracking.py loads one).
"""

from flows.tracking.model import _load_pyfunc

__all__ = ["_load_pyfunc"]
