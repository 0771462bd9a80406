"""Builders for the policy tests (no tests here): tiny failure reports and a toy
conditions.parquet whose conditions follow known laws of the sampled parameters.

The toy "renderer" samples parameters through the real :class:`generator.sampling.Sampler`
(so any GenerationParams works) and derives the measured columns:

- ``pixel_size`` grows with ``digit.size`` and shrinks with ``camera.distance`` / ``camera.fov``;
- ``stat.brightness`` grows with ``light.intensity`` and ``background.lightness``;
- ``stat.texture`` is high for ``noise`` and ``checker`` backgrounds, low for ``solid``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from generator.params import GenerationParams, uniform_params
from generator.sampling import Sampler
from generator.scenario import Scenario, load_scenario

TEXTURE = {"solid": 1.0, "gradient": 2.0, "noise": 20.0, "checker": 16.0, "photo": 8.0}


def digits() -> Scenario:
    return load_scenario("digits")


def toy_conditions(scenario: Scenario, params: GenerationParams | None = None, n_images: int = 300,
                   seed: int = 0) -> pd.DataFrame:
    """One row per object, like a synthetic shard's conditions.parquet."""
    sampler = Sampler(scenario, params or uniform_params(scenario))
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for image_id in range(1, n_images + 1):
        s = sampler.sample(rng)
        im = s.image
        brightness = 10 + 18 * im["light.intensity"] + 60 * im["background.lightness"] + rng.normal(0, 3)
        base = {"image_id": image_id, "n_objects": len(s.objects), "stat.brightness": brightness,
                "stat.contrast": float(rng.uniform(10, 60)), "param.uniform_mix": s.uniform_mix,
                "stat.texture": TEXTURE[str(im["background.kind"])] + float(rng.uniform(0, 3)),
                **{f"param.{k}": v for k, v in im.items()}}
        for obj in s.objects:
            size = (60 * obj["digit.size"] * (5 / im["camera.distance"]) * (40 / im["camera.fov"])
                    * math.cos(math.radians(obj["digit.tilt"])) * float(rng.lognormal(0, 0.05)))
            rows.append({**base, "pixel_size": size, "visibility": 1.0,
                         **{f"obj.{k}": v for k, v in obj.items()}})
    return pd.DataFrame(rows)


def weak_slice(scenario: Scenario, condition: str, lo: float, hi: float, side: str = "low",
               rank: int = 1, score: float = 5.0, support: int = 40,
               recall: float = 0.3) -> dict[str, Any]:
    spec = scenario.spec.conditions[condition]
    return {"rank": rank, "condition": condition, "column": spec.column, "level": spec.level,
            "bin": 0, "range": [lo, hi], "side": side,
            "parameters": scenario.parameters_for_condition(condition), "recall": recall,
            "ci": [max(0.0, recall - 0.1), recall + 0.1], "overall_recall": 0.7, "gap": 0.7 - recall,
            "support": support, "support_images": support, "precision": None, "ap": None,
            "score": score}


def make_report(scenario: Scenario, weak: list[dict[str, Any]] | None = None, map50: float | None = 0.5,
                recall: float | None = 0.7, objects: int = 200, split: str = "real-val",
                slices: list[dict[str, Any]] | None = None, tag: str = "") -> dict[str, Any]:
    """A failure report dict with the keys ``evaluator.evaluate`` writes (what the policy reads)."""
    return {
        "schema_version": 1, "kind": "synthloop-failure-report", "final_report": False,
        "model": {"path": f"model{tag}.pt", "scenario": scenario.name},
        "data": {"path": "real-val", "name": "real", "kind": "real", "split": split,
                 "fingerprint": "f" * 64},
        "scenario": {"name": scenario.name, "version": scenario.spec.version, "spec_sha256": "x"},
        "settings": {"iou": 0.5, "score_threshold": 0.3},
        "overall": {"map": None if map50 is None else map50 / 2, "map50": map50, "map75": None,
                    "recall": recall, "recall_ci": None, "precision": 0.8, "ap": map50},
        "per_class": [{"category_id": i + 1, "class": c} for i, c in enumerate(scenario.classes)],
        "conditions": [], "slices": slices or [], "weak_slices": weak or [],
        "counts": {"images": objects // 2, "objects": objects},
    }
