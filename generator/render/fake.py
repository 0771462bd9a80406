"""A tiny numpy renderer for tests: each object is drawn as the filled convex hull of its
projected vertices at its mean depth. Geometry is coarse, but the outputs obey the same
contract as the real backend (instance ids, depth, amodal masks, occlusion by depth), so
the pipeline and annotation code are tested without OpenGL.
"""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as MplPath
from scipy.spatial import ConvexHull, QhullError

from generator.annotations import project_points
from generator.render import RenderOutput, SceneObject, SceneSpec

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def camera_points(obj: SceneObject, cam_pose: np.ndarray) -> np.ndarray:
    """Object vertices in the OpenCV camera frame."""
    to_cam = GL_TO_CV @ np.linalg.inv(cam_pose) @ obj.pose
    v = np.c_[obj.vertices, np.ones(len(obj.vertices))] @ to_cam.T
    return v[:, :3]


def _flat_color(obj: SceneObject) -> np.ndarray:
    """A labelled textured object (a mesh asset) is drawn in its texture's mean colour times
    its base colour; everything else (the backdrop included) in its flat ``color``."""
    c = np.asarray(obj.color, np.float32)
    if obj.texture is not None and obj.role == "object":
        c = c * obj.texture.reshape(-1, 3).mean(axis=0).astype(np.float32) / 255.0
    return c


class FakeRenderer:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        ys, xs = np.mgrid[0:height, 0:width]
        self._pix = np.c_[xs.ravel() + 0.5, ys.ravel() + 0.5]

    def _hull_mask(self, uv: np.ndarray) -> np.ndarray:
        try:
            hull = uv[ConvexHull(uv).vertices]
        except (QhullError, ValueError):
            return np.zeros((self.height, self.width), bool)
        return MplPath(hull).contains_points(self._pix).reshape(self.height, self.width)

    def prepare(self, scene: SceneSpec) -> object:
        return None

    def render(self, scene: SceneSpec, amodal: bool = True, prepared: object = None) -> RenderOutput:
        h, w = self.height, self.width
        K = scene.camera.intrinsics
        depth = np.full((h, w), np.inf, np.float32)
        instance = np.zeros((h, w), np.int32)
        color = np.zeros((h, w, 3), np.float32)
        masks: dict[int, np.ndarray] = {}
        for i, obj in enumerate(scene.objects):
            pts = camera_points(obj, scene.camera.pose)
            if (pts[:, 2] <= 0).any():
                continue
            mask = self._hull_mask(project_points(pts, K))
            z = float(pts[:, 2].mean())
            if obj.role == "object":
                masks[i] = mask
            closer = mask & (z < depth)
            depth[closer] = z
            color[closer] = _flat_color(obj)
            instance[closer] = 0 if obj.role == "background" else i + 1
        depth[np.isinf(depth)] = 0.0
        rgb = (np.clip(color, 0, 1) * 255).astype(np.uint8)
        return RenderOutput(color=rgb, depth=depth, instance=instance, amodal=masks if amodal else {})

    def close(self) -> None:
        pass
