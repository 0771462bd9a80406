"""Mesh assets of a scenario: the ``assets:`` section, loading (trimesh) and validation.

A scenario may declare its objects as files instead of Python: per class, a mesh file or a
folder of them (``.obj`` with ``.mtl`` and textures, ``.glb``/``.gltf``, ``.ply``, ``.stl``),
a target size or normalisation rule, optional keypoints and material overrides. Everything is
checked when the scenario loads (:func:`check_assets`), so ``synthloop render`` fails in one
line before it writes anything. Meshes are loaded once per process (:func:`load_asset`, cached
by path, size and mtime). This module is plain NumPy + trimesh: no renderer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from generator.errors import field_error
from generator.fingerprint import sha256_file

if TYPE_CHECKING:
    from generator.scenario import ScenarioSpec

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".stl")
TEXTURE_SUFFIXES = (".mtl", ".png", ".jpg", ".jpeg", ".bin")  # hashed beside a mesh (its material files)
DEFAULT_MAX_FACES = 200_000
SCENE_EXTENT = 12.0  # world units: the widest view the built-in asset builder has (camera.distance <= 15)


class MaterialOverride(BaseModel):
    """Replaces what the file says (unset fields keep the file's value)."""

    model_config = ConfigDict(extra="forbid")

    base_color: tuple[float, float, float] | None = None  # linear RGB 0..1; multiplies a texture
    metallic: float | None = Field(default=None, ge=0.0, le=1.0)
    roughness: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> MaterialOverride:
        if self.base_color is not None and not all(0.0 <= c <= 1.0 for c in self.base_color):
            raise ValueError("base_color must be three numbers in [0, 1]")
        return self


class AssetSpec(BaseModel):
    """One class's objects: a mesh file, or a folder whose mesh files are its variants."""

    model_config = ConfigDict(extra="forbid")

    file: str  # relative to the scenario YAML (or absolute)
    size: float | None = Field(default=None, gt=0.0)  # target largest extent, world units
    normalize: Literal["unit", "none"] | None = None  # unit: largest extent 1; none: file units
    keypoints: Literal["bbox_corners"] | None = None
    material: MaterialOverride = Field(default_factory=MaterialOverride)
    color_jitter: float = Field(default=0.0, ge=0.0, le=1.0)  # per-channel multiplicative amplitude
    max_faces: int = Field(default=DEFAULT_MAX_FACES, ge=1)
    allow_non_manifold: bool = False

    @model_validator(mode="after")
    def _check(self) -> AssetSpec:
        if self.size is not None and self.normalize is not None:
            raise ValueError("give either `size` or `normalize`, not both")
        return self

    def scale_for(self, extent: float) -> float:
        """Factor from file units to world units for a mesh whose largest extent is ``extent``."""
        if self.size is not None:
            return self.size / extent
        if self.normalize == "none":
            return 1.0
        return 1.0 / extent  # "unit", and the default


@dataclass
class LoadedMesh:
    """One mesh file, centred on its bounding box and scaled to world units."""

    path: Path
    vertices: np.ndarray  # (N, 3) float64
    faces: np.ndarray  # (M, 3) int64
    normals: np.ndarray  # (N, 3)
    uv: np.ndarray | None  # (N, 2), with `texture`
    texture: np.ndarray | None  # (H, W, 3) uint8
    color: tuple[float, float, float]  # base colour factor (multiplies the texture)
    metallic: float
    roughness: float
    extent: float  # largest bounding-box extent after scaling (world units)
    corners: np.ndarray  # (8, 3) bounding-box corners, object frame

    @property
    def mean_color(self) -> tuple[float, float, float]:
        """Flat stand-in colour (the fake backend): the texture's mean times the base colour."""
        c = np.asarray(self.color, float)
        if self.texture is not None:
            c = c * self.texture.reshape(-1, 3).mean(axis=0) / 255.0
        return (float(c[0]), float(c[1]), float(c[2]))


def bbox_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 8 corners of an axis-aligned box, in the documented keypoint order: index bits
    (x, y, z) = (k & 1, k >> 1 & 1, k >> 2 & 1), 0 = min, 1 = max."""
    return np.array([[(hi if k >> a & 1 else lo)[a] for a in range(3)] for k in range(8)], float)


def asset_files(spec: AssetSpec, base: Path) -> list[Path]:
    p = Path(spec.file)
    p = p if p.is_absolute() else base / p
    if p.is_dir():
        return sorted(q for q in p.iterdir() if q.suffix.lower() in MESH_SUFFIXES and q.is_file())
    return [p]


_CACHE: dict[tuple[object, ...], LoadedMesh] = {}


def _where(scenario: str, cls: str) -> str:
    return f"scenario {scenario}: assets.{cls}.file"


def _missing_textures(path: Path) -> list[str]:
    """Texture files an .obj's .mtl or a .gltf names that do not exist."""
    missing: list[str] = []
    if path.suffix.lower() == ".obj":
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("mtllib"):
                mtl = path.parent / line.split(None, 1)[1].strip()
                if not mtl.is_file():
                    missing.append(mtl.name)
                    continue
                for ml in mtl.read_text(errors="replace").splitlines():
                    m = re.match(r"\s*(map_Kd|map_Ka|map_Ks|map_Bump|map_d|bump|norm)\s+(.+)", ml)
                    if m:
                        tex = m.group(2).split()[-1]  # options such as "-bm 1" come first
                        if not (mtl.parent / tex).is_file():
                            missing.append(tex)
    elif path.suffix.lower() == ".gltf":
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            return missing
        for entry in doc.get("images", []) + doc.get("buffers", []):
            uri = entry.get("uri")
            if uri and not uri.startswith("data:") and not (path.parent / uri).is_file():
                missing.append(uri)
    return missing


def _rgb(image: object) -> np.ndarray | None:
    if image is None:
        return None
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


def _factor(value: object, default: float) -> float:
    return default if value is None else float(value)  # type: ignore[arg-type]


def load_asset(path: Path, spec: AssetSpec, where: str) -> LoadedMesh:
    """Load, check and normalise one mesh file (cached); one ConfigError line per problem."""
    import trimesh

    if not path.is_file():
        raise field_error(where, "the mesh file must exist", str(path),
                          "check the path (relative to the scenario YAML)")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise field_error(where, f"must be one of {', '.join(MESH_SUFFIXES)}", path.name, "convert the mesh")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, spec.model_dump_json())
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    missing = _missing_textures(path)
    if missing:
        raise field_error(where, "every texture its material names must exist", missing[0],
                          f"put {missing[0]!r} next to {path.name} or fix the material file")
    try:
        loaded = trimesh.load(str(path), process=False)  # processing would drop NaN vertices silently
    except Exception as exc:  # trimesh raises many types for a corrupt file
        raise field_error(where, "must be a readable mesh", path.name,
                          f"trimesh failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from exc
    mesh: trimesh.Trimesh | None = None
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if len(geoms) == 1:
            mesh = geoms[0]
        elif geoms:
            joined = trimesh.util.concatenate(geoms)
            mesh = joined if isinstance(joined, trimesh.Trimesh) else None
    elif isinstance(loaded, trimesh.Trimesh):
        mesh = loaded
    if mesh is None or len(mesh.faces) == 0:
        raise field_error(where, "the mesh must have faces (triangles)", path.name,
                          "export surfaces, not a point cloud or lines")
    if len(mesh.faces) > spec.max_faces:
        raise field_error(where, f"must have at most {spec.max_faces} faces (face budget)",
                          f"{path.name}: {len(mesh.faces)} faces",
                          "decimate the mesh or raise `max_faces` for this asset")
    if not np.isfinite(np.asarray(mesh.vertices, dtype=np.float64)).all():
        raise field_error(where, "vertices must be finite numbers", "NaN or inf in " + path.name, "repair the mesh")
    mesh.process()  # what trimesh.load does by default: merge duplicate vertices (UVs kept apart)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.faces, np.int64)
    if not spec.allow_non_manifold:
        edges = np.sort(mesh.edges, axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        bad = int((counts > 2).sum())
        if bad:
            raise field_error(where, "the mesh must be manifold (no edge shared by more than two faces)",
                              f"{bad} such edges in {path.name}",
                              "repair it, or set `allow_non_manifold: true` for this asset")
    lo, hi = v.min(axis=0), v.max(axis=0)
    raw_extent = float((hi - lo).max())
    if not raw_extent > 0:
        raise field_error(where, "the mesh must have a non-zero extent", path.name, "export a mesh with volume")
    scale = spec.scale_for(raw_extent)
    centre = (lo + hi) / 2
    verts = (v - centre) * scale
    uv = texture = None
    color = (0.8, 0.8, 0.8)
    metallic, roughness = 0.0, 0.6
    vis: Any = mesh.visual  # TextureVisuals, ColorVisuals or None
    if getattr(vis, "kind", None) == "texture" and getattr(vis, "uv", None) is not None and len(vis.uv) == len(v):
        mat = vis.material
        pbr = mat.to_pbr() if hasattr(mat, "to_pbr") else mat
        color = (1.0, 1.0, 1.0)  # glTF's default base colour factor: the texture as it is
        texture = _rgb(getattr(pbr, "baseColorTexture", None))
        if texture is not None:
            uv = np.asarray(vis.uv, dtype=np.float64)
        bcf = getattr(pbr, "baseColorFactor", None)
        if bcf is not None:
            c = np.asarray(bcf, float)[:3]
            c = c / 255.0 if c.max() > 1.0 or np.asarray(bcf).dtype == np.uint8 else c
            color = (float(c[0]), float(c[1]), float(c[2]))
        # pyrender's and glTF's metallic default is 1 (a textured OBJ then renders black
        # under plain lights): 0 unless the file sets it
        metallic = _factor(getattr(pbr, "metallicFactor", None), 0.0)
        roughness = _factor(getattr(pbr, "roughnessFactor", None), 0.6)
    elif getattr(vis, "kind", None) in ("face", "vertex"):
        cols = np.asarray(vis.face_colors if vis.kind == "face" else vis.vertex_colors, float)[:, :3] / 255.0
        c = cols.mean(axis=0)
        color = (float(c[0]), float(c[1]), float(c[2]))
    m = spec.material
    if m.base_color is not None:
        color = m.base_color
    if m.metallic is not None:
        metallic = m.metallic
    if m.roughness is not None:
        roughness = m.roughness
    if uv is not None:  # textured: per-corner normals, smooth below the crease angle, sharp above
        normals = crease_normals(mesh)
        corners = f.ravel()
        verts, uv, f = verts[corners], uv[corners], np.arange(len(corners), dtype=np.int64).reshape(-1, 3)
    else:
        normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    out = LoadedMesh(
        path=path, vertices=verts, faces=f, normals=normals, uv=uv, texture=texture,
        color=color, metallic=float(min(max(metallic, 0.0), 1.0)), roughness=float(min(max(roughness, 0.0), 1.0)),
        extent=raw_extent * scale, corners=bbox_corners((lo - centre) * scale, (hi - centre) * scale),
    )
    _CACHE[key] = out
    return out


def crease_normals(mesh: Any, angle_deg: float = 30.0) -> np.ndarray:
    """One normal per face corner (``(3 * faces, 3)``, in ``faces.ravel()`` order): the
    area-weighted mean of the normals of the faces around the corner's vertex that turn less
    than ``angle_deg`` from this face, so a cylinder's side is smooth and a box's edges stay
    sharp (plain vertex normals would round a bracket's corners into a blur)."""
    fn = np.asarray(mesh.face_normals, dtype=np.float64)
    area = np.asarray(mesh.area_faces, dtype=np.float64)
    corners = np.asarray(mesh.faces, dtype=np.int64).ravel()
    own = np.repeat(np.arange(len(fn)), 3)
    around = np.asarray(mesh.vertex_faces)[corners]  # (3M, max degree), padded with -1
    nb = fn[np.clip(around, 0, None)]
    keep = (around >= 0) & (np.einsum("cdk,ck->cd", nb, fn[own]) > np.cos(np.radians(angle_deg)))
    n = (nb * (keep * area[np.clip(around, 0, None)])[..., None]).sum(axis=1)
    n[~keep.any(axis=1)] = fn[own][~keep.any(axis=1)]
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 1e-12, n / np.maximum(length, 1e-12), fn[own])


def _max_scale(spec: ScenarioSpec) -> float:
    p = spec.parameters.get("object.scale")
    return float(p.range[1]) if p is not None and p.range is not None else 1.0


def check_assets(spec: ScenarioSpec, base: Path, scenario: str) -> dict[str, list[LoadedMesh]]:
    """Load every declared asset and apply the rules (files and textures exist, faces, face
    budget, finite vertices, manifold, fits the scene); the first problem is one ConfigError."""
    assets = spec.assets or {}
    out: dict[str, list[LoadedMesh]] = {}
    limit = SCENE_EXTENT
    max_scale = _max_scale(spec)
    for cls, a in assets.items():
        where = _where(scenario, cls)
        files = asset_files(a, base)
        if not files:
            raise field_error(where, f"a folder must hold at least one mesh file ({', '.join(MESH_SUFFIXES)})",
                              a.file, "add meshes or name a file")
        meshes = [load_asset(p, a, where) for p in files]
        for mesh in meshes:
            biggest = mesh.extent * max_scale
            if biggest > limit or not math.isfinite(biggest):
                raise field_error(
                    where, f"the object must fit the scene (largest extent x object.scale <= {limit:g} world units)",
                    f"{mesh.path.name}: {biggest:.4g}",
                    "the file is probably in other units (mm vs m): set `size:` (world units) or `normalize: unit`")
        out[cls] = meshes
    return out


def asset_digest(spec: ScenarioSpec, base: Path) -> dict[str, str]:
    """sha256 of every asset file and the textures beside it (relative path -> hex): part of a
    shard's fingerprint, so an edited mesh or texture makes a new shard."""
    out: dict[str, str] = {}
    for a in (spec.assets or {}).values():
        for p in asset_files(a, base):
            siblings = sorted(q for q in p.parent.iterdir() if q.suffix.lower() in TEXTURE_SUFFIXES)
            for q in [p, *siblings]:
                if q.is_file():
                    rel = q.relative_to(base).as_posix() if q.is_relative_to(base) else str(q)
                    out[rel] = sha256_file(q)
    return dict(sorted(out.items()))
