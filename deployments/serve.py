"""Serve the closed loop's deployments from this process: the same as ``synthloop serve``.

The deployments themselves are built by :mod:`flows.orchestration.deploy`; ``prefect.yaml``
beside this file declares the same ones for a work pool (tests/test_deployments_agree.py).

    python flows/orchestration/deploy.py --config loop.yaml [--cron '0 2 * * *'] [--monitor-config monitor.yaml]
"""

from __future__ import annotations

import sys

from flows.cli import run

if __name__ == "__main__":
    run(["serve", *sys.argv[1:]])
