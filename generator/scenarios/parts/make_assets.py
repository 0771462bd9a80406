"""Make the `parts` scenario's mesh assets: four small textured parts, modelled with trimesh.

    python generator/scenarios/parts/make_assets.py     # rewrites the files beside this script

mug and gear: Wavefront OBJ + MTL + PNG texture; bolt and bracket: binary glTF (GLB, texture
embedded; the bolt declares metallicFactor 0.6, the bracket none, which the loader reads as 0).
Everything is deterministic (fixed seeds), so re-running it reproduces the committed files
(and the `parts` fingerprints). Sizes are in millimetres, as CAD exports often are: the
scenario's `size:` rescales them to world units.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from PIL import Image
from shapely.geometry import Point, Polygon
from trimesh.exchange.gltf import export_glb
from trimesh.exchange.obj import export_obj
from trimesh.visual.material import PBRMaterial, SimpleMaterial
from trimesh.visual.texture import TextureVisuals

HERE = Path(__file__).parent
TEX = 64  # texture side, pixels


def _write(path: Path, data: bytes) -> None:
    """Atomic: a temporary sibling renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _png(img: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _cylindrical_uv(mesh: trimesh.Trimesh) -> np.ndarray:
    """u = angle around z, v = height; faces crossing the seam get u + 1 (no smearing)."""
    v = mesh.vertices
    u = (np.arctan2(v[:, 1], v[:, 0]) / (2 * np.pi)) % 1.0
    z = v[:, 2]
    h = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
    uv = np.c_[u, h]
    fu = uv[mesh.faces, 0]
    wrap = (fu.max(axis=1) - fu.min(axis=1)) > 0.5
    for f in np.flatnonzero(wrap):
        for j in mesh.faces[f]:
            if uv[j, 0] < 0.5:
                uv[j, 0] += 1.0
    return uv


def _planar_uv(mesh: trimesh.Trimesh) -> np.ndarray:
    v = mesh.vertices
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = max(float((hi - lo)[:2].max()), 1e-9)
    return np.c_[(v[:, 0] - lo[0]) / span, (v[:, 1] - lo[1]) / span]


def _textured(mesh: Any, uv_fn: Callable[[Any], np.ndarray], image: Image.Image, material: Any) -> trimesh.Trimesh:
    mesh = mesh.copy()
    mesh.unmerge_vertices()  # one vertex per face corner: flat shading, seam-safe UVs
    mesh.visual = TextureVisuals(uv=uv_fn(mesh), image=image, material=material)
    return mesh


def mug(rng: np.random.Generator) -> trimesh.Trimesh:
    body = trimesh.creation.cylinder(radius=40.0, height=95.0, sections=40)
    handle = trimesh.creation.torus(major_radius=26.0, minor_radius=6.0, major_sections=24, minor_sections=10)
    handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    handle.apply_translation([52.0, 0.0, 0.0])
    mesh = trimesh.util.concatenate([body, handle])
    img = np.full((TEX, TEX, 3), (236, 232, 220), float)  # glazed off-white
    img[TEX // 3: TEX // 2] = (200, 40, 40)  # a red band
    img[(np.arange(TEX)[:, None] + np.arange(TEX)[None, :]) % 16 < 3] *= 0.85  # faint stripes
    img += rng.normal(0, 4, img.shape)
    mat = SimpleMaterial(name="mug", image=_png(img), diffuse=(255, 255, 255, 255), glossiness=40.0)
    return _textured(mesh, _cylindrical_uv, _png(img), mat)


def gear(rng: np.random.Generator) -> trimesh.Trimesh:
    teeth, r_out, r_in = 12, 50.0, 40.0
    angles = np.linspace(0, 2 * np.pi, teeth * 4, endpoint=False)
    radii = np.tile([r_in, r_out, r_out, r_in], teeth)
    outline = np.c_[radii * np.cos(angles), radii * np.sin(angles)]
    poly = Polygon(outline).difference(Point(0, 0).buffer(12.0, 16))
    mesh = trimesh.creation.extrude_polygon(poly, height=14.0)
    img = np.full((TEX, TEX, 3), (230, 140, 30), float)  # orange anodised
    img *= (0.9 + 0.1 * rng.random((TEX, TEX)))[..., None]
    mat = SimpleMaterial(name="gear", image=_png(img), diffuse=(255, 255, 255, 255), glossiness=20.0)
    return _textured(mesh, _planar_uv, _png(img), mat)


def bolt(rng: np.random.Generator) -> trimesh.Trimesh:
    head = trimesh.creation.cylinder(radius=13.0, height=10.0, sections=6)
    head.apply_translation([0, 0, 5.0])
    shaft = trimesh.creation.cylinder(radius=7.0, height=60.0, sections=20)
    shaft.apply_translation([0, 0, -30.0])
    mesh = trimesh.util.concatenate([head, shaft])
    rows = np.arange(TEX)[:, None] * np.ones((1, TEX))
    grey = 150 + 40 * (np.sin(rows * 1.6) > 0) + rng.normal(0, 6, (TEX, TEX))  # thread-like bands
    img = np.stack([grey, grey * 0.98, grey * 0.9], axis=-1)
    mat = PBRMaterial(name="bolt", baseColorTexture=_png(img), metallicFactor=0.6, roughnessFactor=0.4)
    return _textured(mesh, _cylindrical_uv, _png(img), mat)


def bracket(rng: np.random.Generator) -> trimesh.Trimesh:
    profile = Polygon([(0, 0), (70, 0), (70, 8), (8, 8), (8, 50), (0, 50)])
    mesh = trimesh.creation.extrude_polygon(profile, height=30.0)
    img = np.full((TEX, TEX, 3), (40, 90, 200), float)  # blue paint
    scratches = rng.random((TEX, TEX)) < 0.03
    img[scratches] = (190, 190, 200)
    mat = PBRMaterial(name="bracket", baseColorTexture=_png(img), roughnessFactor=0.7)
    return _textured(mesh, _planar_uv, _png(img), mat)


def write_obj(mesh: trimesh.Trimesh, name: str) -> None:
    text, files = export_obj(mesh, include_normals=False, return_texture=True, mtl_name=f"{name}.mtl", digits=4)
    _write(HERE / f"{name}.obj", text.encode())
    for fname, data in files.items():
        _write(HERE / fname, data)


def write_glb(mesh: trimesh.Trimesh, name: str) -> None:
    _write(HERE / f"{name}.glb", export_glb(trimesh.Scene(mesh)))


def main() -> None:
    write_obj(mug(np.random.default_rng(1)), "mug")
    write_obj(gear(np.random.default_rng(2)), "gear")
    write_glb(bolt(np.random.default_rng(3)), "bolt")
    write_glb(bracket(np.random.default_rng(4)), "bracket")
    for p in sorted(HERE.iterdir()):
        if p.suffix in (".obj", ".mtl", ".png", ".glb"):
            print(f"{p.name:14s} {p.stat().st_size:7d} bytes")


if __name__ == "__main__":
    main()
