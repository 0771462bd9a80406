"""``shapes`` scene builder: 3D primitives on a backdrop — proof that scenarios are general.

It reuses the shared camera, light, backdrop and sensor code; only the objects differ.
"""

from __future__ import annotations

import numpy as np
import trimesh

from generator.render import SceneObject, SceneSpec
from generator.sampling import SceneSample
from generator.scenes import common


def primitive(kind: str) -> trimesh.Trimesh:
    """Unit-sized primitive (about 1 world unit across), centred at the origin."""
    if kind == "cube":
        return trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    if kind == "sphere":
        return trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    if kind == "cylinder":
        return trimesh.creation.cylinder(radius=0.35, height=0.9, sections=24)
    if kind == "cone":
        return trimesh.creation.cone(radius=0.45, height=0.9, sections=24)
    if kind == "torus":
        return trimesh.creation.torus(major_radius=0.35, minor_radius=0.13, major_sections=24, minor_sections=12)
    if kind == "capsule":
        return trimesh.creation.capsule(height=0.6, radius=0.25, count=[12, 12])
    raise ValueError(f"unknown primitive {kind!r}")


def build(sample: SceneSample, rng: np.random.Generator, width: int, height: int, classes: list[str]) -> SceneSpec:
    im = sample.image
    camera = common.orbit_camera(im["camera.distance"], im["camera.elevation"], 40.0, width, height)
    half = common.visible_half_height(camera, im["camera.distance"])
    objects = []
    for k, o in enumerate(sample.objects):
        mesh = primitive(str(o["shape.class"]))
        x, y = rng.uniform(-0.7, 0.7, size=2) * half
        rot = trimesh.transformations.random_rotation_matrix(rng.random(3))
        pose = common.translate(float(x), float(y), 0.05 * k) @ rot
        color = common.hls_color(float(o["shape.hue"]), float(im["material.lightness"]), 0.7)
        objects.append(
            SceneObject(
                vertices=mesh.vertices * float(o["shape.size"]),
                faces=mesh.faces,
                pose=pose,
                color=color,
                roughness=0.5,
                category_id=classes.index(str(o["shape.class"])) + 1,
                attributes=dict(o),
            )
        )
    texture = common.background_texture(
        str(im["background.kind"]), im["background.lightness"], 0.1, float(rng.random()), rng
    )
    objects.append(common.background_plane(camera, im["camera.distance"] + 2.0, texture))
    lights = common.directional_lights(1, im["light.intensity"], 60.0, float(rng.uniform(0, 360)), 6500.0, rng)
    return SceneSpec(objects=objects, lights=lights, camera=camera, ambient=(0.25, 0.25, 0.25))
