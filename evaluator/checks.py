"""Refusals before any work: the shard, the model and the scenario must fit together.

Every check raises a :mod:`generator.errors` error with one line naming the option, the rule,
the value and the fix, so the CLI prints it and exits 2.
"""

from __future__ import annotations

from typing import Any

from generator.errors import ConfigError, DataError
from generator.scenario import Scenario, ScenarioSpec, load_scenario
from generator.shard import Shard
from generator.validation import parse_model

HELD_OUT_SPLIT = "real-test"  # same rule as generator.real.splits: kept for the final report


def manifest_scenario(manifest: dict[str, Any]) -> str | None:
    """The scenario name a shard was rendered for (``scenario`` may be a str or ``{name: …}``)."""
    sc = manifest.get("scenario")
    if isinstance(sc, dict):
        sc = sc.get("name")
    return str(sc) if sc else None


def check_shard(shard: Shard, final_report: bool = False) -> None:
    """Refuse an empty shard, one without true objects, and ``real-test`` unless final."""
    where = f"--data: shard {str(shard.path)!r}"
    if shard.manifest.get("split") == HELD_OUT_SPLIT and not final_report:
        raise DataError(
            f"{where} is the held-out {HELD_OUT_SPLIT} split "
            f"(manifest split = {HELD_OUT_SPLIT!r}), "
            "kept for the final report so the loop never tunes itself to it; evaluate on "
            "real-val, or pass --final-report to report on it deliberately")
    if not shard.coco.get("images"):
        raise DataError(f"{where} has no images (counts.images = 0); evaluate on a non-empty shard")
    if not shard.coco.get("annotations"):
        raise DataError(f"{where} has no annotated objects, so recall and AP are undefined; "
                        "evaluate on a shard with ground-truth boxes")


def check_model(shard: Shard, classes: list[str], model_scenario: str | None) -> None:
    """The model's class list and scenario must be the shard's."""
    if list(classes) != shard.classes:
        raise DataError(
            f"--model: class list {list(classes)} does not match the classes {shard.classes} of "
            f"shard {str(shard.path)!r} (manifest classes, same order); evaluate on a shard with "
            "the model's classes or train a model on this data")
    data_scenario = manifest_scenario(shard.manifest)
    if model_scenario and data_scenario and model_scenario != data_scenario:
        raise DataError(
            f"--model: was trained for scenario {model_scenario!r}, but shard "
            f"{str(shard.path)!r} belongs to scenario {data_scenario!r} (manifest scenario); "
            f"evaluate on a shard of scenario {model_scenario!r}")


def resolve_scenario(name_or_path: str | None, shard: Shard,
                     model_scenario: str | None) -> Scenario:
    """The scenario whose conditions slice the data: ``--scenario`` if given, else the shard's
    (the spec embedded in its manifest, else the built-in of that name), else the model's.
    A given scenario must carry the model's scenario name."""
    if name_or_path is not None:
        scenario = load_scenario(name_or_path)
        if model_scenario and scenario.name != model_scenario:
            raise ConfigError(
                f"--scenario: {scenario.name!r} differs from the model's scenario "
                f"{model_scenario!r}; omit --scenario or pass {model_scenario!r}")
        return scenario
    embedded = shard.manifest.get("scenario")
    if isinstance(embedded, dict) and isinstance(embedded.get("spec"), dict):
        where = f"{shard.path}/manifest.json scenario.spec"
        spec = parse_model(ScenarioSpec, embedded["spec"], where)
        return Scenario(spec, shard.path / "manifest.json")
    name = manifest_scenario(shard.manifest) or model_scenario
    if not name:
        raise ConfigError(
            "--scenario: neither the model nor the shard names a scenario; pass --scenario "
            "NAME or the path of a scenario YAML")
    return load_scenario(name)
