"""Generic builder for mesh-asset scenarios (``builder: generator.scenes.assets:build``).

The objects come from the scenario's ``assets:`` section (files, see :mod:`generator.assets`);
this builder places them. It reads these parameters when the scenario declares them, else
uses the default shown (so a new object set is YAML + files, no Python):

| parameter | scope | meaning | default |
|---|---|---|---|
| ``object.class`` | object | class of each object | uniform over the classes |
| ``object.scale`` | object | factor on the asset's size | 1 |
| ``object.yaw`` / ``.pitch`` / ``.roll`` | object | degrees about the object's y, x, z axes | see below |
| ``object.x`` / ``object.y`` | object | position, -1..1 of 0.7 x the visible half-width/height | uniform -1..1 |
| ``camera.distance`` | image | world units to the look-at point | 5 |
| ``camera.elevation`` | image | degrees | 20 |
| ``light.intensity`` | image | key light | 3 |
| ``light.azimuth`` | image | degrees | uniform 0..360 |
| ``background.kind`` | image | solid, gradient, noise, checker | solid |
| ``background.lightness`` | image | 0..1 | 0.3 |

Rotation: a uniformly random rotation when none of the three is declared, else 0 for the
missing ones. When the object has several files (a folder), each object picks one with the scene's rng and
records it as the attribute ``asset``. Colour jitter multiplies the base colour per channel by
``1 + U(-j, j)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trimesh

from generator.render import SceneObject, SceneSpec
from generator.sampling import SceneSample
from generator.scenario import Scenario
from generator.scenes import common

ROTATIONS = ("object.yaw", "object.pitch", "object.roll")


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1.0]])


def _get(values: dict[str, Any], name: str, default: Any) -> Any:
    return values.get(name, default)


def build(
    sample: SceneSample, rng: np.random.Generator, width: int, height: int, classes: list[str], *, scenario: Scenario
) -> SceneSpec:
    im = sample.image
    meshes = scenario.meshes()
    assets = scenario.spec.assets or {}
    distance = float(_get(im, "camera.distance", 5.0))
    camera = common.orbit_camera(distance, float(_get(im, "camera.elevation", 20.0)), 40.0, width, height)
    half_h = common.visible_half_height(camera, distance)
    half_w = half_h * width / height
    declared_rot = any(r in scenario.parameters for r in ROTATIONS)
    objects = []
    for k, o in enumerate(sample.objects):
        cls = str(o["object.class"]) if "object.class" in o else classes[int(rng.integers(len(classes)))]
        variants = meshes[cls]
        mesh = variants[int(rng.integers(len(variants)))] if len(variants) > 1 else variants[0]
        spec = assets[cls]
        if declared_rot:
            rot = (common.rot_z(float(_get(o, "object.roll", 0.0))) @ common.rot_x(float(_get(o, "object.pitch", 0.0)))
                   @ _rot_y(float(_get(o, "object.yaw", 0.0))))
        else:
            rot = trimesh.transformations.random_rotation_matrix(rng.random(3))
        x = float(o["object.x"]) if "object.x" in o else float(rng.uniform(-1, 1))
        y = float(o["object.y"]) if "object.y" in o else float(rng.uniform(-1, 1))
        pose = common.translate(0.7 * x * half_w, 0.7 * y * half_h, 0.05 * k) @ rot
        scale = float(_get(o, "object.scale", 1.0))
        color = np.asarray(mesh.color, float)
        if spec.color_jitter > 0:
            color = np.clip(color * (1 + rng.uniform(-spec.color_jitter, spec.color_jitter, 3)), 0.0, 1.0)
        objects.append(
            SceneObject(
                vertices=mesh.vertices * scale,
                faces=mesh.faces,
                pose=pose,
                color=(float(color[0]), float(color[1]), float(color[2])),
                metallic=mesh.metallic,
                roughness=mesh.roughness,
                category_id=classes.index(cls) + 1,
                attributes={**o, "asset": mesh.path.name},
                texture=mesh.texture,
                uv=mesh.uv,
                normals=mesh.normals if mesh.texture is not None else None,
                keypoints=mesh.corners * scale if spec.keypoints == "bbox_corners" else None,
            )
        )
    texture = common.background_texture(
        str(_get(im, "background.kind", "solid")), float(_get(im, "background.lightness", 0.3)), 0.1,
        float(rng.random()), rng,
    )
    objects.append(common.background_plane(camera, distance + 2.0, texture))
    azimuth = float(im["light.azimuth"]) if "light.azimuth" in im else float(rng.uniform(0, 360))
    lights = common.directional_lights(1, float(_get(im, "light.intensity", 3.0)), 60.0, azimuth, 6500.0, rng)
    return SceneSpec(objects=objects, lights=lights, camera=camera, ambient=(0.25, 0.25, 0.25))


build.needs_scenario = True  # type: ignore[attr-defined]  # Scenario.builder() passes scenario=
