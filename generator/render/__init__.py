"""Renderer interface and the plain-data scene description builders produce.

A :class:`SceneSpec` holds numpy arrays and numbers only, so builders and annotation code
are tested without OpenGL (:class:`generator.render.fake.FakeRenderer`); only
:mod:`generator.render.pyrender_backend` imports pyrender.

Conventions: world units are arbitrary but consistent (the digits scenario uses "digit
heights"); camera poses are camera-to-world in OpenGL axes (-z forward, +y up), like pyrender.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class SceneObject:
    vertices: np.ndarray  # (N, 3) float, object frame
    faces: np.ndarray  # (M, 3) int
    pose: np.ndarray  # 4x4 object-to-world
    color: tuple[float, float, float]  # linear RGB 0..1
    metallic: float = 0.0
    roughness: float = 0.6
    category_id: int | None = None  # None: not annotated (occluder, background)
    role: str = "object"  # "object" (labelled), "occluder", or "background" (no instance id)
    attributes: dict[str, object] = field(default_factory=dict)
    texture: np.ndarray | None = None  # (H, W, 3) uint8, mapped by `uv`; `color` multiplies it
    uv: np.ndarray | None = None  # (N, 2)
    normals: np.ndarray | None = None  # (N, 3) smooth vertex normals for a textured mesh (else +z)
    keypoints: np.ndarray | None = None  # (K, 3) object-frame points annotated as COCO keypoints


@dataclass
class Light:
    kind: str  # "directional" | "point"
    color: tuple[float, float, float]
    intensity: float
    pose: np.ndarray  # 4x4; directional lights shine along their -z axis


@dataclass
class Camera:
    yfov: float  # radians
    width: int
    height: int
    pose: np.ndarray  # camera-to-world, OpenGL axes
    znear: float = 0.05
    zfar: float = 100.0

    @property
    def intrinsics(self) -> np.ndarray:
        """3x3 OpenCV matrix (square pixels; principal point at the image centre)."""
        f = 0.5 * self.height / np.tan(0.5 * self.yfov)
        return np.array([[f, 0.0, self.width / 2], [0.0, f, self.height / 2], [0.0, 0.0, 1.0]])


@dataclass
class SceneSpec:
    objects: list[SceneObject]
    lights: list[Light]
    camera: Camera
    ambient: tuple[float, float, float] = (0.1, 0.1, 0.1)
    bg_color: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def labelled(self) -> list[int]:
        return [i for i, o in enumerate(self.objects) if o.role == "object"]


@dataclass
class RenderOutput:
    color: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32, distance along the view axis, 0 = nothing
    instance: np.ndarray  # (H, W) int32: index+1 of the visible SceneObject, 0 = none
    amodal: dict[int, np.ndarray]  # object index -> bool mask of its unoccluded pixels


class Renderer(Protocol):
    """What the pipeline needs from a rendering backend; one instance per process."""

    def prepare(self, scene: SceneSpec) -> object:
        """Backend-side scene objects built ahead of :meth:`render`, on any thread (no GL
        calls); ``None`` when the backend has nothing to build."""
        ...

    def render(self, scene: SceneSpec, amodal: bool = True, prepared: object = None) -> RenderOutput:
        """``prepared``: what :meth:`prepare` returned for this very ``scene``, or None."""
        ...

    def close(self) -> None: ...


def projected_boxes(scene: SceneSpec) -> dict[int, tuple[float, float, float, float, float]]:
    """Per non-background object: (x0, y0, x1, y1, nearest depth) of its projected vertices."""
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    world_to_cv = flip @ np.linalg.inv(scene.camera.pose)
    K = scene.camera.intrinsics
    out = {}
    for i, o in enumerate(scene.objects):
        if o.role == "background":
            continue
        pts = (np.c_[o.vertices, np.ones(len(o.vertices))] @ (world_to_cv @ o.pose).T)[:, :3]
        z = np.clip(pts[:, 2], 1e-6, None)
        u = K[0, 0] * pts[:, 0] / z + K[0, 2]
        v = K[1, 1] * pts[:, 1] / z + K[1, 2]
        out[i] = (float(u.min()), float(v.min()), float(u.max()), float(v.max()), float(pts[:, 2].min()))
    return out


def possibly_occluded(scene: SceneSpec) -> set[int]:
    """Labelled objects whose projected box overlaps another (non-background) object's box.

    Every other labelled object's amodal mask equals its visible mask exactly (only the
    background, which is behind everything, can be behind it), so it needs no extra pass.
    """
    boxes = projected_boxes(scene)
    hit: set[int] = set()
    for i in scene.labelled:
        a = boxes.get(i)
        if a is None:
            continue
        for j, b in boxes.items():
            if j != i and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                hit.add(i)
                break
    return hit
