"""Mesh scenarios from asset files (generator/assets.py, generator/scenes/assets.py, `parts`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
import yaml
from PIL import Image
from trimesh.exchange.gltf import export_glb
from trimesh.exchange.obj import export_obj
from trimesh.visual.material import PBRMaterial, SimpleMaterial
from trimesh.visual.texture import TextureVisuals

from flows.cli import main
from generator.annotations import decode_rle, mask_bbox
from generator.errors import ConfigError
from generator.params import uniform_params
from generator.pipeline import RenderJob, render_shard
from generator.qc import validate_shard
from generator.sampling import SceneSample
from generator.scenario import load_scenario
from generator.shard import Shard

PARAMS = {  # the generic builder's parameters, declared so a test can fix every value
    "objects.count": {"type": "int", "range": [1, 2], "default": 1},
    "object.scale": {"type": "float", "scope": "object", "range": [0.8, 1.2], "default": 1.0},
    "object.yaw": {"type": "float", "scope": "object", "range": [0, 360], "default": 30},
    "object.pitch": {"type": "float", "scope": "object", "range": [-60, 60], "default": 30},
}


def _textured_cube(color: tuple[int, int, int], pbr: bool, name: str) -> trimesh.Trimesh:
    mesh = trimesh.creation.box(extents=(60.0, 40.0, 50.0))  # "millimetres"
    mesh.unmerge_vertices()
    img = Image.fromarray(np.full((8, 8, 3), color, np.uint8))
    uv = (mesh.vertices[:, :2] - mesh.vertices[:, :2].min(0)) / 60.0
    mat = (PBRMaterial(name=name, baseColorTexture=img) if pbr  # no metallicFactor: must read as 0
           else SimpleMaterial(name=name, image=img, diffuse=(255, 255, 255, 255)))
    mesh.visual = TextureVisuals(uv=uv, image=img, material=mat)
    return mesh


def write_obj(mesh: trimesh.Trimesh, folder: Path, name: str) -> Path:
    text, files = export_obj(mesh, return_texture=True, mtl_name=f"{name}.mtl")
    (folder / f"{name}.obj").write_text(text)
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
    return folder / f"{name}.obj"


def write_scenario(folder: Path, assets: dict, classes: list[str] | None = None, params: dict | None = None) -> Path:
    classes = classes or list(assets)
    spec = {
        "name": "mine", "version": 1, "classes": classes, "builder": "generator.scenes.assets:build",
        "image": {"width": 64, "height": 64}, "count_param": "objects.count",
        "parameters": {**PARAMS, "object.class": {"type": "categorical", "scope": "object", "choices": classes,
                                                  "default": classes[0]}, **(params or {})},
        "assets": assets,
    }
    path = folder / "mine.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    write_obj(_textured_cube((220, 40, 30), pbr=False, name="red"), tmp_path, "red")
    green = _textured_cube((30, 200, 60), pbr=True, name="green")
    (tmp_path / "green.glb").write_bytes(export_glb(trimesh.Scene(green)))
    return write_scenario(tmp_path, {"red": {"file": "red.obj", "size": 1.0, "keypoints": "bbox_corners"},
                                     "green": {"file": "green.glb", "size": 1.0}})


# ---------------------------------------------------------------------------------------- bad assets


def _bad_cases(tmp: Path) -> dict[str, tuple[dict, str]]:
    write_obj(_textured_cube((200, 0, 0), pbr=False, name="notex"), tmp, "notex")
    (tmp / "notex.png").unlink()  # the .mtl still names it
    (tmp / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    trimesh.creation.icosphere(subdivisions=2).export(tmp / "ball.stl")
    fan = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]],
                          [[0, 1, 2], [0, 1, 3], [0, 1, 4]], process=False)  # edge 0-1 in three faces
    fan.export(tmp / "fan.ply")
    trimesh.creation.box(extents=(500.0, 300.0, 200.0)).export(tmp / "big.ply")  # millimetres, unscaled
    (tmp / "empty").mkdir()
    (tmp / "nan.obj").write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n")
    return {
        "missing file": ({"file": "nope.obj"}, "assets.thing.file: the mesh file must exist"),
        "missing texture": ({"file": "notex.obj"}, "every texture its material names must exist, but got 'notex.png'"),
        "no faces": ({"file": "points.obj"}, "the mesh must have faces"),
        "face budget": ({"file": "ball.stl", "max_faces": 100}, "(face budget), but got 'ball.stl: 320 faces'"),
        "non-manifold": ({"file": "fan.ply"}, "the mesh must be manifold"),
        "unit mistake": ({"file": "big.ply", "normalize": "none"}, "the object must fit the scene"),
        "non-finite": ({"file": "nan.obj"}, "vertices must be finite numbers, but got 'NaN or inf in nan.obj'"),
        "empty folder": ({"file": "empty"}, "a folder must hold at least one mesh file"),
        "size and normalize": ({"file": "big.ply", "size": 1, "normalize": "unit"}, "give either `size` or"),
        "unknown key": ({"file": "big.ply", "colour": 1}, "assets.thing.colour: extra inputs are not permitted"),
    }


CASES = ["missing file", "missing texture", "no faces", "face budget", "non-manifold", "unit mistake",
         "non-finite", "empty folder", "size and normalize", "unknown key"]


@pytest.mark.parametrize("case", CASES)
def test_bad_asset_is_one_line_and_nothing_written(tmp_path: Path, capsys, case: str) -> None:
    asset, needle = _bad_cases(tmp_path)[case]
    path = write_scenario(tmp_path, {"thing": asset})
    with pytest.raises(ConfigError) as exc:
        load_scenario(path)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith("scenario mine.yaml: assets.thing")
    out = tmp_path / "out"
    code = main(["render", "--scenario", str(path), "--backend", "fake", "-n", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
    assert not out.exists()


def test_classes_and_assets_must_match(tmp_path: Path, good: Path) -> None:
    path = write_scenario(tmp_path, {"red": {"file": "red.obj"}}, classes=["red", "blue"])
    with pytest.raises(ConfigError, match="every class needs an asset; add one for 'blue'"):
        load_scenario(path)
    path = write_scenario(tmp_path, {"red": {"file": "red.obj"}, "pink": {"file": "red.obj"}}, classes=["red"])
    with pytest.raises(ConfigError, match=r"assets.pink: is not one of the classes"):
        load_scenario(path)


# ------------------------------------------------------------------------------- loading, fingerprints


def test_materials_metallic_default_and_overrides(tmp_path: Path, good: Path) -> None:
    meshes = load_scenario(good).meshes()
    red, green = meshes["red"][0], meshes["green"][0]
    assert red.texture is not None and green.texture is not None and red.uv is not None
    assert red.metallic == 0.0 and green.metallic == 0.0  # the black-OBJ trap: no metallic unless declared
    assert red.extent == pytest.approx(1.0) and np.ptp(red.corners, axis=0).max() == pytest.approx(1.0)
    path = write_scenario(tmp_path, {"red": {"file": "red.obj", "normalize": "unit",
                                             "material": {"base_color": [0.5, 0.5, 0.5], "metallic": 0.3}},
                                     "green": {"file": "green.glb", "normalize": "unit"}})
    red = load_scenario(path).meshes()["red"][0]
    assert red.color == (0.5, 0.5, 0.5) and red.metallic == 0.3


def test_old_scenarios_keep_their_spec_and_asset_edits_change_the_fingerprint(tmp_path: Path, good: Path) -> None:
    assert "assets" not in load_scenario("shapes").spec_dict()  # fingerprints of old shards unchanged
    s = load_scenario(good)
    job = RenderJob(s, uniform_params(s), n=2, seed=0, width=64, height=64, backend="fake")
    fp = job.fingerprint()
    assert RenderJob(load_scenario(good), uniform_params(s), n=2, seed=0, width=64, height=64,
                     backend="fake").fingerprint() == fp
    tex = Image.open(tmp_path / "red.png")
    Image.fromarray(255 - np.asarray(tex)).save(tmp_path / "red.png")  # same mesh, new texture
    s2 = load_scenario(good)
    assert RenderJob(s2, uniform_params(s2), n=2, seed=0, width=64, height=64, backend="fake").fingerprint() != fp


def test_parts_fake_render_has_keypoints_and_is_reproducible(tmp_path: Path) -> None:
    s = load_scenario("parts")
    job = RenderJob(s, uniform_params(s), n=6, seed=4, width=64, height=64, backend="fake")
    a, b = render_shard(job, tmp_path / "a"), render_shard(job, tmp_path / "b")
    assert a.fingerprint == b.fingerprint
    assert (a.path / "annotations.json").read_bytes() == (b.path / "annotations.json").read_bytes()
    shard = Shard(a.path)
    assert "keypoints" in shard.manifest["label_types"] and "pose" in shard.manifest["label_types"]
    assert set(shard.manifest["scenario"]["asset_files"]) >= {"parts/mug.obj", "parts/mug.png", "parts/bolt.glb"}
    assert validate_shard(a.path).ok
    for ann in shard.coco["annotations"]:
        kp = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        assert kp.shape == (8, 3) and ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
        on = kp[kp[:, 2] > 0]
        assert ((on[:, :2] >= 0) & (on[:, :2] <= 64)).all()
        assert ann["attributes"]["asset"] in {"mug.obj", "gear.obj", "bolt.glb", "bracket.glb"}


def test_parts_assets_are_small_and_reproducible() -> None:
    folder = Path(load_scenario("parts").source).parent / "parts"
    assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) < 1_000_000
    assert {p.suffix for p in folder.iterdir()} >= {".obj", ".mtl", ".png", ".glb"}


# --------------------------------------------------------------------------------------- EGL renders


def _one_object(scenario_path: Path, cls: str, size: int = 96):  # type: ignore[no-untyped-def]
    from generator.render.pyrender_backend import PyrenderRenderer

    s = load_scenario(scenario_path)
    obj = {"object.class": cls, "object.scale": 1.0, "object.yaw": 35.0, "object.pitch": 25.0}
    image = {"objects.count": 1}
    spec = s.builder()(SceneSample(image=image, objects=[obj], uniform_mix=False), np.random.default_rng(0),
                       size, size, s.classes)
    r = PyrenderRenderer(size, size)
    try:
        return s, spec, r.render(spec)
    finally:
        r.close()


@pytest.mark.slow
@pytest.mark.render
@pytest.mark.parametrize(("cls", "texture_rgb"), [("red", (220, 40, 30)), ("green", (30, 200, 60))])
def test_textured_obj_and_glb_render_their_colour(good: Path, cls: str, texture_rgb: tuple[int, int, int]) -> None:
    _, _, out = _one_object(good, cls)
    mask = out.instance == 1
    assert mask.sum() > 200
    mean = out.color[mask].reshape(-1, 3).mean(axis=0)
    assert mean.max() > 60, f"{cls} came out nearly black: {mean}"  # the metallic trap
    assert int(np.argmax(mean)) == int(np.argmax(texture_rgb))  # the texture's hue, not a flat grey
    chroma, want = mean / mean.sum(), np.asarray(texture_rgb, float) / sum(texture_rgb)
    assert np.abs(chroma - want).max() < 0.12, (chroma, want)
    depth_in, depth_out = np.median(out.depth[mask]), np.median(out.depth[~mask])
    assert 0 < depth_in < depth_out


@pytest.mark.slow
@pytest.mark.render
def test_parts_egl_shard_annotations_are_complete(tmp_path: Path) -> None:
    s = load_scenario("parts")
    res = render_shard(RenderJob(s, uniform_params(s), n=6, seed=2, width=96, height=96), tmp_path / "p")
    shard = Shard(res.path)
    assert validate_shard(res.path).ok
    assert set(shard.manifest["label_types"]) >= {"bbox", "segmentation", "amodal", "pose", "keypoints", "depth"}
    images = {i["id"]: i for i in shard.coco["images"]}
    for a in shard.coco["annotations"]:
        visible, amodal = decode_rle(a["segmentation"]), decode_rle(a["amodal_segmentation"])
        assert a["bbox"] == mask_bbox(visible) and not (visible & ~amodal).any()
        r = np.asarray(a["pose"])[:3, :3]
        assert np.allclose(r.T @ r, np.eye(3), atol=1e-4)
        # keypoints = the asset's bounding-box corners (x object.scale) seen through pose + intrinsics
        kp = np.asarray(a["keypoints"]).reshape(-1, 3)
        cls = s.classes[a["category_id"] - 1]
        corners = s.meshes()[cls][0].corners * a["attributes"]["object.scale"]
        cam = (np.c_[corners, np.ones(8)] @ np.asarray(a["pose"]).T)[:, :3]
        K = np.asarray(images[a["image_id"]]["intrinsics"])
        uv = (cam[:, :2] / cam[:, 2:]) @ K[:2, :2].T + K[:2, 2]
        on = kp[:, 2] > 0
        assert np.abs(kp[on, :2] - uv[on]).max() < 0.01
        assert not on.all() or a["truncation"] < 1.0
    again = render_shard(RenderJob(s, uniform_params(s), n=6, seed=2, width=96, height=96), tmp_path / "q")
    assert again.fingerprint == res.fingerprint  # same seed: same fingerprint and geometry
    strip = lambda c: [{k: v for k, v in x.items() if k not in ("stats", "object_contrast")}  # noqa: E731
                       for x in c["images"] + c["annotations"]]
    assert strip(Shard(again.path).coco) == strip(shard.coco)
    img = shard.coco["images"][0]
    colour = np.asarray(shard.load_image(img), float)
    anns = shard.annotations_by_image()[img["id"]]
    assert any(colour[decode_rle(a["segmentation"])].mean() > 40 for a in anns)  # not black
    json.dumps(shard.coco)  # plain JSON
