"""Access rules for the real splits: ``real-test`` is held out for final reporting.

Training, validation, model selection and the policy loop may read ``real-train`` and
``real-val``; only a final report may read ``real-test`` (otherwise the loop would tune itself
to the test set and the reported number would be optimistic). Every stage that opens real data
calls :func:`check_split_access` (or opens it through :func:`open_real_split`) with the
purpose it reads it for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator.errors import DataError

if TYPE_CHECKING:
    from generator.shard import Shard

REAL_SPLITS = ("real-train", "real-val", "real-test")  # the one definition of the real splits
HELD_OUT_SPLIT = "real-test"  # read only for a final report
FINAL_REPORT = "final-report"


def has_real_set(root: str | Path) -> bool:
    """``root`` holds a complete real set: a shard manifest in each of :data:`REAL_SPLITS` (the
    rule by which the loop and the demo reuse a real set instead of building it)."""
    return all((Path(root) / s / "manifest.json").is_file() for s in REAL_SPLITS)


def check_split_access(manifest: dict[str, Any], purpose: str) -> None:
    """Raise :class:`DataError` if a shard that is ``real-test`` is read for any purpose other
    than ``"final-report"``. Shards of other kinds and splits always pass."""
    if manifest.get("split") == HELD_OUT_SPLIT and purpose != FINAL_REPORT:
        raise DataError(
            f"{HELD_OUT_SPLIT} is held out for final reporting; it may not be read for "
            f"{purpose!r} (train, validate and steer on real-val instead; only purpose "
            f"{FINAL_REPORT!r} may open it)"
        )


def open_real_split(root: str | Path, split: str, purpose: str) -> Shard:
    """Open ``root/<split>`` of a real set built by ``synthloop data real``, after checking the
    split name, that it exists, that it is a real shard of that split and the access rule.
    """
    from generator.shard import Shard

    if split not in REAL_SPLITS:
        raise DataError(f"real split: must be one of {', '.join(REAL_SPLITS)}, but got {split!r}")
    path = Path(root) / split
    if not (path / "manifest.json").is_file():
        raise DataError(
            f"real split: {str(path)!r} does not hold a finished {split} shard; "
            f"build the real set with `synthloop data real --out {root}`"
        )
    shard = Shard(path)
    if shard.manifest.get("kind") != "real" or shard.manifest.get("split") != split:
        raise DataError(
            f"real split: {str(path)!r} must be a real shard of split {split!r}, but its manifest "
            f"says kind={shard.manifest.get('kind')!r}, split={shard.manifest.get('split')!r}; "
            "rebuild it with `synthloop data real`"
        )
    check_split_access(shard.manifest, purpose)
    return shard
