"""``digits`` scene builder: 3D extruded digits on a textured background plane.

World: digits stand in the plane z = 0 (height 1 × ``digit.size``), facing +z; the camera orbits
the origin at ``camera.distance`` raised by ``camera.elevation``; the background plane sits
behind the digits; occluders float between digits and camera.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trimesh

from generator import glyphs
from generator.render import SceneObject, SceneSpec
from generator.sampling import SceneSample
from generator.scenes import common

BACKDROP_BEHIND = 1.5  # backdrop distance behind the digits' plane, world units
OCCLUDER_SHAPES = ("box", "sphere", "cylinder")


def _photo_loader(rng: np.random.Generator) -> np.ndarray:
    """A random square crop of one of the photos reserved for synthetic textures."""
    from generator.photos import SYNTH_TEXTURE_PHOTOS, load_photo

    photo = load_photo(SYNTH_TEXTURE_PHOTOS[int(rng.integers(len(SYNTH_TEXTURE_PHOTOS)))])
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(h, w))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return photo[y : y + side, x : x + side]


def _place(
    n: int, half: float, spread: float, sep: float, sizes: list[float], rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Centres inside ±spread·half, kept ``sep`` × size apart when possible (50 tries each)."""
    pts: list[tuple[float, float]] = []
    for k in range(n):
        best, best_d = (0.0, 0.0), -1.0
        for _ in range(50):
            p = (float(rng.uniform(-1, 1) * spread * half), float(rng.uniform(-1, 1) * spread * half))
            d = min((np.hypot(p[0] - q[0], p[1] - q[1]) / max(sizes[k], 1e-6) for q in pts), default=np.inf)
            if d >= sep:
                best = p
                break
            if d > best_d:
                best, best_d = p, d
        pts.append(best)
    return pts


def _digit(
    obj: dict[str, Any],
    centre: tuple[float, float],
    layer: int,
    color: tuple[float, float, float],
    image: dict[str, Any],
    class_index: dict[str, int],
) -> SceneObject:
    mesh = glyphs.glyph_mesh(
        str(obj["digit.font"]),
        str(obj["digit.class"]),
        glyphs.quantise(obj["digit.stroke"], 0.125),
        float(obj["digit.depth"]),
    )
    v = mesh.vertices.copy()
    v[:, 0] += np.tan(np.radians(obj["digit.slant"])) * v[:, 1]  # shear: slant is a shape change
    v[:, :2] *= obj["digit.size"]
    pose = (
        common.translate(centre[0], centre[1], 0.02 * layer)
        @ common.tilt(obj["digit.tilt"], obj["digit.tilt_direction"])
        @ common.rot_z(obj["digit.rotation"])
    )
    return SceneObject(
        vertices=v,
        faces=mesh.faces,
        pose=pose,
        color=color,
        metallic=float(image["material.metallic"]),
        roughness=float(image["material.roughness"]),
        category_id=class_index[str(obj["digit.class"])],
        attributes=dict(obj),
    )


def _occluders(
    image: dict[str, Any], centres: list[tuple[float, float]], rng: np.random.Generator
) -> list[SceneObject]:
    out = []
    for _ in range(int(image["occluders.count"])):
        size = float(image["occluders.size"])
        shape = OCCLUDER_SHAPES[int(rng.integers(len(OCCLUDER_SHAPES)))]
        if shape == "box":
            m = trimesh.creation.box(extents=(size, size * rng.uniform(0.3, 1.0), 0.1))
        elif shape == "sphere":
            m = trimesh.creation.icosphere(subdivisions=2, radius=size / 2)
        else:
            m = trimesh.creation.cylinder(radius=size / 4, height=size * 1.5, sections=16)
        cx, cy = centres[int(rng.integers(len(centres)))]
        pose = common.translate(
            cx + rng.uniform(-0.4, 0.4), cy + rng.uniform(-0.4, 0.4), rng.uniform(0.4, 1.0)
        ) @ common.rot_z(rng.uniform(0, 360))
        color = common.hls_color(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0, 0.8))
        out.append(
            SceneObject(vertices=m.vertices, faces=m.faces, pose=pose, color=color, roughness=0.7, role="occluder")
        )
    return out


def digit_lightness(background: float, contrast: float, polarity: str) -> float:
    """Background ± contrast on the preferred side; the other side when it would clip harder."""
    sign = 1.0 if polarity == "light" else -1.0
    preferred, other = background + sign * contrast, background - sign * contrast
    gain_preferred = abs(np.clip(preferred, 0, 1) - background)
    if not 0.0 <= preferred <= 1.0 and abs(np.clip(other, 0, 1) - background) > gain_preferred:
        preferred = other
    return float(np.clip(preferred, 0.0, 1.0))


def build(sample: SceneSample, rng: np.random.Generator, width: int, height: int, classes: list[str]) -> SceneSpec:
    im = sample.image
    camera = common.orbit_camera(im["camera.distance"], im["camera.elevation"], im["camera.fov"], width, height)
    half = common.visible_half_height(camera, im["camera.distance"])
    sizes = [float(o["digit.size"]) for o in sample.objects]
    centres = _place(len(sample.objects), half, im["layout.spread"], im["layout.separation"], sizes, rng)
    lightness = digit_lightness(im["background.lightness"], im["material.contrast"], str(im["material.polarity"]))
    color = common.hls_color(im["material.hue"], lightness, im["material.saturation"])
    class_index = {c: i + 1 for i, c in enumerate(classes)}
    objects = [
        _digit(o, c, k, color, im, class_index) for k, (o, c) in enumerate(zip(sample.objects, centres, strict=True))
    ]
    objects += _occluders(im, centres, rng)
    texture = common.background_texture(
        str(im["background.kind"]),
        im["background.lightness"],
        im["background.texture_scale"],
        float(rng.random()),
        rng,
        _photo_loader,
    )
    objects.append(common.background_plane(camera, im["camera.distance"] + BACKDROP_BEHIND, texture))
    lights = common.directional_lights(
        int(im["light.count"]),
        im["light.intensity"],
        im["light.elevation"],
        im["light.azimuth"],
        im["light.temperature"],
        rng,
    )
    amb = float(im["light.ambient"])
    return SceneSpec(objects=objects, lights=lights, camera=camera, ambient=(amb, amb, amb))
