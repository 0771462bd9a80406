"""The simulated production stream: drift schedule, real-test disjointness, determinism, CLI.

Fast tests use a stand-in detector (a deterministic function of the pixels) and 64² frames;
the slow test runs the whole chain with a detector trained for 2 steps: simulate → evaluate
real-val → ingest with the merge → the policy's report check.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluator.production import Window, read_window
from flows.cli import main
from generator.errors import DataError
from generator.photos import ALLOCATION
from generator.real.build import CLASSES, build_real_set
from generator.real.camera_log import simulate_production
from generator.real.camera_stream import (
    HELD_OUT,
    StreamConfig,
    check_disjoint,
    derive_pools,
    drift_schedule,
    photo_busyness,
    production_photos,
)
from generator.real.composite import CompositeConfig
from generator.real.mnist import load_mnist
from generator.shard import Shard

SMALL = CompositeConfig(image_size=64, digit_size=(12, 32), max_digits=3)


class PixelDetector:
    """One box per frame whose score follows the frame's brightness (deterministic)."""

    classes = CLASSES

    def predict(self, images: list[np.ndarray], score_threshold: float = 0.05) -> list[list[dict[str, Any]]]:
        out = []
        for im in images:
            score = float(np.clip(im.mean() / 255.0 + 0.2, 0.0, 1.0))
            out.append([{"bbox": [4.0, 5.0, 20.0, 24.0], "category_id": 1 + int(im[0, 0, 0]) % 10, "score": score}]
                       if score >= score_threshold else [])
        return out


def _sim(out: Path, seed: int = 0, **kw: Any) -> Any:
    cfg = StreamConfig(batches=kw.pop("batches", 3), frames_per_batch=kw.pop("frames", 6), seed=seed,
                       composite=SMALL, **kw)
    return simulate_production(out, PixelDetector(), "pix-1", cfg)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_drift_schedule_is_stationary_at_zero_and_monotone_otherwise() -> None:
    busy = photo_busyness(production_photos(), 64)
    assert sorted(busy.values())[0] == 0.0 and sorted(busy.values())[-1] == 1.0
    flat = drift_schedule(StreamConfig(batches=4, drift=0.0, composite=SMALL), busy)
    assert {(d.level, d.gain, d.noise, d.digit_size) for d in flat} == {(0.0, 1.0, 0.0, (12, 32))}
    assert all(w == pytest.approx(0.25) for d in flat for w in d.photo_weights.values())
    full = drift_schedule(StreamConfig(batches=4, drift=1.0, composite=SMALL), busy)
    busiest = max(busy, key=lambda p: busy[p])
    assert [d.level for d in full] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert all(a.gain > b.gain and a.noise < b.noise for a, b in itertools.pairwise(full))
    assert all(a.digit_size[1] > b.digit_size[1] for a, b in itertools.pairwise(full))
    assert [d.photo_weights[busiest] for d in full] == sorted(d.photo_weights[busiest] for d in full)
    assert full[-1].gain == pytest.approx(0.4) and full[-1].digit_size == (9, 16)


@pytest.mark.slow  # builds a (tiny) real set: photo hashes and MNIST decoding take seconds
def test_derived_pools_are_the_real_set_builders(tmp_path: Path) -> None:
    sizes = {"real-train": 10, "real-val": 10, "real-test": 10}
    build_real_set(tmp_path / "real", seed=5, cfg=CompositeConfig(image_size=32, digit_size=(10, 20)), sizes=sizes)
    written = json.loads((tmp_path / "real" / "allocation.json").read_text())["mnist_indices"]
    derived = derive_pools(load_mnist().labels, real_seed=5, sizes=sizes)
    for pool in (HELD_OUT, "production"):
        assert derived[pool].tolist() == written[pool]


def test_check_disjoint_refuses_real_test_sources() -> None:
    pools = derive_pools(load_mnist().labels)
    check_disjoint(pools["production"], pools[HELD_OUT], production_photos())
    with pytest.raises(DataError, match="must share no MNIST digit with real-test"):
        check_disjoint(np.append(pools["production"], pools[HELD_OUT][0]), pools[HELD_OUT], production_photos())
    with pytest.raises(DataError, match="'astronaut' is reserved for 'real-test'"):
        check_disjoint(pools["production"], pools[HELD_OUT], (*production_photos(), "astronaut"))


def test_same_seed_gives_the_same_files(tmp_path: Path) -> None:
    a, b = _sim(tmp_path / "a"), _sim(tmp_path / "b")
    assert a.fingerprint == b.fingerprint and _files(tmp_path / "a") == _files(tmp_path / "b")
    c = _sim(tmp_path / "c", seed=1)
    assert c.fingerprint != a.fingerprint
    assert _files(tmp_path / "c")["log/" + c.log_files[0]] != _files(tmp_path / "a")["log/" + a.log_files[0]]


def test_stream_is_disjoint_from_real_test_drifts_and_reads_as_a_log(tmp_path: Path) -> None:
    s = _sim(tmp_path / "s", batches=3, frames=8, label_share=0.5)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    real_test = derive_pools(load_mnist().labels)[HELD_OUT]
    used = np.asarray(manifest["sources"]["mnist_indices_used"])
    assert used.size > 0 and np.intersect1d(used, real_test).size == 0
    holdout = Shard(tmp_path / "s" / "holdout")
    photos = {img["conditions"]["source_photo"] for img in holdout.coco["images"]}
    assert photos <= set(production_photos()) and not photos & set(ALLOCATION[HELD_OUT])
    assert holdout.manifest["kind"] == "production" and len(holdout.coco["images"]) == s.holdout

    window = read_window(tmp_path / "s" / "log", classes=CLASSES)
    assert isinstance(window, Window) and window.counts["malformed"] == 0 and window.counts["new"] == 24
    reviewed = [r for r in window.records if r.record.reviewed]
    assert len(reviewed) == s.reviewed and s.reviewed + s.holdout == 24
    assert {r.record.id for r in reviewed}.isdisjoint(img["conditions"]["record_id"] for img in holdout.coco["images"])
    stamps = [r.record.timestamp for r in window.records]
    assert stamps == sorted(stamps) and (stamps[8] - stamps[0]).total_seconds() == 3600
    brightness = [np.mean([holdout.load_image(i).mean() for i in holdout.coco["images"]
                           if i["conditions"]["batch"] == b]) for b in (0, 2)]
    assert brightness[1] < 0.7 * brightness[0]  # night falls


def test_cli_refuses_bad_options_without_writing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sim"
    base = ["data", "simulate-production", "--out", str(out), "--model", str(tmp_path / "m")]
    for extra, msg in ((["--drift", "2"], "--drift: must be in [0, 1]"),
                       (["--start", "2024-01-01T00:00:00"], "--start: must be an ISO 8601 time with a UTC offset"),
                       (["--label-share", "-0.1"], "--label-share: must be in [0, 1]"),
                       ([], "--model: ")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {msg}") and err.count("\n") == 1
        assert not out.exists()


@pytest.mark.slow
def test_end_to_end_with_a_tiny_trained_model(tmp_path: Path, capsys) -> None:
    from evaluator import EvalOptions
    from evaluator.run import evaluate_model
    from generator.scenario import load_scenario
    from policy.reports import check_report
    from trainer import api

    sizes = {"real-train": 30, "real-val": 60, "real-test": 10}
    build_real_set(tmp_path / "real", seed=0, cfg=SMALL, sizes=sizes)
    api.train([tmp_path / "real" / "real-train"], tmp_path / "model", strategy="real-only", steps=2, batch_size=4,
              device="cpu", num_threads=1, input_size=64,
              model_options={"width": 8, "head_channels": 16, "blocks": [1, 1, 1]})
    sim = tmp_path / "sim"
    assert main(["data", "simulate-production", "--out", str(sim), "--model", str(tmp_path / "model"),
                 "--batches", "2", "--frames-per-batch", "12", "--label-share", "0.5",
                 "--real-set", str(tmp_path / "real")]) == 0
    assert "2 batches, 24 frames" in capsys.readouterr().out
    opts = EvalOptions(score_threshold=0.05, resamples=0, gallery_size=0)
    evaluate_model(tmp_path / "model", tmp_path / "real" / "real-val", tmp_path / "val", opts,
                   scenario="digits", progress=False)
    evaluate_model(tmp_path / "model", sim / "holdout", tmp_path / "hold", opts, scenario="digits", progress=False)
    assert main(["production", "ingest", "--log", str(sim / "log"), "--reference",
                 str(tmp_path / "real" / "real-train"), "--out", str(tmp_path / "w1"),
                 "--real-val-report", str(tmp_path / "val")]) == 0
    signals = json.loads((tmp_path / "w1" / "signals.json").read_text())
    assert signals["status"] == "ok" and signals["counts"]["new"] == 24
    merged = json.loads((tmp_path / "w1" / "report.json").read_text())
    check_report(merged, load_scenario("digits"))
    assert merged["production"]["window"]["id"] == signals["window"]["id"]
