"""Glyph outlines and 3D meshes for the ``digits`` scenario.

Two font families, both installed with the project (no downloads):

- outline fonts shipped with matplotlib (DejaVu, STIX, Computer Modern): ``TextPath`` →
  shapely polygons (holes found by containment) → stroke width by polygon buffering;
- single-stroke Hershey fonts (PyPI ``Hershey-Fonts``): centre lines buffered by the stroke
  width, which makes them look hand-drawn.

Outlines are normalised to height 1 (centred at the origin, y up) and extruded along +z with
``trimesh.creation.extrude_polygon`` (mapbox-earcut triangulates). Meshes are cached on the
quantised arguments, so a shard re-uses a few hundred meshes rather than building thousands.
"""

from __future__ import annotations

import os
from functools import cache, lru_cache
from typing import Any

import numpy as np
import shapely
import trimesh
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.ops import unary_union

OUTLINE_FONTS = {
    "dejavu-sans": "DejaVuSans.ttf",
    "dejavu-sans-bold": "DejaVuSans-Bold.ttf",
    "dejavu-serif": "DejaVuSerif.ttf",
    "dejavu-mono": "DejaVuSansMono.ttf",
    "stix": "STIXGeneral.ttf",
    "stix-italic": "STIXGeneralItalic.ttf",
    "cm-sans": "cmss10.ttf",
}
HERSHEY_FONTS = {
    "hershey-futural": "futural",
    "hershey-cursive": "cursive",
    "hershey-scripts": "scripts",
    "hershey-scriptc": "scriptc",
    "hershey-rowmans": "rowmans",
    "hershey-timesi": "timesi",
}
FONTS = [*OUTLINE_FONTS, *HERSHEY_FONTS]


def _font_path(name: str) -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", OUTLINE_FONTS[name])


def _polygons_from_rings(rings: list[np.ndarray]) -> Polygon | MultiPolygon:
    """Even-odd fill: a ring inside an odd number of others is a hole."""
    polys = [Polygon(r).buffer(0) for r in rings if len(r) >= 3]
    polys = [p for p in polys if p.area > 1e-9]
    shape = Polygon()
    for p in sorted(polys, key=lambda p: -p.area):
        shape = shape.symmetric_difference(p)
    return shape


def _outline_glyph(font: str, char: str) -> Polygon | MultiPolygon:
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), char, size=1.0, prop=FontProperties(fname=_font_path(font)))
    return _polygons_from_rings([np.asarray(r) for r in path.to_polygons()])


@cache
def _hershey_font(font: str) -> Any:
    from HersheyFonts import HersheyFonts

    hf = HersheyFonts()
    hf.load_default_font(HERSHEY_FONTS[font])
    hf.normalize_rendering(1.0)
    return hf


def _hershey_glyph(font: str, char: str, width: float) -> Polygon | MultiPolygon:
    hf = _hershey_font(font)
    lines = [LineString(seg) for seg in hf.lines_for_text(char)]
    return unary_union([ln.buffer(width / 2, cap_style="round", join_style="round") for ln in lines])


def _normalise(shape: Polygon | MultiPolygon) -> Polygon | MultiPolygon:
    x0, y0, x1, y1 = shape.bounds
    scale = 1.0 / max(y1 - y0, 1e-9)
    shape = shapely.affinity.translate(shape, -(x0 + x1) / 2, -(y0 + y1) / 2)
    return shapely.affinity.scale(shape, scale, scale, origin=(0, 0))


@lru_cache(maxsize=512)
def glyph_shape(font: str, char: str, stroke: float) -> Polygon | MultiPolygon:
    """Normalised 2D glyph (height 1). ``stroke`` in [0, 1]: 0 = thin, 1 = heavy."""
    if font in HERSHEY_FONTS:
        shape = _hershey_glyph(font, char, width=0.04 + 0.16 * stroke)
    else:
        shape = _outline_glyph(font, char)
        height = shape.bounds[3] - shape.bounds[1]
        delta = (stroke - 0.5) * 0.06 * height  # thin or thicken the outline
        thinned = shape.buffer(delta, join_style="mitre")
        shape = thinned if thinned.area > 0.15 * shape.area else shape
    return _normalise(shape)


@lru_cache(maxsize=1024)
def _unit_glyph_mesh(font: str, char: str, stroke: float) -> trimesh.Trimesh:
    shape = glyph_shape(font, char, stroke)
    parts = list(shape.geoms) if isinstance(shape, MultiPolygon) else [shape]
    meshes = [trimesh.creation.extrude_polygon(p, height=1.0) for p in parts if p.area > 1e-6]
    mesh = trimesh.util.concatenate(meshes)
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"glyph {char!r} of font {font!r} produced no mesh")
    mesh.apply_translation([0.0, 0.0, -1.0])
    return mesh


def glyph_mesh(font: str, char: str, stroke: float, depth: float) -> trimesh.Trimesh:
    """Extruded glyph: front face at z = 0, back face at z = -depth, height 1 (a new mesh)."""
    mesh = _unit_glyph_mesh(font, char, stroke).copy()
    mesh.vertices[:, 2] *= depth
    return mesh


def quantise(x: float, step: float) -> float:
    return float(round(round(x / step) * step, 6))
