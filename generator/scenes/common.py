"""Geometry, colour, lights and backgrounds shared by scene builders."""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np
from scipy.ndimage import zoom

from generator.render import Camera, Light, SceneObject


def rot_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])


def rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])


def translate(x: float, y: float, z: float) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = (x, y, z)
    return m


def tilt(deg: float, direction_deg: float) -> np.ndarray:
    """Rotate by ``deg`` about the in-plane axis at angle ``direction_deg`` from +x."""
    return rot_z(direction_deg) @ rot_x(deg) @ rot_z(-direction_deg)


def orbit_camera(distance: float, elevation_deg: float, yfov_deg: float, width: int, height: int) -> Camera:
    """Camera looking at the origin from ``distance``, raised by ``elevation`` from the +z axis."""
    pose = rot_x(elevation_deg) @ translate(0.0, 0.0, distance)
    return Camera(
        yfov=float(np.radians(yfov_deg)), width=width, height=height, pose=pose, znear=0.05, zfar=distance + 50.0
    )


def visible_half_height(camera: Camera, distance: float) -> float:
    return float(distance * np.tan(camera.yfov / 2))


def kelvin_to_rgb(kelvin: float) -> tuple[float, float, float]:
    """Approximate black-body colour (Tanner Helland's fit), normalised to max 1."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.7 * (t - 60) ** -0.1332
    g = 99.47 * np.log(t) - 161.12 if t <= 66 else 288.12 * (t - 60) ** -0.0755
    b = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.52 * np.log(t - 10) - 305.04)
    rgb = np.clip([r, g, b], 0, 255) / 255.0
    return tuple(float(x) for x in rgb / rgb.max())  # type: ignore[return-value]


def hls_color(hue: float, lightness: float, saturation: float) -> tuple[float, float, float]:
    return tuple(float(x) for x in colorsys.hls_to_rgb(hue % 1.0, lightness, saturation))  # type: ignore[return-value]


def directional_lights(
    count: int, intensity: float, elevation: float, azimuth: float, kelvin: float, rng: np.random.Generator
) -> list[Light]:
    """A key light at (elevation, azimuth) plus ``count - 1`` fill lights at random angles,
    sharing ``intensity`` (key light 60% when there are fills)."""
    color = kelvin_to_rgb(kelvin)
    shares = [1.0] if count == 1 else [0.6] + [0.4 / (count - 1)] * (count - 1)
    lights = []
    for k, share in enumerate(shares):
        el = elevation if k == 0 else float(rng.uniform(20, 90))
        az = azimuth if k == 0 else float(rng.uniform(0, 360))
        # a directional light shines along its -z; tilt it away from the +z axis by 90 - elevation
        pose = rot_z(az) @ rot_x(90.0 - el)
        lights.append(Light(kind="directional", color=color, intensity=float(intensity * share), pose=pose))
    return lights


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    cells = max(2, round(1.0 / max(scale, 1e-3)))
    grid = rng.random((cells, cells))
    out = zoom(grid, size / cells, order=3)[:size, :size]
    return (out - out.mean()) / (out.std() + 1e-9)


def background_texture(
    kind: str,
    lightness: float,
    scale: float,
    hue: float,
    rng: np.random.Generator,
    photo_loader: Callable[[np.random.Generator], np.ndarray] | None = None,
    size: int = 256,
) -> np.ndarray:
    """An albedo texture (uint8 RGB) whose mean lightness is about ``lightness``."""
    tint = np.array(hls_color(hue, 0.5, 0.25)) / 0.5
    if kind == "solid":
        lum = np.full((size, size), lightness)
    elif kind == "gradient":
        ang = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
        lum = lightness + 0.6 * (np.cos(ang) * xs + np.sin(ang) * ys)
    elif kind == "noise":
        lum = lightness + 0.18 * _smooth_noise(rng, size, scale)
    elif kind == "checker":
        period = max(2, int(size * scale))
        ys, xs = np.mgrid[0:size, 0:size] // period
        lum = lightness + 0.25 * np.where((xs + ys) % 2 == 0, 1.0, -1.0)
    elif kind == "photo" and photo_loader is not None:
        photo = photo_loader(rng).astype(np.float64) / 255.0
        photo = photo - photo.mean() + lightness
        return (np.clip(photo, 0, 1) * 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    rgb = np.clip(lum[..., None] * tint[None, None, :], 0, 1)
    return (rgb * 255).astype(np.uint8)


def background_plane(camera: Camera, distance: float, texture: np.ndarray) -> SceneObject:
    """A textured backdrop facing the camera at ``distance`` along its view axis, filling the view."""
    half_h = 1.15 * distance * np.tan(camera.yfov / 2)
    half_w = half_h * camera.width / camera.height
    v = np.array([[-half_w, -half_h, 0], [half_w, -half_h, 0], [half_w, half_h, 0], [-half_w, half_h, 0]], float)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return SceneObject(
        vertices=v,
        faces=faces,
        pose=camera.pose @ translate(0, 0, -distance),
        color=(1, 1, 1),
        metallic=0.0,
        roughness=1.0,
        role="background",
        texture=texture,
        uv=uv,
    )
