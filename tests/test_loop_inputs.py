"""What a loop makes for itself (flows/loop/inputs.py): ``policy_base: calibrate`` and ``replay: [init]``.

What a user relies on: a ``refit`` loop told ``policy_base: calibrate`` fits its base to real-val
once, before its first decision, and every decision is built on it; ``replay: [init]`` trains
every iteration on the init model's own data, re-rendered from its recipe with the fingerprint
of the data the model saw; a resumed or grown loop makes neither again; the plan says both and
counts their time; a keyword the loop cannot honour is one line before anything is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tinyloop import tiny_config

from flows.loop import run as driver
from flows.loop.base_model import RECIPE_FILE, BaseRecipe
from flows.loop.state import LoopConfig
from generator.errors import ConfigError
from generator.params import GenerationParams
from generator.scenario import load_scenario

RECIPE = BaseRecipe(images=6, size=64, steps=2, batch_size=2)
CALIBRATE = {"policy": "refit", "policy_base": "calibrate", "calibration_trials": 8, "calibration_images": 8,
             "refit_trials": 2, "refit_images": 4}


@pytest.fixture(scope="module")
def init_model(tmp_path_factory: pytest.TempPathFactory, real: Path) -> Path:
    """A tiny cold loop's model with a base-model recipe.json beside it (6 images at 64²)."""
    work = tmp_path_factory.mktemp("cold") / "w"
    driver.run_loop(tiny_config(work, real, iterations=1))
    model = tmp_path_factory.mktemp("base") / "model"
    shutil.copytree(work / "iter_0" / "model", model)
    (model / RECIPE_FILE).write_text(json.dumps({"format": "synthloop-base-model/1", "recipe": RECIPE.__dict__}))
    return model


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory, real: Path, init_model: Path) -> LoopConfig:
    cfg = tiny_config(tmp_path_factory.mktemp("loop") / "w", real, init_model=str(init_model), replay=["init"],
                      replay_share=0.25, **CALIBRATE)
    driver.run_loop(cfg)
    return cfg


def test_the_loop_calibrates_its_base_once_and_every_decision_builds_on_it(ran: LoopConfig) -> None:
    from policy.mixture import load_base

    out = ran.work / "calibration"
    base = load_base(out / "params.yaml", load_scenario("digits"))
    report = json.loads((out / "report.json").read_text())
    assert report["distance"]["after"] < report["distance"]["before"] and base.distributions
    decisions = [ran.work / "init" / "decision.json"] + [ran.iter_dir(k) / "decision.json" for k in range(2)]
    for path in decisions:
        d = json.loads(path.read_text())
        assert d["policy"] == "refit" and d["mixture"]["base"] == "calibrated"
        params = GenerationParams.model_validate(d["params"])
        assert params.components is not None and any(c.distributions == base.distributions
                                                     for c in params.components)
    for k in range(2):  # what each iteration rendered is the decision before it
        assert (ran.iter_dir(k) / "params.yaml").is_file()


def test_replay_init_trains_every_iteration_on_the_init_models_own_data(ran: LoopConfig) -> None:
    from generator.shard import Shard

    shard = Shard(ran.work / "replay-init")
    assert shard.manifest["fingerprint"] == RECIPE.render_job().fingerprint()
    assert len(shard.coco["images"]) == RECIPE.images
    history = json.loads((ran.work / "history.json").read_text())
    for entry in history["iterations"]:
        replayed = [d for d in entry["train"]["data"] if d.startswith("replay-init:")]
        assert len(replayed) == 1 and float(replayed[0].split(":")[1]) > 0


def test_a_grown_loop_makes_neither_again(ran: LoopConfig) -> None:
    from dataclasses import replace

    files = [ran.work / "calibration" / "params.yaml", ran.work / "replay-init" / "manifest.json"]
    before = [f.stat().st_mtime_ns for f in files]
    driver.run_loop(replace(ran, iterations=3))
    assert [f.stat().st_mtime_ns for f in files] == before
    assert (ran.iter_dir(2) / "decision.json").is_file()


def test_the_plan_says_what_the_loop_makes_first_and_counts_it(tmp_path: Path, real: Path,
                                                               init_model: Path) -> None:
    from flows.loop.plan import plan_run

    same = {**CALIBRATE, "policy_base": None}  # the same re-fits, no calibration, no replay
    plain = plan_run(tiny_config(tmp_path / "w", real, init_model=str(init_model), **same), cores=2, load=0.0)
    cfg = tiny_config(tmp_path / "w", real, init_model=str(init_model), replay=["init"], **CALIBRATE)
    plan = plan_run(cfg, cores=2, load=0.0)
    assert "; fits the base to real-val first (8 trials × 8 images)" in plan.lines()[0]
    assert "; renders the init model's 6 training images for replay" in plan.lines()[0]
    assert plan.seconds > plain.seconds
    no_refit = plan_run(tiny_config(tmp_path / "w", real, init_model=str(init_model)), cores=2, load=0.0)
    assert plain.seconds > no_refit.seconds  # a re-fit after every evaluation costs renders too


@pytest.mark.parametrize("kw, message", [
    ({"replay": ["init"]}, r"^loop\.replay\[0\]: 'init' needs an init_model with a recipe\.json .*but got None"),
    ({"replay": ["init"], "init_model": "NOMODEL"}, r"^loop\.replay\[0\]: 'init' needs an init_model"),
    ({"policy_base": "calibrate"}, r"^loop\.policy_base: applies to policies 'mixture', 'refit' and 'calibrated'"),
    ({**CALIBRATE, "calibration_trials": 1}, r"^loop\.calibration_trials: must be an integer >= 2"),
    ({**CALIBRATE, "calibration_images": 2}, r"^loop\.calibration_images: must be an integer >= 4"),
])
def test_a_keyword_the_loop_cannot_honour_is_one_line_before_anything_is_written(
        tmp_path: Path, real: Path, kw: dict[str, object], message: str) -> None:
    work = tmp_path / "w"
    with pytest.raises(ConfigError, match=message) as exc:
        driver.run_loop(tiny_config(work, real, **kw))
    assert "\n" not in str(exc.value) and not work.exists()


def test_run_cli_takes_base_calibrate() -> None:
    from flows.cli import build_parser

    args = build_parser().parse_args(["run", "--policy", "refit", "--base", "calibrate", "--set", "replay=[init]"])
    assert args.policy == "refit" and args.policy_base == "calibrate" and args.sets == ["replay=[init]"]
