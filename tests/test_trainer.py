"""Trainer tests: tiny shards of drawn shapes, tiny CenterNets, CPU only.

The fixture draws filled squares (class "square") and discs (class "disc") on a noisy
background and writes them with the real ShardWriter, so every test reads shards through the
same path as production. Models use ``width=8`` and 64² inputs so a step takes milliseconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from generator.errors import ConfigError, DataError
from generator.shard import ImageRecord, ObjectRecord, ShardWriter
from trainer import api
from trainer.errors import TrainingError

CLASSES = ["square", "disc"]
TINY = {"width": 8, "head_channels": 16, "blocks": [1, 1, 1]}


def _draw(rng: np.random.Generator, h: int, w: int, n_objects: int) -> tuple[np.ndarray, list]:
    image = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    objects, taken = [], np.zeros((h, w), dtype=bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n_objects):
        for _attempt in range(20):
            side = int(rng.integers(min(h, w) // 5, min(h, w) // 3))
            x0, y0 = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            cls = int(rng.integers(1, 3))
            if cls == 1:
                mask = (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < y0 + side)
            else:
                r = side / 2
                mask = (xx + 0.5 - x0 - r) ** 2 + (yy + 0.5 - y0 - r) ** 2 <= r * r
            if not (mask & taken).any():
                break
        taken |= mask
        image[mask] = rng.integers(150, 256, size=3, dtype=np.uint8)
        objects.append(ObjectRecord(category_id=cls, mask=mask))
    return image, objects


def make_shard(path: Path, n: int = 12, *, kind: str = "synthetic", seed: int = 0,
               size: tuple[int, int] = (64, 64), classes: list[str] | None = None,
               split: str | None = None, scenario: str | None = "shapes",
               objects: int = 2) -> Path:
    """Write a shard of ``n`` drawn images (h, w = ``size``) and return its path."""
    rng = np.random.default_rng(seed)
    info: dict[str, Any] = {"name": path.name, "kind": kind, "classes": classes or CLASSES,
                            "fingerprint": f"fp-{path.name}-{seed}-{n}"}
    if scenario:
        info["scenario"] = {"name": scenario, "version": 1}
    if split:
        info["split"] = split
    with ShardWriter(path, info) as writer:
        for i in range(n):
            image, objs = _draw(rng, size[0], size[1], objects)
            writer.add_record(ImageRecord(index=i, image=image, objects=objs))
    return path


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    return {
        "syn": make_shard(root / "syn", 16, seed=1),
        "syn2": make_shard(root / "syn2", 8, seed=2),
        "real": make_shard(root / "real", 8, kind="real", seed=3, scenario=None),
    }


def tiny(data: list, out: Path, **kw: Any) -> api.TrainResult:
    opts: dict[str, Any] = {"steps": 4, "batch_size": 4, "device": "cpu", "num_threads": 1}
    if "init" not in kw:  # with --init the model comes from the checkpoint
        opts.update(input_size=64, model_options=TINY)
    opts.update(kw)
    return api.train(data, out, **opts)


def _iou(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "model.pt", map_location="cpu", weights_only=True)["model"]


# --- data arguments -----------------------------------------------------------------------

def test_parse_data_arg_weights(tmp_path: Path) -> None:
    from trainer.data import parse_data_arg

    assert parse_data_arg("a/b").weight == 1.0
    src = parse_data_arg("a/b:2.5")
    assert (src.path, src.weight) == (Path("a/b"), 2.5)
    for bad in ("a/b:abc", "a/b:0", "a/b:-1", "a/b:", "a/b:nan"):
        with pytest.raises(ConfigError, match="weight after ':'"):
            parse_data_arg(bad)
    assert api._as_source((tmp_path / "a:b", 2)).path == tmp_path / "a:b"
    with pytest.raises(ConfigError, match="must be a number > 0"):
        api._as_source((tmp_path, 0.0))
    odd = tmp_path / "x:y"
    odd.mkdir()
    assert parse_data_arg(str(odd)).path == odd  # an existing directory wins over a weight


# --- refusals ------------------------------------------------------------------------------

def test_real_test_split_refused_before_loading(tmp_path: Path, shards: dict[str, Path]) -> None:
    held = make_shard(tmp_path / "held", 2, kind="real", split="real-test")
    with pytest.raises(DataError, match=r"real-test.*held out"):
        tiny([shards["syn"], held], tmp_path / "m", strategy="mixed")
    assert not (tmp_path / "m").exists()


def test_class_mismatch_refused(tmp_path: Path, shards: dict[str, Path]) -> None:
    other = make_shard(tmp_path / "other", 2, classes=["box", "ball"])
    with pytest.raises(DataError, match=r"classes \['box', 'ball'\] differ"):
        tiny([shards["syn"], other], tmp_path / "m")


def test_empty_shard_refused(tmp_path: Path) -> None:
    empty = make_shard(tmp_path / "empty", 2, objects=0)
    with pytest.raises(DataError, match="0 annotations"):
        tiny([empty], tmp_path / "m")


def test_corrupt_image_named(tmp_path: Path) -> None:
    bad = make_shard(tmp_path / "bad", 3)
    (bad / "images" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"images/000001\.png"):
        tiny([bad], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_strategy_kind_rules(tmp_path: Path, shards: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="synthetic-only trains on synthetic shards only"):
        tiny([shards["syn"], shards["real"]], tmp_path / "m")
    with pytest.raises(ConfigError, match="needs at least one real"):
        tiny([shards["syn"]], tmp_path / "m", strategy="mixed")
    with pytest.raises(ConfigError, match="--real-ratio: applies to --strategy mixed only"):
        tiny([shards["syn"]], tmp_path / "m", real_ratio=0.5)
    with pytest.raises(ConfigError, match="needs a fine-tuning budget"):
        tiny([shards["syn"], shards["real"]], tmp_path / "m", strategy="pretrain-finetune")


def test_unknown_model_lists_available(tmp_path: Path, shards: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'yolo'; available: .*centernet"):
        tiny([shards["syn"]], tmp_path / "m", model="yolo")


def test_bad_model_options_refused(tmp_path: Path, shards: dict[str, Path]) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model_options": {"width": 0}}, "model.width: must be a positive integer"),
        ({"input_size": 100}, "--input-size: must be a multiple of 16"),
        ({"model_options": {"depth": 3}}, r"unknown field\(s\) \['depth'\]"),
    ]
    for kw, message in cases:
        with pytest.raises(ConfigError, match=message):
            tiny([shards["syn"]], tmp_path / "out" / "m", **kw)
    assert not (tmp_path / "out").exists()


# --- sampling ------------------------------------------------------------------------------

def _plan(infos: list, cfg: Any) -> tuple[list, Any]:
    from trainer.data import load_store
    from trainer.sampling import plan_phases

    return plan_phases(cfg, infos), load_store(infos, 64)


def test_mixed_batches_take_exact_real_share_and_weights(shards: dict[str, Path]) -> None:
    from trainer.config import TrainConfig
    from trainer.data import DataSource, check_sources
    from trainer.sampling import BatchPlan

    infos = check_sources([DataSource(shards["syn"], 2.0), DataSource(shards["syn2"]),
                           DataSource(shards["real"])])
    cfg = TrainConfig(strategy="mixed", real_ratio=0.3, steps=100, batch_size=10).validate()
    (phase,), store = _plan(infos, cfg)
    plan = BatchPlan(phase, infos, store, 10, np.random.default_rng(0))
    per_shard = np.zeros(3)
    for _ in range(100):
        src = store.shard_of[plan.next()]
        assert (src == 2).sum() == 3  # 30 % of every batch of 10 is real
        per_shard += np.bincount(src, minlength=3)
    # synthetic share by weight x size: syn 2 x 16 = 32 vs syn2 1 x 8 = 8 -> 80 % / 20 %
    assert per_shard[0] / per_shard[:2].sum() == pytest.approx(0.8, abs=0.01)


def test_real_ratio_is_exact_over_the_run(shards: dict[str, Path]) -> None:
    from trainer.config import TrainConfig
    from trainer.data import DataSource, check_sources
    from trainer.sampling import BatchPlan

    infos = check_sources([DataSource(shards["syn"]), DataSource(shards["real"])])
    cfg = TrainConfig(strategy="mixed", real_ratio=0.25, steps=10, batch_size=6).validate()
    (phase,), store = _plan(infos, cfg)
    plan = BatchPlan(phase, infos, store, 6, np.random.default_rng(0))
    real = [int((store.shard_of[plan.next()] == 1).sum()) for _ in range(40)]
    assert set(real) <= {1, 2} and sum(real) == 60  # 0.25 x 6 x 40


def test_pretrain_finetune_phases_use_the_right_shards(shards: dict[str, Path]) -> None:
    from trainer.config import TrainConfig
    from trainer.data import DataSource, check_sources
    from trainer.sampling import BatchPlan

    infos = check_sources([DataSource(shards["syn"]), DataSource(shards["real"])])
    cfg = TrainConfig(strategy="pretrain-finetune", epochs=2, batch_size=4,
                      finetune_steps=7).validate()
    phases, store = _plan(infos, cfg)
    assert [(p.name, p.steps) for p in phases] == [("pretrain", 8), ("finetune", 7)]
    assert phases[1].lr == pytest.approx(cfg.lr / 5)
    for phase, shard in zip(phases, (0, 1), strict=True):
        plan = BatchPlan(phase, infos, store, 4, np.random.default_rng(0))
        drawn = np.concatenate([plan.next() for _ in range(phase.steps)])
        assert set(store.shard_of[drawn]) == {shard}


def test_equal_weights_visit_every_image_once_per_epoch() -> None:
    from trainer.sampling import WeightedStream

    stream = WeightedStream(np.ones(10), np.random.default_rng(0))
    for _ in range(3):
        assert sorted(stream.take(10)) == list(range(10))


# --- model maths ---------------------------------------------------------------------------

BOXES = torch.tensor([[4.0, 6.0, 30.0, 20.0], [33.5, 40.0, 60.0, 63.0]])  # 64 x 64 input
LABELS = torch.tensor([1, 0])


def _perfect_output() -> torch.Tensor:
    """Raw CenterNet output (2 classes, 16 x 16 cells) that encodes BOXES/LABELS exactly."""
    from trainer.centernet import encode_targets
    from trainer.detector import Targets

    enc = encode_targets([Targets(BOXES, LABELS)], 2, 16, 16, 0.54)
    assert int(enc.heat.eq(1).sum()) == 2
    out = torch.full((1, 6, 16, 16), -20.0)
    out[:, :2] = torch.where(enc.heat.eq(1), 20.0, -20.0)
    out[0, 2:4].flatten(1)[:, enc.cell] = enc.log_size.T
    out[0, 4:6].flatten(1)[:, enc.cell] = enc.offset.T
    return out


def test_encode_then_decode_recovers_boxes() -> None:
    from trainer.centernet import decode

    (det,) = decode(_perfect_output(), 2, 10, 0.5)
    order = torch.argsort(det.labels, descending=True)
    assert det.labels[order].tolist() == [1, 0]
    assert torch.allclose(det.boxes[order], BOXES, atol=1e-4)


def test_losses_reward_the_right_answer_only() -> None:
    from trainer.centernet import CenterNet, CenterNetConfig
    from trainer.detector import Targets

    det = CenterNet(CenterNetConfig(input_size=64, width=8, head_channels=16, blocks=(1, 1, 1)),
                    CLASSES)
    out = _perfect_output()
    det.net.forward = lambda images: out  # type: ignore[method-assign,assignment]
    images = torch.zeros((1, 3, 64, 64))
    good = det.losses(images, [Targets(BOXES, LABELS)])
    assert all(float(good[k]) < 1e-3 for k in ("loss", "heat", "size", "offset", "class"))
    swapped = det.losses(images, [Targets(BOXES, 1 - LABELS)])
    assert float(swapped["class"]) > 10 and float(swapped["heat"]) > 10
    moved = det.losses(images, [Targets(BOXES * 0.8, LABELS)])
    assert float(moved["size"]) > 0.1


def test_predict_maps_boxes_back_to_each_images_pixels() -> None:
    from trainer.centernet import CenterNet, CenterNetConfig
    from trainer.detector import Detections

    det = CenterNet(CenterNetConfig(input_size=64, width=8, head_channels=16, blocks=(1, 1, 1)),
                    CLASSES)
    fixed = torch.tensor([[8.0, 4.0, 40.0, 20.0]])  # input pixels of the 64 x 64 letterbox
    det.detect = lambda images, score_threshold: [  # type: ignore[method-assign]
        Detections(fixed, torch.tensor([0.9]), torch.tensor([1])) for _ in range(len(images))]
    wide, tall = np.zeros((100, 200, 3), np.uint8), np.zeros((256, 60, 3), np.uint8)
    p_wide, p_tall = det.predict([wide, tall])
    # 200 x 100 -> scale 0.32: x / 0.32, y / 0.32
    assert p_wide[0]["bbox"] == pytest.approx([25.0, 12.5, 100.0, 50.0])
    assert p_wide[0]["category_id"] == 2 and p_wide[0]["score"] == pytest.approx(0.9)
    # 60 x 256 -> scale 0.25; x2 = 40 / 0.25 = 160 is clipped to the image's width 60
    assert p_tall[0]["bbox"] == pytest.approx([32.0, 16.0, 28.0, 64.0])


def test_augmentation_moves_boxes_with_the_pixels() -> None:
    from trainer.augment import AugmentConfig, augment
    from trainer.detector import Targets

    images = torch.zeros((6, 3, 64, 64))
    boxes = torch.tensor([[10.0, 20.0, 30.0, 36.0]])
    images[:, :, 20:36, 10:30] = 1.0
    targets = [Targets(boxes.clone(), torch.tensor([0])) for _ in range(6)]
    cfg = AugmentConfig(brightness=0.0, contrast=(1.0, 1.0), channel_gain=0.0)
    out, moved = augment(images, targets, torch.Generator().manual_seed(3), cfg)
    for img, t in zip(out, moved, strict=True):
        ys, xs = np.nonzero(img[0].numpy() > 0.5)
        seen = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert np.allclose(seen, t.boxes[0].numpy(), atol=1.0)
        assert (t.boxes[0] >= 0).all() and (t.boxes[0] <= 64).all()
    assert not all(torch.equal(t.boxes, boxes) for t in moved)


# --- training ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def overfit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, api.TrainResult]:
    """A CenterNet trained to memorise 4 non-square (48 x 96) images."""
    root = tmp_path_factory.mktemp("overfit")
    shard = make_shard(root / "wide", 4, size=(48, 96), seed=7)
    res = api.train([shard], root / "model", steps=120, batch_size=4, lr=5e-3, input_size=64,
                    model_options={"width": 16, "head_channels": 32, "blocks": [1, 1, 1]},
                    augment=False, device="cpu", num_threads=1)
    return shard, res


def test_overfits_tiny_shard_and_hits_planted_boxes(overfit: tuple[Path, api.TrainResult]) -> None:
    from generator.shard import Shard

    shard_path, res = overfit
    assert res.final_loss < 0.3 * np.mean(res.losses[:5])
    shard = Shard(shard_path)
    det = api.load_detector(res.path, device="cpu")
    images = [shard.load_image(i) for i in shard.coco["images"]]
    preds = det.predict(images, score_threshold=0.2)
    for img, pred in zip(shard.coco["images"], preds, strict=True):
        for a in shard.annotations_by_image()[img["id"]]:
            best = max((p for p in pred if p["category_id"] == a["category_id"]),
                       key=lambda p: _iou(p["bbox"], a["bbox"]), default=None)
            assert best is not None and _iou(best["bbox"], a["bbox"]) > 0.5, (a["bbox"], pred)


def test_checkpoint_round_trip(overfit: tuple[Path, api.TrainResult]) -> None:
    from trainer.centernet import CenterNetConfig

    _, res = overfit
    meta = json.loads((res.path / "model.json").read_text())
    assert meta["classes"] == CLASSES and meta["scenario"] == "shapes"
    assert meta["strategy"] == "synthetic-only" and meta["steps"] == 120
    assert meta["data"][0]["fingerprint"] == "fp-wide-7-4" and meta["data"][0]["weight"] == 1.0
    assert meta["seed"] == 0 and meta["torch_version"] == torch.__version__
    assert math.isclose(meta["final_loss"], res.final_loss)
    det = api.load_detector(res.path, device="cpu")
    assert isinstance(det.config, CenterNetConfig) and det.config.width == 16
    assert det.classes == CLASSES and det.scenario == "shapes"
    saved = _state(res.path)
    for k, v in det.module.state_dict().items():
        assert torch.equal(v, saved[k])
    img = np.full((48, 96, 3), 30, np.uint8)
    assert det.predict([img]) == api.load_detector(res.path, device="cpu").predict([img])


def test_same_seed_same_weights(tmp_path: Path, shards: dict[str, Path]) -> None:
    a = tiny([shards["syn"], shards["syn2"]], tmp_path / "a", seed=5)
    b = tiny([shards["syn"], shards["syn2"]], tmp_path / "b", seed=5)
    c = tiny([shards["syn"], shards["syn2"]], tmp_path / "c", seed=6)
    sa, sb, sc = _state(a.path), _state(b.path), _state(c.path)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.model_json["fingerprint"] == b.model_json["fingerprint"] != c.model_json["fingerprint"]


_FRESH = """
import sys
from trainer import api
api.train([sys.argv[1]], sys.argv[2], steps=3, batch_size=4, input_size=64, device="cpu",
          num_threads=1, model_options={"width": 8, "head_channels": 16, "blocks": [1, 1, 1]})
"""


@pytest.mark.slow
def test_same_seed_same_weights_in_fresh_processes(tmp_path: Path,
                                                   shards: dict[str, Path]) -> None:
    import subprocess
    import sys

    for name in ("p1", "p2"):
        subprocess.run([sys.executable, "-c", _FRESH, str(shards["syn"]), str(tmp_path / name)],
                       check=True, capture_output=True)
    s1, s2 = _state(tmp_path / "p1"), _state(tmp_path / "p2")
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_nan_loss_stops_without_checkpoint(tmp_path: Path, shards: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.centernet import CenterNet

    real_losses = CenterNet.losses
    calls = {"n": 0}

    def poisoned(self: CenterNet, images: torch.Tensor, targets: list) -> dict:
        calls["n"] += 1
        out = real_losses(self, images, targets)
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(CenterNet, "losses", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at step 3"):
        tiny([shards["syn"]], tmp_path / "m", steps=5)
    assert not (tmp_path / "m").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no half-written temp directory


def test_init_continues_from_checkpoint(tmp_path: Path, shards: dict[str, Path]) -> None:
    first = tiny([shards["syn"]], tmp_path / "first", steps=3)
    again = tiny([shards["syn2"]], tmp_path / "again", steps=1, lr=1e-12, init=first.path)
    s1, s2 = _state(first.path), _state(again.path)
    for k in s1:
        if s1[k].is_floating_point() and "running" not in k:
            assert torch.allclose(s1[k], s2[k], atol=1e-6), k
    meta = again.model_json
    assert meta["total_steps"] == 4 and meta["init"]["weights_sha256"] == \
        first.model_json["weights_sha256"]
    other = make_shard(tmp_path / "other", 2, classes=["a", "b"])
    with pytest.raises(ConfigError, match="--init: the model's classes"):
        tiny([other], tmp_path / "bad", init=first.path)
    with pytest.raises(ConfigError, match="--input-size: 96 differs"):
        tiny([shards["syn2"]], tmp_path / "bad", init=first.path, input_size=96)


def test_plugged_in_model_trains_and_reloads(tmp_path: Path, shards: dict[str, Path]) -> None:
    from trainer.detector import Detections, Detector, ModelConfig, Targets
    from trainer.registry import register_model

    class Constant(Detector):
        """A one-parameter 'detector' that always predicts the same box."""

        config_class = ModelConfig

        def __init__(self, config: ModelConfig, classes: list[str], scenario: str = "") -> None:
            super().__init__(config, classes, scenario)
            self.linear = torch.nn.Linear(1, 1)
            self.module = self.linear

        def init_weights(self, generator: torch.Generator) -> None:
            torch.nn.init.normal_(self.linear.weight, generator=generator)

        def losses(self, images: torch.Tensor, targets: list[Targets]) -> dict[str, torch.Tensor]:
            w = self.linear.weight.sum()
            return {"loss": (w - 1.0) ** 2}

        def detect(self, images: torch.Tensor, score_threshold: float) -> list[Detections]:
            box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
            return [Detections(box, torch.tensor([0.5]), torch.tensor([0])) for _ in images]

    register_model("constant-test", Constant)
    res = api.train([shards["syn"]], tmp_path / "m", model="constant-test", steps=3,
                    batch_size=2, input_size=32, device="cpu")
    det = api.load_detector(res.path, device="cpu")
    assert type(det) is Constant and res.model_json["model"] == "constant-test"
    assert det.predict([np.zeros((64, 64, 3), np.uint8)])[0][0]["bbox"] == [0.0, 0.0, 32.0, 32.0]


def test_step_hook_sees_every_nth_step_and_the_last(tmp_path: Path, shards: dict[str, Path]) -> None:
    """Learning curves (benchmarks/time_to_accuracy.py): the hook gets the live detector at
    steps every, 2·every, … and the last, with training seconds that exclude its own time."""
    import itertools
    import time

    calls: list[tuple[int, float, bool]] = []

    class Hook:
        every = 2

        def __call__(self, steps: int, detector: Any, seconds: float) -> None:
            calls.append((steps, seconds, detector.module.training))
            time.sleep(0.3)  # evaluation time must not count as training time

    r = tiny([shards["syn"]], tmp_path / "m", steps=5, checkpoint=Hook())
    assert [c[0] for c in calls] == [2, 4, 5]
    assert all(b[1] >= a[1] for a, b in itertools.pairwise(calls))
    assert r.seconds < 0.3 * len(calls) + calls[-1][1] and r.seconds < calls[-1][1] + 0.2


def test_channels_last_is_the_same_maths(tmp_path: Path, shards: dict[str, Path]) -> None:
    """NHWC batches and weights (the default, faster on CPU) train the same model as NCHW up to
    float rounding."""
    a = tiny([shards["syn"]], tmp_path / "nhwc", seed=3)
    b = tiny([shards["syn"]], tmp_path / "nchw", seed=3, channels_last=False)
    sa, sb = _state(a.path), _state(b.path)
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-4, rtol=1e-3) for k in sa)
    assert a.model_json["fingerprint"] == b.model_json["fingerprint"]
