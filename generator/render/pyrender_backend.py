"""pyrender offscreen backend (EGL): NVIDIA GPU or Mesa's llvmpipe CPU rasterizer.

One :class:`PyrenderRenderer` per process, reused across images. ``PYOPENGL_PLATFORM=egl``
must be set before OpenGL is imported; this module sets it if unset. ``EGL_DEVICE_ID`` picks
a GPU. Passes per image: colour+depth, instance ids (SEG), and one DEPTH_ONLY pass per
labelled object that something else may cover (its amodal mask; for the rest it equals the
visible mask, see :func:`generator.render.possibly_occluded`).
"""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from typing import Any

import numpy as np

from generator.errors import RenderError
from generator.render import RenderOutput, SceneObject, SceneSpec, possibly_occluded
from generator.timing import NO_TIMES, StageTimes


def _import_pyrender() -> Any:
    try:
        import pyrender
    except Exception as exc:  # ImportError, or OpenGL failing to load libEGL
        raise RenderError(
            f"pyrender/EGL cannot be imported ({type(exc).__name__}: {exc}); install Mesa's EGL "
            "(Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) or an NVIDIA driver, and keep "
            "PYOPENGL_PLATFORM=egl"
        ) from exc
    return pyrender


def _mesh(pyrender: Any, obj: SceneObject) -> Any:
    import trimesh

    mat_kwargs = {"metallicFactor": float(obj.metallic), "roughnessFactor": float(obj.roughness)}
    if obj.texture is not None and obj.uv is not None:
        tex = pyrender.Texture(source=obj.texture, source_channels="RGB")
        mat = pyrender.MetallicRoughnessMaterial(baseColorTexture=tex, **mat_kwargs)
        prim = pyrender.Primitive(
            positions=obj.vertices.astype(np.float32),
            indices=obj.faces.astype(np.uint32),
            normals=np.tile([0.0, 0.0, 1.0], (len(obj.vertices), 1)).astype(np.float32),
            texcoord_0=obj.uv.astype(np.float32),
            material=mat,
        )
        return pyrender.Mesh([prim])
    mat = pyrender.MetallicRoughnessMaterial(baseColorFactor=(*obj.color, 1.0), **mat_kwargs)
    tm = trimesh.Trimesh(obj.vertices, obj.faces, process=False)
    return pyrender.Mesh.from_trimesh(tm, material=mat, smooth=False)


class PyrenderRenderer:
    def __init__(self, width: int, height: int, times: StageTimes = NO_TIMES) -> None:
        self.pyrender = _import_pyrender()
        self.width, self.height, self.times = width, height, times
        try:
            self._r = self.pyrender.OffscreenRenderer(width, height)
        except Exception as exc:
            raise RenderError(
                f"EGL offscreen context could not be created ({type(exc).__name__}: {exc}); "
                "check that Mesa's EGL (CPU) or the NVIDIA driver (GPU) is installed and that "
                "PYOPENGL_PLATFORM=egl is set before anything imports OpenGL"
            ) from exc

    def _scene(self, spec: SceneSpec) -> tuple[Any, list[Any]]:
        pr = self.pyrender
        scene = pr.Scene(bg_color=(*spec.bg_color, 1.0), ambient_light=spec.ambient)
        nodes = [scene.add(_mesh(pr, o), pose=o.pose) for o in spec.objects]
        cam = spec.camera
        scene.add(
            pr.PerspectiveCamera(yfov=cam.yfov, aspectRatio=cam.width / cam.height, znear=cam.znear, zfar=cam.zfar),
            pose=cam.pose,
        )
        for light in spec.lights:
            cls = pr.DirectionalLight if light.kind == "directional" else pr.PointLight
            scene.add(cls(color=light.color, intensity=light.intensity), pose=light.pose)
        return scene, nodes

    def render(self, spec: SceneSpec, amodal: bool = True) -> RenderOutput:
        if (spec.camera.width, spec.camera.height) != (self.width, self.height):
            raise RenderError(
                f"camera size {spec.camera.width}x{spec.camera.height} != renderer size {self.width}x{self.height}"
            )
        pr, times = self.pyrender, self.times
        with times("gl_scene"):
            scene, nodes = self._scene(spec)
        with times("gl_colour_depth"):  # includes uploading the scene's meshes and textures
            color, depth = self._r.render(scene)
        with times("gl_seg"):
            seg_map = {
                n: (i + 1, 0, 0)
                for i, (n, o) in enumerate(zip(nodes, spec.objects, strict=True))
                if o.role != "background"
            }
            seg, _ = self._r.render(scene, flags=pr.RenderFlags.SEG, seg_node_map=seg_map)
            instance = seg[..., 0].astype(np.int32)
        masks: dict[int, np.ndarray] = {}
        if amodal:  # objects nothing overlaps: amodal == visible, filled in by the caller
            with times("gl_amodal"):
                for i in sorted(possibly_occluded(spec)):
                    for j, n in enumerate(nodes):
                        n.mesh.is_visible = j == i
                    masks[i] = self._r.render(scene, flags=pr.RenderFlags.DEPTH_ONLY) > 0
                for n in nodes:
                    n.mesh.is_visible = True
        return RenderOutput(
            color=np.ascontiguousarray(color[..., :3]), depth=depth.astype(np.float32), instance=instance, amodal=masks
        )

    def close(self) -> None:
        self._r.delete()
