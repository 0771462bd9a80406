"""Refusals before any work: the shard, the model and the scenario must fit together.

Every check raises a :mod:`generator.errors` error with one line naming the option, the rule,
the value and the fix, so the CLI prints it and exits 2.
"""

from __future__ import annotations

from typing import Any

from generator.errors import ConfigError, DataError
from generator.fingerprint import json_sha256
from generator.real.splits import HELD_OUT_SPLIT
from generator.scenario import Scenario, ScenarioSpec, load_scenario
from generator.shard import Shard
from generator.validation import parse_model

REPORT_KIND = "synthloop-failure-report"  # the ``kind`` of every report.json the evaluator writes


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


def check_steering_report(report: dict[str, Any], scenario: Scenario, where: str = "--report") -> None:
    """Refuse a report the loop must not steer on: another kind, the held-out ``real-test``
    split or a ``final_report``, another scenario or class list, a malformed ``weak_slices``.

    The one rule shared by the policy (``policy.reports.check_report``) and the production
    merge (``evaluator.production.merge``), so the loop can never tune itself to the test set.
    """
    kind = report.get("kind")
    if kind != REPORT_KIND or not isinstance(report.get("overall"), dict):
        raise ConfigError(f"{where}: kind must be {REPORT_KIND!r} with an `overall` block, but got "
                          f"kind={kind!r}; pass a report.json written by `synthloop evaluate`")
    data: dict[str, Any] = report["data"] if isinstance(report.get("data"), dict) else {}
    if data.get("split") == HELD_OUT_SPLIT or report.get("final_report"):
        raise DataError(f"{where}: data.split must not be {HELD_OUT_SPLIT!r} and final_report must be false, but "
                        f"got split={data.get('split')!r}, final_report={report.get('final_report')!r}; pass a "
                        "real-val or production report: the loop never tunes itself to the held-out test set")
    sc = report.get("scenario")
    name = sc.get("name") if isinstance(sc, dict) else sc
    if name != scenario.name:
        raise DataError(f"{where}: scenario.name must be {scenario.name!r} (the --scenario), but got {name!r}; "
                        f"pass a report evaluated with scenario {scenario.name!r}")
    per_class = report.get("per_class")
    if isinstance(per_class, list) and per_class:
        classes = [c.get("class") for c in per_class if isinstance(c, dict)]
        if classes != scenario.classes:
            raise DataError(f"{where}: per_class classes must be the scenario's {scenario.classes}, but got "
                            f"{classes}; pass a report for a model of scenario {scenario.name!r}")
    if not isinstance(report.get("weak_slices", []), list):
        raise ConfigError(f"{where}: weak_slices must be a list, but got "
                          f"{type(report.get('weak_slices')).__name__}")


def report_identity(report: dict[str, Any]) -> dict[str, Any]:
    """Which report a derived artifact was made from: sha256 of its canonical JSON plus its data
    fingerprint and split (production signals and merged reports record it and check it)."""
    data = report.get("data")
    data = data if isinstance(data, dict) else {}
    return {"sha256": json_sha256(report), "data_fingerprint": data.get("fingerprint"),
            "split": data.get("split")}
