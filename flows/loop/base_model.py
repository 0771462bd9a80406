"""The base model of a scenario: a committed, reproducible warm start for loops and benchmarks.

A loop that starts from nothing spends its first iterations teaching the basics, and steering
the data does not pay there (benchmarks/RESULTS.md). Users arrive with a trained model; for the
built-in ``digits`` scenario the project ships one, made by :class:`BaseRecipe`:

1. render ``images`` images of the scenario, every parameter uniform over its range (classic
   domain randomization), render seed ``seed``, at ``size``²;
2. train the default detector synthetic-only for ``steps`` × ``batch_size`` (seed ``seed``);
3. export the weights without the optimizer moments (a third of the size; a loop continuing
   from it starts fresh AdamW moments), and score it on real-val (never real-test).

``recipe.json`` beside ``model.pt``/``model.json`` records the recipe, the fingerprint of the
data it saw (computable without rendering: :meth:`RenderJob.fingerprint`), the weights' sha256,
the real-val metrics and the command that made it. ``make base-model`` re-runs the recipe.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from generator import atomic
from generator.errors import ConfigError

RECIPE_FILE = "recipe.json"
RECIPE_FORMAT = "synthloop-base-model/1"
# Where the project keeps its base models (package data beside the trainer that loads them).
BASE_MODELS = Path(__file__).resolve().parents[2] / "trainer" / "base_models"


@dataclass(frozen=True)
class BaseRecipe:
    scenario: str = "digits"
    images: int = 4000
    seed: int = 0
    size: int = 128
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    real_seed: int = 0  # the built-in real set whose real-val scores the model

    def render_job(self) -> Any:
        from generator.params import uniform_params
        from generator.pipeline import RenderJob
        from generator.scenario import load_scenario

        sc = load_scenario(self.scenario)
        return RenderJob(sc, uniform_params(sc), n=self.images, seed=self.seed, width=self.size,
                         height=self.size)


def base_model_path(scenario: str = "digits") -> Path:
    """The committed base model of ``scenario``; ConfigError naming ``make base-model`` if absent."""
    path = BASE_MODELS / scenario
    if not (path / RECIPE_FILE).is_file():
        have = sorted(p.name for p in BASE_MODELS.iterdir() if (p / RECIPE_FILE).is_file()) \
            if BASE_MODELS.is_dir() else []
        raise ConfigError(f"base model: none for scenario {scenario!r} (have: {have or 'none'}); "
                          "run `make base-model` or pass a model of your own with --init")
    return path


def read_recipe(path: str | Path) -> dict[str, Any]:
    return dict(json.loads((Path(path) / RECIPE_FILE).read_text(encoding="utf-8")))


def build_base_model(recipe: BaseRecipe, out: Path, work: Path, *, overwrite: bool = False,
                     progress: bool = False) -> dict[str, Any]:
    """Render, train, export and score the base model into ``out`` (atomically); the shard and
    the full checkpoint stay in ``work`` (a second call reuses the shard). Returns recipe.json."""
    from evaluator.evaluate import EvalOptions
    from evaluator.run import evaluate_model, headline
    from generator.pipeline import render_shard
    from generator.real.build import build_real_set
    from trainer.api import train
    from trainer.checkpoint import export_weights

    atomic.prepare_output_dir(out, overwrite)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    job = recipe.render_job()
    shard = render_shard(job, work / f"uniform-{recipe.seed}", workers=1, reuse=True)
    t_render = time.perf_counter() - t0
    r = train([shard.path], work / "model-full", strategy="synthetic-only", steps=recipe.steps,
              batch_size=recipe.batch_size, lr=recipe.lr, seed=recipe.seed, overwrite=True,
              progress=progress)
    real = work / "real"
    if not (real / "real-val" / "manifest.json").is_file():
        build_real_set(real, seed=recipe.real_seed, overwrite=True)
    with atomic.atomic_dir(out, overwrite) as tmp:
        meta = export_weights(work / "model-full", tmp)
        _, ev = evaluate_model(tmp, real / "real-val", work / "report-real-val", EvalOptions(resamples=0),
                               scenario=recipe.scenario, overwrite=True, progress=progress)
        record = {"format": RECIPE_FORMAT, "recipe": asdict(recipe),
                  "data": [{"fingerprint": shard.fingerprint, "images": shard.images,
                            "params": "uniform over every range"}],
                  "weights_sha256": meta["weights_sha256"], "model_fingerprint": meta["fingerprint"],
                  "real_val": {k: v for k, v in headline(ev.report).items() if k != "weakest"},
                  "train": {"steps": r.steps, "final_loss": round(r.final_loss, 4),
                            "images_per_s": round(r.images_per_s, 1), "seconds": round(r.seconds, 1)},
                  "render_seconds": round(t_render, 1),
                  "command": "make base-model"}
        atomic.write_json(tmp / RECIPE_FILE, record)
    return record
