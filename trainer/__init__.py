"""synthloop trainer: detectors trained from shards, saved as self-describing checkpoints.

Public entry points live in :mod:`trainer.api` (``train``, ``load_detector``); plug in another
detector through :mod:`trainer.registry`. Importing this package does not import torch: the
submodules that need it import it themselves.
"""

from __future__ import annotations
