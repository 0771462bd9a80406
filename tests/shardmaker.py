"""Build small, fully valid shards from hand-made numpy masks, for tests of anything that reads shards.

No renderer is involved: a :func:`fake_render` draws grey squares on a background whose level
follows ``light.intensity`` and whose texture follows ``background.kind`` (the
:data:`DEMO_SPEC` scenario), so the usual parameter → condition links hold. Values are drawn
with the real :class:`generator.sampling.Sampler`, and the manifest identity block looks like
the renderer's (:func:`synthetic_info`). Typical use::

    shard = make_shard(tmp_path / "s", n=8)                       # synthetic, all label types
    shard = make_shard(tmp_path / "r", n=8, kind="real")          # no scenario/params
    shard = make_shard(tmp_path / "x", n=40, ignore={"light.intensity"})  # planted ignored param

and :func:`rewrite_json` to corrupt ``annotations.json`` / ``manifest.json`` on purpose while
keeping the manifest checksums consistent (so only the planted fault shows).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from generator import GENERATOR_VERSION, atomic
from generator.fingerprint import fingerprint
from generator.params import GenerationParams
from generator.sampling import Sampler, SceneSample, image_seeds
from generator.scenario import Scenario, ScenarioSpec
from generator.shard import ImageRecord, ObjectRecord, ShardWriter

DEMO_SPEC: dict[str, Any] = {
    "name": "demo",
    "version": 1,
    "classes": ["a", "b", "c"],
    "builder": "tests.shardmaker:fake_render",
    "image": {"width": 64, "height": 48},
    "count_param": "object.count",
    "parameters": {
        "light.intensity": {
            "type": "float",
            "range": [0.2, 1.0],
            "default": 0.6,
            "conditions": ["brightness"],
        },
        "background.kind": {
            "type": "categorical",
            "choices": ["plain", "noise"],
            "default": "plain",
            "conditions": ["texture"],
        },
        "object.count": {"type": "int", "range": [1, 3], "default": 2},
        "object.scale": {
            "type": "float",
            "range": [0.15, 0.45],
            "default": 0.3,
            "scope": "object",
            "conditions": ["size"],
        },
    },
    "conditions": {
        "brightness": {"column": "stat.brightness", "level": "image"},
        "texture": {"column": "stat.texture", "level": "image"},
        "size": {"column": "pixel_size", "level": "object"},
    },
}

Renderer = Callable[[SceneSample, np.random.Generator, int, int, int, frozenset[str]], ImageRecord]


def demo_scenario(spec: dict[str, Any] | None = None) -> Scenario:
    return Scenario(ScenarioSpec.model_validate(spec or DEMO_SPEC), Path("demo.yaml"))


def synthetic_info(
    scenario: Scenario, params: GenerationParams, seed: int, n: int, name: str | None = None
) -> dict[str, Any]:
    """The manifest identity block the renderer writes for a synthetic shard."""
    size = [scenario.spec.image.width, scenario.spec.image.height]
    spec = scenario.spec_dict()
    return {
        "name": name or scenario.name,
        "kind": "synthetic",
        "classes": list(scenario.classes),
        "fingerprint": fingerprint(
            scenario=spec,
            params=params.to_dict(),
            seed=seed,
            n=n,
            image_size=size,
            generator_version=GENERATOR_VERSION,
        ),
        "scenario": {
            "name": scenario.name,
            "version": scenario.spec.version,
            "spec_sha256": scenario.spec_hash(),
            "spec": spec,
        },
        "params": params.to_dict(),
        "seed": seed,
        "n": n,
        "image_size": size,
        "generator_version": GENERATOR_VERSION,
    }


def real_info(classes: Iterable[str], name: str = "realset") -> dict[str, Any]:
    return {
        "name": name,
        "kind": "real",
        "classes": list(classes),
        "fingerprint": f"{name}-v1",
        "split": "val",
        "sources": ["hand-made"],
    }


def _square(h: int, w: int, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Square mask of ``side`` pixels, sometimes cut by the image border; returns (mask, centre)."""
    cy = int(rng.integers(side // 2, h - side // 2 + 1)) + int(rng.integers(-2, 3))
    cx = int(rng.integers(side // 2, w - side // 2 + 1)) + int(rng.integers(-2, 3))
    m = np.zeros((h, w), dtype=bool)
    y0, x0 = cy - side // 2, cx - side // 2
    m[max(y0, 0) : max(y0 + side, 0), max(x0, 0) : max(x0 + side, 0)] = True
    return m, np.array([cx, cy], dtype=float)


def _pose(rng: np.random.Generator, uv: np.ndarray, K: np.ndarray, z: float) -> np.ndarray:
    """Rotation about the optical axis, placed so the origin projects to pixel ``uv``."""
    a = float(rng.uniform(-np.pi, np.pi))
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    pose[:3, 3] = [(uv[0] - K[0, 2]) * z / K[0, 0], (uv[1] - K[1, 2]) * z / K[1, 1], z]
    return pose


def fake_render(
    sample: SceneSample,
    rng: np.random.Generator,
    width: int,
    height: int,
    n_classes: int,
    ignore: frozenset[str] = frozenset(),
) -> ImageRecord:
    """Draw one image: background level from ``light.intensity``, texture from ``background.kind``,
    one grey square per object with side ``object.scale`` × min(w, h); later objects occlude
    earlier ones. Parameters named in ``ignore`` are drawn but have no effect (planted fault)."""
    img_p = sample.image
    level = (
        rng.uniform(40, 240)
        if "light.intensity" in ignore
        else 30 + 200 * img_p.get("light.intensity", 0.6)
    )
    noisy = (
        rng.random() < 0.5
        if "background.kind" in ignore
        else img_p.get("background.kind") == "noise"
    )
    image = np.full((height, width), level) + (rng.normal(0, 25, (height, width)) if noisy else 0.0)
    depth = np.full((height, width), 5.0)
    squares = []
    for j, attrs in enumerate(sample.objects):
        scale = (
            rng.uniform(0.15, 0.45) if "object.scale" in ignore else attrs.get("object.scale", 0.3)
        )
        side = max(3, round(scale * min(width, height)))
        mask, centre = _square(height, width, side, rng)
        z = 3.0 - 0.2 * j
        image[mask] = 255.0 - level * 0.8
        depth[mask] = z
        squares.append((mask, centre, z, side, attrs))
    K = np.array([[100.0, 0, width / 2], [0, 100.0, height / 2], [0, 0, 1]])
    objects = []
    for j, (mask, centre, z, side, attrs) in enumerate(squares):
        visible = mask.copy()
        for later in squares[j + 1 :]:
            visible &= ~later[0]
        objects.append(
            ObjectRecord(
                category_id=int(rng.integers(n_classes)) + 1,
                mask=visible,
                amodal_mask=mask,
                truncation=1.0 - mask.sum() / side**2,
                pose=_pose(rng, centre, K, z),
                attributes=dict(attrs),
            )
        )
    rgb = np.repeat(np.clip(image, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return ImageRecord(
        index=0,
        image=rgb,
        objects=objects,
        depth=depth,
        intrinsics=K,
        conditions=sample.conditions(),
    )


def _strip(record: ImageRecord, depth: bool, amodal: bool, pose: bool) -> ImageRecord:
    if not depth:
        record.depth = None
    for o in record.objects:
        o.amodal_mask = o.amodal_mask if amodal else None
        o.pose = o.pose if pose else None
    return record


def make_shard(
    out: str | Path,
    n: int = 6,
    *,
    seed: int = 0,
    kind: str = "synthetic",
    spec: dict[str, Any] | None = None,
    params: GenerationParams | None = None,
    sample_params: GenerationParams | None = None,
    ignore: Iterable[str] = (),
    depth: bool = True,
    amodal: bool = True,
    pose: bool = True,
    render: Renderer = fake_render,
    name: str | None = None,
) -> Path:
    """Write an ``n``-image shard to ``out`` and return its path.

    ``params`` is what the manifest claims; values are drawn from ``sample_params`` (default:
    the same), so a mismatch plants a sampling fault. ``kind="real"`` writes a real-style shard:
    no scenario/params in the manifest, conditions ``source_photo`` / ``ink_polarity``.
    """
    scenario = demo_scenario(spec)
    params = params or GenerationParams(scenario=scenario.name)
    sampler = Sampler(scenario, sample_params or params)
    w, h = scenario.spec.image.width, scenario.spec.image.height
    info = (
        synthetic_info(scenario, params, seed, n, name)
        if kind == "synthetic"
        else real_info(scenario.classes, name or "realset")
    )
    with ShardWriter(out, info) as writer:
        for i, ss in enumerate(image_seeds(seed, n)):
            rng = np.random.default_rng(ss)
            record = render(
                sampler.sample(rng), rng, w, h, len(scenario.classes), frozenset(ignore)
            )
            record.index = i
            if kind != "synthetic":
                record.conditions = {
                    "source_photo": ["brick", "grass", "coffee"][i % 3],
                    "ink_polarity": "dark" if i % 2 else "light",
                }
                for o in record.objects:
                    o.attributes = {}
            writer.add_record(_strip(record, depth, amodal, pose))
    return Path(out)


def read_json(shard: Path, rel: str) -> dict[str, Any]:
    return json.loads((Path(shard) / rel).read_text())


def rewrite_json(shard: Path, rel: str, data: dict[str, Any], update_manifest: bool = True) -> None:
    """Overwrite a JSON file of the shard; keep its manifest checksum right unless told not to."""
    text = atomic.dumps_json(data)
    (Path(shard) / rel).write_text(text)
    if update_manifest and rel != "manifest.json":
        manifest = read_json(shard, "manifest.json")
        manifest["files"][rel] = hashlib.sha256(text.encode()).hexdigest()
        (Path(shard) / "manifest.json").write_text(atomic.dumps_json(manifest))


def edit_coco(shard: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``fn`` to a copy of annotations.json and write it back (manifest kept consistent)."""
    coco = copy.deepcopy(read_json(shard, "annotations.json"))
    fn(coco)
    rewrite_json(shard, "annotations.json", coco)
