"""Shard fingerprints: a hash of everything that determines a shard's content."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from generator.errors import ConfigError


def fingerprint(**inputs: Any) -> str:
    """sha256 over canonical JSON of the inputs; raises rather than hashing something unstable."""
    try:
        blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fingerprint: inputs must be plain JSON data, but hashing failed: {exc}") from exc
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def json_sha256(obj: Any) -> str:
    """Content digest of JSON-like data: sha256 (hex) of ``json.dumps(obj, sort_keys=True)``.

    The one canonical form behind every stored content hash (a manifest's
    ``scenario.spec_sha256``, report hashes in history and lineage, Optuna attributes): keys
    sorted, json's default separators, anything not JSON (a Path, a datetime) as ``str``.
    Changing it changes every digest already written, so old shards and reports would no longer
    match; :func:`fingerprint` (compact, strict, 32 hex) is the shard-identity hash beside it.
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (shard files, checkpoints, mesh assets)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
