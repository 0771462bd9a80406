"""``synthloop policy next``: a real run, a second iteration, and the bad inputs (exit 2)."""

from __future__ import annotations

import json

import pytest
import yaml
from policysupport import digits, make_report, toy_conditions, weak_slice

from flows.cli import main
from generator.params import GenerationParams, validate_params
from generator.shard import sha256_file


@pytest.fixture(scope="module")
def sc():
    return digits()


def _shard(path, sc, kind="synthetic"):
    path.mkdir()
    manifest = {"format": "synthloop-shard/1", "name": "toy", "kind": kind, "classes": sc.classes,
                "scenario": {"name": sc.name}, "fingerprint": "0" * 64, "counts": {}}
    toy_conditions(sc, n_images=150, seed=1).to_parquet(path / "conditions.parquet")
    manifest["files"] = {"conditions.parquet": sha256_file(path / "conditions.parquet")}  # readers verify it
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture()
def files(tmp_path, sc):
    weak = [weak_slice(sc, "object_size", 2.0, 5.0)]
    return {"a": _write(tmp_path / "a.json", make_report(sc, weak, map50=0.4, tag="a")),
            "b": _write(tmp_path / "b.json", make_report(sc, weak, map50=0.5, tag="b")),
            "shard": _shard(tmp_path / "shard", sc), "out": tmp_path / "run" / "params.yaml"}


def _next(files, *extra, report="a"):
    return main(["policy", "next", "--scenario", "digits", "--report", str(files[report]),
                 "--shard", str(files["shard"]), "--out", str(files["out"]), *extra])


def test_two_iterations_write_params_record_and_continue_the_study(files, sc, capsys):
    record = files["out"].parent / "decision.json"
    assert _next(files, "--record", str(record)) == 0
    out = capsys.readouterr().out
    assert "# Policy decision: optuna" in out and "camera.distance" in out and "wrote" in out
    params = validate_params(GenerationParams.model_validate(yaml.safe_load(files["out"].read_text())), sc)
    assert params.distributions["camera.distance"].center > 9.0
    saved = json.loads(record.read_text())
    assert saved["trial"] == 0 and saved["params"] == params.to_dict()
    assert (files["out"].parent / "policy.db").is_file()  # default study next to --out
    assert _next(files, "--current", str(files["out"]), report="b") == 0
    out = capsys.readouterr().out
    assert "Optuna trial 1" in out and "told trial 0: COMPLETE value 0.1" in out


def test_baseline_policy_needs_no_study(files, capsys):
    assert _next(files, "--policy", "uniform") == 0
    saved = yaml.safe_load(files["out"].read_text())
    assert saved["scenario"] == "digits" and not saved.get("distributions")
    assert not (files["out"].parent / "policy.db").exists()
    assert "baseline" in capsys.readouterr().out


def test_mixture_policy_with_a_calibrated_base(files, tmp_path, sc, capsys):
    base = _write(tmp_path / "base.json", {"scenario": "digits", "distributions": {
        "light.intensity": {"kind": "truncnormal", "center": 3.0, "width": 1.0}}})
    assert _next(files, "--policy", "mixture", "--base", str(base)) == 0
    assert "# Policy decision: mixture" in capsys.readouterr().out
    params = validate_params(GenerationParams.model_validate(yaml.safe_load(files["out"].read_text())), sc)
    assert [c.name for c in params.components or []] == ["base", "tilt"] and params.uniform_share >= 0.2
    assert (params.components or [])[0].distributions["light.intensity"].center == 3.0
    assert _next(files, "--policy", "optuna", "--base", str(base)) == 2
    assert "only the mixture, refit and calibrated policies take a calibrated base" in capsys.readouterr().err


def _bad(tmp_path, sc, case):
    if case == "missing":
        return ["--report", str(tmp_path / "nope.json")]
    if case == "malformed":
        (tmp_path / "m.json").write_text("{not json")
        return ["--report", str(tmp_path / "m.json")]
    changes = {"other-scenario": {"scenario": {"name": "shapes"}},
               "other-classes": {"per_class": [{"class": "cat"}]},
               "real-test": {"data": {"split": "real-test"}}}
    if case in changes:
        return ["--report", str(_write(tmp_path / "r.json", {**make_report(sc), **changes[case]}))]
    return {"unknown-policy": ["--policy", "bandit"],
            "bad-study": ["--study", "nosuchdb://host/x"],
            "unwritable-study": ["--study", f"sqlite:///{tmp_path}/no/such/dir/p.db"],
            "bad-objective": ["--objective", "accuracy"], "bad-top-k": ["--top-k", "0"],
            "bad-loop-id": ["--loop-id", "a b"]}[case]


@pytest.mark.parametrize("case", ["missing", "malformed", "other-scenario", "other-classes",
                                  "real-test", "unknown-policy", "bad-study", "unwritable-study",
                                  "bad-objective", "bad-top-k", "bad-loop-id", "real-shard",
                                  "bad-current"])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(files, tmp_path, sc, capsys, case):
    extra = []
    if case == "real-shard":
        files = {**files, "shard": _shard(tmp_path / "real", sc, kind="real")}
    elif case == "bad-current":
        extra = ["--current", str(_write(tmp_path / "c.json", {"scenario": "digits",
                                                               "uniform_share": 2.0}))]
    else:
        extra = _bad(tmp_path, sc, case)
    report_args = [] if "--report" in extra else ["--report", str(files["a"])]
    rc = main(["policy", "next", "--scenario", "digits", *report_args, "--shard", str(files["shard"]),
               "--out", str(files["out"]), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not files["out"].parent.exists()


def test_out_that_is_a_directory_is_refused(files, capsys):
    files["out"].mkdir(parents=True)
    assert _next(files) == 2
    assert "--out: must be a file path" in capsys.readouterr().err
    assert not (files["out"].parent / "policy.db").exists()
