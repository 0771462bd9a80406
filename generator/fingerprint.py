"""Shard fingerprints: a hash of everything that determines a shard's content."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from generator.errors import ConfigError


def fingerprint(**inputs: Any) -> str:
    """sha256 over canonical JSON of the inputs; raises rather than hashing something unstable."""
    try:
        blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fingerprint: inputs must be plain JSON data, but hashing failed: {exc}") from exc
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
