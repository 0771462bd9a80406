"""The committed base model (the loop's warm start) and the recipe that makes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flows.loop.base_model import RECIPE_FORMAT, BaseRecipe, base_model_path, build_base_model, read_recipe
from generator.errors import ConfigError
from generator.scenario import load_scenario
from generator.shard import sha256_file


def test_committed_base_model_matches_its_recorded_fingerprints() -> None:
    """The file in the repository is the one its recipe.json describes: same weights sha256 in
    model.json and recipe.json, and the data it saw is the recipe's render (fingerprint
    recomputed from the recipe, no rendering), scored on real-val."""
    path = base_model_path("digits")
    recipe, meta = read_recipe(path), json.loads((path / "model.json").read_text())
    assert recipe["format"] == RECIPE_FORMAT and recipe["command"] == "make base-model"
    sha = sha256_file(path / "model.pt")
    assert sha == meta["weights_sha256"] == recipe["weights_sha256"]
    job = BaseRecipe(**recipe["recipe"]).render_job()
    assert recipe["data"][0]["fingerprint"] == job.fingerprint() == meta["data"][0]["fingerprint"]
    assert recipe["data"][0]["images"] == recipe["recipe"]["images"] == job.n
    assert meta["steps"] == recipe["recipe"]["steps"] and meta["strategy"] == "synthetic-only"
    assert 0 < recipe["real_val"]["map50"] <= 1
    assert sum(f.stat().st_size for f in path.iterdir()) <= 10 * 2**20  # small enough to commit


def test_committed_base_model_loads_and_detects() -> None:
    from trainer.api import load_detector

    det = load_detector(base_model_path("digits"), device="cpu")
    assert det.classes == list(load_scenario("digits").classes) and det.scenario == "digits"
    out = det.predict([np.zeros((96, 128, 3), np.uint8)], score_threshold=0.0)
    assert len(out) == 1 and all(0 <= d["score"] <= 1 for d in out[0])


def test_unknown_base_model_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"^base model: none for scenario 'shapes' .*make base-model"):
        base_model_path("shapes")


@pytest.mark.slow
def test_recipe_builds_a_model_with_its_record(tmp_path: Path) -> None:
    """The recipe at a tiny size: an exported checkpoint without optimizer moments, recipe.json
    naming the data fingerprint and the weights, real-val metrics; nothing partial on failure."""
    import torch

    recipe = BaseRecipe(images=6, steps=2, batch_size=2)
    real = tmp_path / "work" / "real"
    from generator.real.build import build_real_set

    build_real_set(real, seed=0, sizes={"real-train": 20, "real-val": 20, "real-test": 20})
    record = build_base_model(recipe, tmp_path / "out", tmp_path / "work")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pt", "recipe.json"]
    assert "optimizer" not in torch.load(out / "model.pt", weights_only=True)
    full = json.loads((tmp_path / "work" / "model-full" / "model.json").read_text())
    assert record["weights_sha256"] == sha256_file(out / "model.pt") != full["weights_sha256"]
    assert json.loads((out / "model.json").read_text())["exported_from"] == full["weights_sha256"]
    assert record["data"][0]["fingerprint"] == recipe.render_job().fingerprint()
    assert set(record["real_val"]) == {"map50", "recall"}
    with pytest.raises(ConfigError, match="not empty"):  # an existing model is never half-replaced
        build_base_model(recipe, out, tmp_path / "work")
    assert read_recipe(out) == record
