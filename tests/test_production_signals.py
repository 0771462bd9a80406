"""Production signals: drift flags, confidence proxies, reviewed errors, the merge, no-data.

Frames come from small hand-drawn shards (tests/shardmaker.py, demo scenario: brightness,
texture, size). A production window is written as a real log: PNG frames (optionally darkened
— the planted drift) and JSONL records with oracle predictions (planted low scores or misses on
the dark frames) and reviewed labels on every other frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from shardmaker import DEMO_SPEC, demo_scenario, make_shard

from evaluator import EvalOptions, evaluate
from evaluator.predict import predict_shard
from evaluator.production import ProductionOptions, merge_reports, read_window, reference_tables, window_signals
from evaluator.production.drift import classify, compare, psi
from evaluator.production.merge import drift_slices
from evaluator.production.signals import entropy_bits
from evaluator.testing import OracleDetector
from flows.cli import main
from generator.errors import DataError
from generator.shard import Shard
from policy.reports import check_report, pooled_weak_slices

SCENARIO = demo_scenario()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Shard]:
    root = tmp_path_factory.mktemp("prodsig")
    return {name: Shard(make_shard(root / name, n=n, seed=seed, depth=False, amodal=False, pose=False))
            for name, n, seed in (("ref", 48, 1), ("src", 40, 2), ("val", 40, 3))}


def _dark_ids(shard: Shard, share: float) -> set[int]:
    b = {int(i["id"]): i["stats"]["brightness"] for i in shard.coco["images"]}
    cut = np.quantile(list(b.values()), share)
    return {i for i, v in b.items() if v <= cut}


def make_window(root: Path, shard: Shard, dark: set[int], *, gain: float = 0.35, dark_score: float = 0.9,
                miss_dark: bool = False, review: bool = True) -> Path:
    """Write a production log of the shard's images; frames in ``dark`` are multiplied by ``gain``."""
    (root / "frames").mkdir(parents=True)
    (root / "log").mkdir()
    by_image = shard.annotations_by_image()
    lines = []
    for k, img in enumerate(shard.coco["images"]):
        iid = int(img["id"])
        pixels = shard.load_image(img).astype(float) * (gain if iid in dark else 1.0)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "frames" / f"{iid}.png")
        truth = [{"bbox": a["bbox"], "class": shard.classes[a["category_id"] - 1]} for a in by_image.get(iid, [])]
        score = dark_score if iid in dark else 0.9
        preds = [] if (miss_dark and iid in dark) else [{**t, "score": score} for t in truth]
        rec: dict[str, Any] = {"id": f"f{iid}", "timestamp": f"2024-01-01T00:{k:02d}:00Z",
                               "image": f"../frames/{iid}.png", "model_version": "m1", "predictions": preds}
        if review and k % 2 == 0:
            rec["labels"] = truth
        lines.append(json.dumps(rec) + "\n")
    (root / "log" / "w.jsonl").write_text("".join(lines))
    return root / "log"


@pytest.fixture(scope="module")
def val_report(shards: dict[str, Shard]) -> dict[str, Any]:
    """A real-val report whose weak slice is 'brightness low' (the oracle misses the darkest frames)."""
    val = shards["val"]
    dark = _dark_ids(val, 0.3)
    det = OracleDetector(val, miss=lambda a: a["image_id"] in dark)
    report = evaluate(val, predict_shard(det, val, progress=False), SCENARIO,
                      EvalOptions(min_support=10, resamples=0)).report
    assert any((w["condition"], w["side"]) == ("brightness", "low") for w in report["weak_slices"])
    return report


def _signals(log: Path, shards: dict[str, Shard], val: dict[str, Any] | None = None,
             options: ProductionOptions | None = None) -> dict[str, Any]:
    result = read_window(log, classes=SCENARIO.classes)
    return window_signals(result, reference_tables([shards["ref"].path]), SCENARIO, options, val)


def _drift(signals: dict[str, Any], condition: str) -> dict[str, Any]:
    return next(d for d in signals["drift"] if d["condition"] == condition)


# --- statistics -------------------------------------------------------------------------------

def test_psi_and_ks_flag_a_shift_but_not_sampling_noise() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(100, 20, 500)
    opts = ProductionOptions()
    same, shifted = compare(ref, rng.normal(100, 20, 60), opts), compare(ref, rng.normal(60, 20, 60), opts)
    assert same["status"] in ("stable", "watch") and same["status"] != "drift"
    assert shifted["status"] == "drift" and shifted["direction"] == "lower" and shifted["psi"] > 1
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-9)
    tiny = compare(ref, rng.normal(10, 1, 5), opts)
    assert tiny["status"] == "insufficient" and tiny["psi"] is None  # no test on 5 values
    assert classify(0.5, 0.5, opts) == "watch" and classify(0.05, 0.5, opts) == "stable"
    assert entropy_bits(np.array([0.5]))[0] == pytest.approx(1.0)


# --- drift on a window -------------------------------------------------------------------------

def test_planted_darkness_is_flagged_on_brightness_and_a_stationary_window_is_not(tmp_path, shards) -> None:
    src = shards["src"]
    everything = {int(i["id"]) for i in src.coco["images"]}
    dark = _signals(make_window(tmp_path / "dark", src, everything), shards)
    flat = _signals(make_window(tmp_path / "flat", src, set()), shards)
    b = _drift(dark, "brightness")
    assert (b["status"], b["direction"], b["source"]) == ("drift", "lower", "pixels")
    assert b["n_production"] == 40 and b["psi"] > 0.2 and b["ks_p"] < 0.01
    assert "brightness" in dark["drifted"]
    assert _drift(flat, "brightness")["status"] != "drift"
    assert flat["drifted"] == []
    assert _drift(flat, "size")["source"].startswith("predicted boxes")


def test_confidence_proxies_and_reviewed_errors_follow_the_dark_slice(tmp_path, shards) -> None:
    src = shards["src"]
    dark = _dark_ids(src, 0.5)
    s = _signals(make_window(tmp_path / "w", src, dark, dark_score=0.4), shards)  # accepted but unsure
    bright = next(c for c in s["slices"] if c["condition"] == "brightness")
    low, high = bright["bins"][0], bright["bins"][-1]
    assert bright["edges_from"] == "reference" and low["side"] == "low"
    assert low["low_conf_rate"] == 1.0 and high["low_conf_rate"] == 0.0
    assert low["mean_entropy"] == pytest.approx(float(entropy_bits(np.array([0.4]))[0]), abs=1e-6)
    assert (low["mean_max_score"], high["mean_max_score"]) == (pytest.approx(0.4), pytest.approx(0.9))
    assert sum(e["prevalence"] for e in bright["bins"]) == pytest.approx(1.0)

    missed = _signals(make_window(tmp_path / "m", src, dark, miss_dark=True), shards)
    rev = next(c for c in missed["slices"] if c["condition"] == "brightness")["bins"]
    assert rev[0]["reviewed"]["recall"] == 0.0 and rev[-1]["reviewed"]["recall"] == 1.0
    assert (rev[0]["empty_rate"], rev[-1]["empty_rate"]) == (1.0, 0.0) and rev[0]["low_conf_rate"] is None
    overall = missed["overall"]["reviewed"]
    n_missed = sum(len(src.annotations_by_image().get(i, [])) for i in dark
                   if sorted(int(x["id"]) for x in src.coco["images"]).index(i) % 2 == 0)
    assert overall["support"] - overall["detected"] == n_missed
    assert overall["precision"] == 1.0


# --- merge ---------------------------------------------------------------------------------------

def _weak(report: dict[str, Any], condition: str, side: str, source: str = "real-val") -> dict[str, Any]:
    return next(w for w in report["weak_slices"]
                if (w["condition"], w["side"], w["source"]) == (condition, side, source))


def test_merged_report_weights_weak_slices_by_production_prevalence(tmp_path, shards, val_report) -> None:
    src = shards["src"]
    dark = _dark_ids(src, 0.8)
    sig_dark = _signals(make_window(tmp_path / "d", src, dark), shards, val_report)
    sig_flat = _signals(make_window(tmp_path / "f", src, set()), shards, val_report)
    merged_dark = merge_reports(val_report, sig_dark, SCENARIO)
    merged_flat = merge_reports(val_report, sig_flat, SCENARIO)
    w_val = next(w for w in val_report["weak_slices"] if (w["condition"], w["side"]) == ("brightness", "low"))
    p_val = w_val["support_images"] / val_report["counts"]["images"]
    for sig, merged in ((sig_dark, merged_dark), (sig_flat, merged_flat)):
        entry = next(c for c in sig["slices"] if c["condition"] == "brightness")["bins"][w_val["bin"]]
        w = _weak(merged, "brightness", "low")
        expected = min(max(entry["prevalence"] / p_val, 0.25), 4.0)
        assert w["production"]["weight"] == pytest.approx(expected, abs=1e-5)
        assert w["score"] == pytest.approx(w_val["score"] * expected, abs=1e-4)
        assert w["real_val_score"] == pytest.approx(w_val["score"])
    assert _weak(merged_dark, "brightness", "low")["production"]["weight"] > \
        _weak(merged_flat, "brightness", "low")["production"]["weight"]
    ranks = [w["rank"] for w in merged_dark["weak_slices"]]
    scores = [w["score"] for w in merged_dark["weak_slices"]]
    assert ranks == list(range(1, len(ranks) + 1)) and scores == sorted(scores, reverse=True)
    for key in ("kind", "schema_version", "overall", "slices", "data", "per_class"):
        assert merged_dark[key] == val_report[key]
    assert merged_dark["production"]["window"]["id"] == sig_dark["window"]["id"]
    check_report(merged_dark, SCENARIO)  # the policy accepts it unchanged
    pooled = pooled_weak_slices([merged_dark], SCENARIO)
    assert ("brightness", "low") in {(s.condition, s.side) for s in pooled}


def test_reviewed_production_failures_become_weak_slices(tmp_path, shards, val_report) -> None:
    src = shards["src"]
    sig = _signals(make_window(tmp_path / "m", src, _dark_ids(src, 0.5), miss_dark=True), shards, val_report)
    merged = merge_reports(val_report, sig, SCENARIO)
    added = [w for w in merged["weak_slices"] if w["source"] == "production-reviewed"]
    assert ("brightness", "low") in {(w["condition"], w["side"]) for w in added}
    assert merged["production"]["reviewed_weak_slices"] == len(added)
    assert all(w["parameters"] == SCENARIO.parameters_for_condition(w["condition"]) for w in added)
    check_report(merged, SCENARIO)


def test_pixel_drift_on_a_parameterised_condition_becomes_a_target_by_itself(tmp_path, shards, val_report) -> None:
    src = shards["src"]
    quiet = {**val_report, "weak_slices": []}  # real-val shows no failure: only production can steer
    everything = {int(i["id"]) for i in src.coco["images"]}
    dark = _signals(make_window(tmp_path / "d", src, everything), shards, quiet)
    flat = _signals(make_window(tmp_path / "f", src, set()), shards, quiet)
    merged = merge_reports(quiet, dark, SCENARIO)
    targets = [w for w in merged["weak_slices"] if w["source"] == "production-drift"]
    b = _drift(dark, "brightness")
    w = next(t for t in targets if t["condition"] == "brightness")
    assert (w["side"], w["level"], w["support"], w["recall"]) == ("low", "image", 40, None)
    assert w["range"] == pytest.approx(b["production_range"]) and w["range"][1] < b["reference_range"][0]
    assert w["score"] == pytest.approx(b["ks_stat"] * 40 ** 0.5)
    assert w["parameters"] == ["light.intensity"] and w["drift"]["psi"] == b["psi"]
    assert {t["condition"] for t in targets} <= set(dark["drifted"])
    assert merged["production"]["drift_targets"] == len(targets)
    assert merge_reports(quiet, flat, SCENARIO)["weak_slices"] == []  # no drift, no failure: no target
    check_report(merged, SCENARIO)  # the policy accepts it unchanged...
    pooled = {(s.condition, s.side): s for s in pooled_weak_slices([merged], SCENARIO)}
    assert pooled["brightness", "low"].lo == pytest.approx(w["range"][0])  # ...and reads the target
    small = ProductionOptions(min_window_images=100)
    assert merge_reports(quiet, dark, SCENARIO, small)["weak_slices"] == []  # too few frames to steer


def test_only_significant_pixel_drift_with_generator_parameters_is_a_target() -> None:
    base = {"column": "stat.brightness", "level": "image", "status": "drift", "source": "pixels",
            "direction": "lower", "production_range": [10.0, 40.0], "ks_stat": 0.5, "n_production": 64,
            "psi": 1.0, "ks_p": 1e-9, "reference_range": [60.0, 200.0]}
    cases = {
        "kept": {"condition": "brightness"},
        "watch": {"condition": "brightness", "status": "watch"},
        "model-estimated": {"condition": "size", "source": "predicted boxes with score >= 0.3"},
        "no parameter": {"condition": "not-a-condition"},
        "no direction": {"condition": "brightness", "direction": "same"},
        "no range": {"condition": "brightness", "production_range": None},
    }
    got = {name: drift_slices({"drift": [{**base, **case}]}, SCENARIO) for name, case in cases.items()}
    assert [name for name, rows in got.items() if rows] == ["kept"]
    (kept,) = got["kept"]
    assert kept["score"] == pytest.approx(0.5 * 8.0) and kept["range"] == [10.0, 40.0]
    higher = drift_slices({"drift": [{**base, "condition": "brightness", "direction": "higher"}]}, SCENARIO)
    assert higher[0]["side"] == "high"


def test_small_window_carries_no_production_weight(tmp_path, shards, val_report) -> None:
    src = shards["src"]
    sig = _signals(make_window(tmp_path / "d", src, _dark_ids(src, 0.8)), shards, val_report,
                   ProductionOptions(min_window_images=100))
    merged = merge_reports(val_report, sig, SCENARIO, ProductionOptions(min_window_images=100))
    assert merged["production"]["weighting"].startswith("none: window has 40 readable frames")
    assert all(w["production"]["weight"] == 1.0 for w in merged["weak_slices"])
    assert [w["score"] for w in merged["weak_slices"]] == [w["score"] for w in val_report["weak_slices"]]


def test_merge_refuses_misaligned_signals_and_real_test(tmp_path, shards, val_report) -> None:
    src = shards["src"]
    unaligned = _signals(make_window(tmp_path / "u", src, set()), shards)  # binned on the reference
    with pytest.raises(DataError, match="sliced with this real-val report"):
        merge_reports(val_report, unaligned, SCENARIO)
    held = {**val_report, "data": {**val_report["data"], "split": "real-test"}}
    with pytest.raises(DataError, match="real-test"):
        merge_reports(held, unaligned, SCENARIO)


# --- no data -----------------------------------------------------------------------------------

def test_empty_window_gives_no_data_and_no_merged_report(tmp_path, shards, val_report, capsys) -> None:
    (tmp_path / "log").mkdir()
    sig = _signals(tmp_path / "log", shards, val_report)
    assert sig["status"] == "no_data" and sig["drift"] == [] and sig["overall"] is None and sig["slices"] == []
    with pytest.raises(DataError, match="no merged report is made from an empty window"):
        merge_reports(val_report, sig, SCENARIO)

    scenario_yaml = tmp_path / "demo.yaml"
    scenario_yaml.write_text(yaml.safe_dump(DEMO_SPEC))
    report = tmp_path / "val.json"
    report.write_text(json.dumps(val_report))
    args = ["production", "ingest", "--log", str(tmp_path / "log"), "--reference", str(shards["ref"].path),
            "--scenario", str(scenario_yaml), "--real-val-report", str(report)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert "no data:" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["signals.json", "signals.md"]
    assert json.loads((tmp_path / "out" / "signals.json").read_text())["status"] == "no_data"


def test_cli_ingest_writes_merged_report_once_per_record(tmp_path, shards, val_report, capsys) -> None:
    log = make_window(tmp_path / "w", shards["src"], _dark_ids(shards["src"], 0.8))
    scenario_yaml = tmp_path / "demo.yaml"
    scenario_yaml.write_text(yaml.safe_dump(DEMO_SPEC))
    report = tmp_path / "val.json"
    report.write_text(json.dumps(val_report))
    args = ["production", "ingest", "--log", str(log), "--reference", str(shards["ref"].path),
            "--scenario", str(scenario_yaml), "--real-val-report", str(report)]
    assert main([*args, "--out", str(tmp_path / "o1")]) == 0
    assert "drifted conditions: brightness" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["report.json", "report.md", "signals.json",
                                                                   "signals.md"]
    merged = json.loads((tmp_path / "o1" / "report.json").read_text())
    check_report(merged, SCENARIO)
    assert "## Production" in (tmp_path / "o1" / "report.md").read_text()
    assert main([*args, "--out", str(tmp_path / "o2")]) == 0  # same log again: nothing new
    assert json.loads((tmp_path / "o2" / "signals.json").read_text())["counts"]["new"] == 0
    assert not (tmp_path / "o2" / "report.json").exists()


def test_cli_rerun_after_a_crash_before_commit_counts_the_window_once(tmp_path, shards, monkeypatch, capsys) -> None:
    import evaluator.production

    log = make_window(tmp_path / "w", shards["src"], set())
    scenario_yaml = tmp_path / "demo.yaml"
    scenario_yaml.write_text(yaml.safe_dump(DEMO_SPEC))
    args = ["production", "ingest", "--log", str(log), "--reference", str(shards["ref"].path),
            "--scenario", str(scenario_yaml), "--out", str(tmp_path / "o")]

    class Killed(BaseException):  # a kill escapes every handler (an OSError is now one CLI line, exit 74)
        pass

    def crash(result: Any) -> None:
        raise Killed("killed after the outputs, before the watermark")

    monkeypatch.setattr(evaluator.production, "commit", crash)
    with pytest.raises(Killed):
        main(args)
    first = json.loads((tmp_path / "o" / "signals.json").read_text())
    monkeypatch.undo()
    assert main(args) == 0  # same window id: the outputs stand, only the watermark is committed
    assert "already written" in capsys.readouterr().out
    assert json.loads((tmp_path / "o" / "signals.json").read_text()) == first
    state = json.loads((log / "ingest-state.json").read_text())
    assert state["totals"]["new"] == 40 and [w["id"] for w in state["windows"]] == [first["window"]["id"]]


@pytest.mark.slow  # imports optuna and runs a study
def test_policy_steers_toward_the_slice_production_made_heavier(tmp_path, shards, val_report) -> None:
    from policy import PolicyInputs, make_policy

    src = shards["src"]
    merged = merge_reports(val_report, _signals(make_window(tmp_path / "d", src, _dark_ids(src, 0.8)), shards,
                                                val_report), SCENARIO)
    assert merged["weak_slices"][0]["condition"] == "brightness"
    policy = make_policy("optuna", study=tmp_path / "policy.db", loop_id="prod")
    decision = policy.propose(PolicyInputs(SCENARIO, [merged], None, shards["ref"].conditions()))
    moved = {c["parameter"] for c in decision.changes}
    assert "light.intensity" in moved  # the brightness condition's parameter in the demo scenario


@pytest.mark.slow  # imports optuna and runs a study
def test_policy_renders_darker_when_production_darkens_and_real_val_is_quiet(tmp_path, shards, val_report) -> None:
    from policy import PolicyInputs, make_policy

    src = shards["src"]
    quiet = {**val_report, "weak_slices": []}
    everything = {int(i["id"]) for i in src.coco["images"]}
    merged = merge_reports(quiet, _signals(make_window(tmp_path / "d", src, everything), shards, quiet), SCENARIO)
    policy = make_policy("optuna", study=tmp_path / "policy.db", loop_id="drift")
    decision = policy.propose(PolicyInputs(SCENARIO, [merged], None, shards["ref"].conditions()))
    change = next(c for c in decision.changes if c["parameter"] == "light.intensity")
    assert change["slice"]["condition"] == "brightness" and change["centre_shift"] < 0  # darker scenes


def test_cli_ingest_at_a_score_threshold_above_the_confident_default(tmp_path, shards, val_report, capsys) -> None:
    """`--score-threshold 0.6` (above the default `confident` 0.5) works like the loop and the
    monitor: confident follows the threshold (one rule, ProductionOptions.at_threshold); it used
    to fail with an error about a `confident` option the CLI does not have."""
    log = make_window(tmp_path / "w", shards["src"], _dark_ids(shards["src"], 0.8))
    scenario_yaml = tmp_path / "demo.yaml"
    scenario_yaml.write_text(yaml.safe_dump(DEMO_SPEC))
    args = ["production", "ingest", "--log", str(log), "--reference", str(shards["ref"].path),
            "--scenario", str(scenario_yaml), "--score-threshold", "0.6", "--out", str(tmp_path / "o")]
    assert main(args) == 0, capsys.readouterr().err
    sig = json.loads((tmp_path / "o" / "signals.json").read_text())
    assert sig["settings"]["score_threshold"] == 0.6 and sig["settings"]["confident"] == 0.6
