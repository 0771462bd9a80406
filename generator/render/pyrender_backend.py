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
        factor = {} if tuple(obj.color) == (1, 1, 1) else {"baseColorFactor": (*obj.color, 1.0)}
        mat = pyrender.MetallicRoughnessMaterial(baseColorTexture=tex, **factor, **mat_kwargs)
        normals = obj.normals if obj.normals is not None else np.tile([0.0, 0.0, 1.0], (len(obj.vertices), 1))
        prim = pyrender.Primitive(
            positions=obj.vertices.astype(np.float32),
            indices=obj.faces.astype(np.uint32),
            normals=normals.astype(np.float32),
            texcoord_0=obj.uv.astype(np.float32),
            material=mat,
        )
        return pyrender.Mesh([prim])
    mat = pyrender.MetallicRoughnessMaterial(baseColorFactor=(*obj.color, 1.0), **mat_kwargs)
    tm = trimesh.Trimesh(obj.vertices, obj.faces, process=False)
    return pyrender.Mesh.from_trimesh(tm, material=mat, smooth=False)


def _lean_reader(renderer: Any, what: str) -> Any:
    """A stand-in for pyrender's ``Renderer._read_main_framebuffer`` that resolves and reads
    only what the pass's caller uses, with the same GL calls pyrender makes for it:
    ``what="seg"``: the colour buffer's first channel (uint8 instance ids; pyrender also blits,
    reads and linearises depth, which the SEG pass's caller drops); ``what="mask"``: the depth
    buffer's covered pixels (``depth != 1``, exactly where pyrender's linear depth is > 0; it
    also resolves the colour buffer, which a DEPTH_ONLY pass does not return)."""
    from OpenGL import GL

    def read(scene: Any, flags: Any) -> Any:
        width, height = renderer._main_fb_dims
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, renderer._main_fb_ms)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, renderer._main_fb)
        if what == "seg":
            GL.glBlitFramebuffer(0, 0, width, height, 0, 0, width, height, GL.GL_COLOR_BUFFER_BIT, GL.GL_LINEAR)
            GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, renderer._main_fb)
            buf = GL.glReadPixels(0, 0, width, height, GL.GL_RGB, GL.GL_UNSIGNED_BYTE)
            return np.frombuffer(buf, dtype=np.uint8).reshape((height, width, 3))[::-1, :, 0]
        GL.glBlitFramebuffer(0, 0, width, height, 0, 0, width, height, GL.GL_DEPTH_BUFFER_BIT, GL.GL_NEAREST)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, renderer._main_fb)
        buf = GL.glReadPixels(0, 0, width, height, GL.GL_DEPTH_COMPONENT, GL.GL_FLOAT)
        return np.frombuffer(buf, dtype=np.float32).reshape((height, width))[::-1] != 1.0

    return read


class PyrenderRenderer:
    """``lean_reads``: SEG and DEPTH_ONLY passes read back only the buffer their caller uses
    (:func:`_lean_reader`; the same masks, checked against the plain pyrender path in
    tests/test_render_pipeline_fast.py); off, or when this pyrender lacks the internals it
    relies on, every pass goes through pyrender's own read-back."""

    def __init__(self, width: int, height: int, times: StageTimes = NO_TIMES, lean_reads: bool = True) -> None:
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
        # Tightly packed pixel rows for uploads and read-backs. OpenGL's default row alignment is
        # 4 bytes; pyrender uploads textures (e.g. a photo backdrop cropped to any side) with that
        # default, so an RGB texture whose row is not a multiple of 4 bytes was read sheared, and
        # past the end of its array: llvmpipe segfaulted when that array ended a memory page.
        from OpenGL import GL

        GL.glPixelStorei(GL.GL_UNPACK_ALIGNMENT, 1)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)
        inner = getattr(self._r, "_renderer", None)
        self._lean = lean_reads and all(
            hasattr(inner, a) for a in ("_read_main_framebuffer", "_main_fb", "_main_fb_ms", "_main_fb_dims")
        )

    def _pass(self, scene: Any, flags: Any, what: str, seg_node_map: Any = None) -> np.ndarray:
        """One SEG (``what="seg"``: uint8 ids) or DEPTH_ONLY (``what="mask"``: bool) pass."""
        if not self._lean:
            out = self._r.render(scene, flags=flags, seg_node_map=seg_node_map)
            return out[0][..., 0] if what == "seg" else out > 0
        inner = self._r._renderer
        inner._read_main_framebuffer = _lean_reader(inner, what)  # instance attribute, this pass only
        try:
            return np.asarray(self._r.render(scene, flags=flags, seg_node_map=seg_node_map))
        finally:
            del inner._read_main_framebuffer

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

    def prepare(self, spec: SceneSpec) -> object:
        """The pyrender scene graph and mesh nodes of ``spec``: plain Python and NumPy, no GL
        (meshes and textures are uploaded by the first pass), so any thread may build it."""
        return self._scene(spec)

    def render(self, spec: SceneSpec, amodal: bool = True, prepared: object = None) -> RenderOutput:
        if (spec.camera.width, spec.camera.height) != (self.width, self.height):
            raise RenderError(
                f"camera size {spec.camera.width}x{spec.camera.height} != renderer size {self.width}x{self.height}"
            )
        pr, times = self.pyrender, self.times
        if prepared is None:
            with times("gl_scene"):
                scene, nodes = self._scene(spec)
        else:
            scene, nodes = prepared  # type: ignore[misc]  # from prepare(spec), this very spec
        with times("gl_colour_depth"):  # includes uploading the scene's meshes and textures
            color, depth = self._r.render(scene)
        with times("gl_seg"):
            seg_map = {
                n: (i + 1, 0, 0)
                for i, (n, o) in enumerate(zip(nodes, spec.objects, strict=True))
                if o.role != "background"
            }
            instance = self._pass(scene, pr.RenderFlags.SEG, "seg", seg_map).astype(np.int32)
        masks: dict[int, np.ndarray] = {}
        if amodal:  # objects nothing overlaps: amodal == visible, filled in by the caller
            with times("gl_amodal"):
                for i in sorted(possibly_occluded(spec)):
                    for j, n in enumerate(nodes):
                        n.mesh.is_visible = j == i
                    masks[i] = self._pass(scene, pr.RenderFlags.DEPTH_ONLY, "mask")
                for n in nodes:
                    n.mesh.is_visible = True
        return RenderOutput(
            color=np.ascontiguousarray(color[..., :3]), depth=depth.astype(np.float32), instance=instance, amodal=masks
        )

    def close(self) -> None:
        self._r.delete()
