"""Split one labelled shard (an import of your data) into a real set: real-train / real-val / real-test.

``split_shard(src, out, val=0.2, test=0.2, seed=0)`` writes, atomically as one directory::

    out/
      real-train/    shard, kind "real", split "real-train"
      real-val/      shard, split "real-val"
      real-test/     shard, split "real-test": held out for final reporting, exactly like the
                     built-in set's (generator.real.splits refuses it to training and the loop)
      split.json     seed, fractions, source fingerprint and the source image ids of each split

the layout of ``synthloop data real``, so ``out`` can be a loop's ``real_dir``. Images are
assigned by one permutation from ``numpy.random.default_rng(seed)``: the first
``round(test·N)`` go to real-test, the next ``round(val·N)`` to real-val, the rest to
real-train (each at least one image), each split keeping the source order. Files are copied
byte for byte (checked against the source manifest) and every annotation field is kept; ids
are renumbered by :class:`generator.shard.ShardWriter`. Same source and seed ⇒ identical
files and fingerprints.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from generator import GENERATOR_VERSION, atomic
from generator.errors import DataError, field_error, is_number
from generator.fingerprint import fingerprint
from generator.real.splits import REAL_SPLITS, check_split_access
from generator.shard import ImageEntry, Shard, ShardWriter

SPLITTER_VERSION = "shard-split/1"
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class SplitPart:
    split: str
    path: Path
    images: int
    annotations: int
    fingerprint: str


def check_fractions(val: float, test: float) -> None:
    for option, v in (("--val", val), ("--test", test)):
        if not is_number(v) or not 0.0 < v < 1.0:
            raise field_error(option, "must lie strictly between 0 and 1", v,
                              "the loop needs real-train, real-val and real-test")
    if val + test >= 1.0:
        raise field_error("--val + --test", "must be below 1 so real-train keeps images", val + test,
                          "lower --val or --test")


def split_sizes(n: int, val: float, test: float) -> dict[str, int]:
    """Images per split: round(test·N), round(val·N), the rest; each at least one."""
    if n < 3:
        raise DataError(f"--data: splitting needs at least 3 images (one per split), but the shard has {n}; "
                        "import more images")
    n_test = min(max(round(test * n), 1), n - 2)
    n_val = min(max(round(val * n), 1), n - 1 - n_test)
    return {"real-train": n - n_val - n_test, "real-val": n_val, "real-test": n_test}


def assign(n: int, val: float, test: float, seed: int) -> dict[str, list[int]]:
    """Positions (0..n-1, sorted) of each split: one seeded permutation, test first, then val."""
    sizes = split_sizes(n, val, test)
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = sizes["real-test"], sizes["real-val"]
    parts = {"real-test": perm[:n_test], "real-val": perm[n_test : n_test + n_val],
             "real-train": perm[n_test + n_val :]}  # fmt: skip
    return {s: sorted(int(i) for i in parts[s]) for s in REAL_SPLITS}


def _check_source(shard: Shard) -> None:
    m = shard.manifest
    check_split_access(m, "split")  # a real-test shard is not re-split into training data
    if m.get("kind") == "synthetic":
        raise DataError(f"--data: {str(shard.path)!r} is a rendered shard (manifest kind 'synthetic'); a real "
                        "set must hold real images: split an imported shard (`synthloop data import-coco`/"
                        "`import-yolo`)")
    cats = [(c.get("id"), c.get("name")) for c in shard.coco.get("categories", [])]
    if cats != [(i + 1, c) for i, c in enumerate(shard.classes)]:
        raise DataError(f"--data: {str(shard.path)!r} categories must be the manifest classes with ids 1..N, "
                        f"but are {cats}; re-import the shard")


def _entry(shard: Shard, img: dict[str, Any], anns: list[dict[str, Any]], index: int, root: Path) -> ImageEntry:
    """Copy an image's files (verified) into ``root`` and give its COCO fragments without ids."""
    files: dict[str, str] = {}
    for key in ("file_name", "depth_file", "semantic_file"):
        rel = img.get(key)
        if isinstance(rel, str):
            data = shard.verified_bytes(rel)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
            files[rel] = shard.manifest["files"][rel]
    image = {k: copy.deepcopy(v) for k, v in img.items() if k != "id"}
    annotations = [{k: copy.deepcopy(v) for k, v in a.items() if k not in ("id", "image_id")} for a in anns]
    return ImageEntry(index=index, image=image, annotations=annotations, files=files)


def split_shard(
    src: str | Path,
    out: str | Path,
    val: float = 0.2,
    test: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> list[SplitPart]:
    """Write ``out/real-train``, ``out/real-val``, ``out/real-test`` (+ ``split.json``) from the
    shard ``src``, atomically as one directory."""
    from generator.real.build import check_seed

    seed = check_seed(seed)
    check_fractions(val, test)
    shard = Shard(src)
    _check_source(shard)
    images = shard.coco["images"]
    by_image = shard.annotations_by_image()
    parts = assign(len(images), val, test, seed)
    m = shard.manifest
    source = {"path": str(Path(src).resolve()), "name": m.get("name"), "kind": m.get("kind"),
              "fingerprint": shard.fingerprint}  # fmt: skip
    summaries: list[SplitPart] = []
    with atomic.atomic_dir(out, overwrite) as tmp:
        for split in REAL_SPLITS:
            ids = [int(images[i]["id"]) for i in parts[split]]
            info = {
                "name": m.get("name", "real"), "kind": "real", "split": split, "classes": shard.classes,
                "fingerprint": fingerprint(splitter=SPLITTER_VERSION, generator_version=GENERATOR_VERSION,
                                           source_fingerprint=shard.fingerprint, split=split, seed=seed,
                                           val=val, test=test),
                "seed": seed, "splitter_version": SPLITTER_VERSION, "generator_version": GENERATOR_VERSION,
                "source": {**source, "image_ids": ids},
                **({"scenario": m["scenario"]} if "scenario" in m else {}),
            }  # fmt: skip
            with ShardWriter(tmp / split, info) as writer:
                for k, i in enumerate(parts[split]):
                    img = images[i]
                    writer.add(_entry(shard, img, by_image.get(img["id"], []), k, writer.root))
                n_ann = sum(len(e.annotations) for e in writer.entries.values())
            summaries.append(SplitPart(split, Path(out) / split, len(ids), n_ann, info["fingerprint"]))
        atomic.write_json(tmp / SPLIT_FILE, {
            "splitter_version": SPLITTER_VERSION, "seed": seed, "val": val, "test": test, "source": source,
            "image_ids": {s: [int(images[i]["id"]) for i in parts[s]] for s in REAL_SPLITS},
        })  # fmt: skip
    return summaries
