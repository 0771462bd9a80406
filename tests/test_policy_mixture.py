"""The bounded-mixture policy: uniform floor, capped tilt, CI eligibility, mixture sampling,
unchanged old params files and one-line errors for bad mixtures."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import optuna
import pytest
import yaml
from policysupport import digits, make_report, toy_conditions, weak_slice

from generator.coverage import expected_probs, mixture_check
from generator.errors import ConfigError
from generator.fingerprint import fingerprint
from generator.params import Component, Distribution, GenerationParams, load_params, validate_params
from generator.sampling import Sampler, image_seeds
from policy import PolicyInputs, make_policy
from policy.evidence import Target
from policy.mixture import (
    MixtureKnobs,
    MixtureOptions,
    categorical_move,
    eligible_reports,
    mixture_params,
    numeric_move,
    tilt,
)
from policy.moves import Plan
from policy.optuna_policy import OptunaConfig
from policy.reports import WeakSlice
from policy.units import categorical_weights, numeric_summary

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A plain (pre-mixture) params file; its fingerprint and samples were recorded with the code
# before mixtures existed (commit af1ecf5): they must never change, or old shards go stale.
OLD = {"scenario": "digits", "uniform_share": 0.25, "distributions": {
    "light.intensity": {"kind": "truncnormal", "center": 2.0, "width": 0.8},
    "camera.distance": {"kind": "beta", "center": 6.0, "width": 1.5},
    "background.kind": {"kind": "categorical", "weights": {"photo": 2.0, "solid": 1.0, "noise": 1.0}},
    "digit.tilt": {"kind": "uniform", "low": 10.0, "high": 20.0}}}
OLD_FINGERPRINT = "9b871e72b0051b9bac2c1a9627c54e94"
OLD_SAMPLES_SHA = "2644713b28807c4c1780aaccc9e71712a71074bdd0518fbe326cc042f7d9b28e"


@pytest.fixture(scope="module")
def sc():
    return digits()


@pytest.fixture(scope="module")
def shard(sc):
    return toy_conditions(sc, n_images=200, seed=1)


def _knobs(**kw):
    return MixtureKnobs(**{"uniform_share": 0.3, "tilt_share": 0.3, "max_shift": 0.1,
                           "width_scale": 1.0, "n_slices": 3, **kw})


def _ws(condition="object_size", key_side="low"):
    return WeakSlice(report=0, rank=1, condition=condition, column="pixel_size", level="object", lo=1.0,
                     hi=3.0, side=key_side, support=40, recall=0.2, score=5.0, parameters=("camera.distance",))


# ---------------------------------------------------------------------- generator: format
def test_old_params_file_keeps_fingerprint_samples_and_records(tmp_path, sc):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(OLD))
    p = load_params(path, sc)
    assert p.to_dict() == OLD and not p.is_mixture
    assert fingerprint(params=p.to_dict()) == OLD_FINGERPRINT
    sampler = Sampler(sc, p)
    out = [sampler.sample(np.random.default_rng(s)) for s in image_seeds(123, 40)]
    blob = json.dumps([[o.conditions(), o.objects] for o in out], sort_keys=True, default=str)
    assert hashlib.sha256(blob.encode()).hexdigest() == OLD_SAMPLES_SHA
    assert all("mix_component" not in o.conditions() for o in out)


def _mix(u=0.25, weights=(3.0, 1.0)):
    comps = [Component(name=f"c{i}", weight=w,
                       distributions={"light.intensity": Distribution(kind="fixed", value=1.0 + i)})
             for i, w in enumerate(weights)]
    return GenerationParams(scenario="digits", uniform_share=u, components=comps)


def test_mixture_component_frequencies_match_their_shares(sc):
    p = validate_params(_mix(), sc)
    sampler = Sampler(sc, p)
    n = 4000
    draws = [sampler.sample(np.random.default_rng(s)) for s in image_seeds(7, n)]
    comp = np.array([d.conditions()["mix_component"] for d in draws])
    for k, share in [(-1, 0.25), (0, 0.75 * 0.75), (1, 0.75 * 0.25)]:
        hits = int((comp == k).sum())
        bound = 4.5 * math.sqrt(n * share * (1 - share))  # binomial: 4.5 sd, p < 1e-5 two-sided
        assert abs(hits - n * share) < bound, (k, hits, n * share)
    for d in draws:  # each image draws every parameter from its own component
        if d.component == 0:
            assert d.image["light.intensity"] == 1.0
        elif d.component == 1:
            assert d.image["light.intensity"] == 2.0
        else:
            assert d.uniform_mix
    again = [Sampler(sc, p).sample(np.random.default_rng(s)) for s in image_seeds(7, 20)]
    assert again == draws[:20]  # same seed, same samples
    assert mixture_check({"images": [{"conditions": d.conditions()} for d in draws]}, p)["flags"] == []
    skewed = [{"conditions": {"mix_component": 0}} for _ in range(200)]
    assert mixture_check({"images": skewed}, p)["flags"]


def test_mixture_fingerprint_differs_and_roundtrips(tmp_path, sc):
    p = _mix()
    path = tmp_path / "m.yaml"
    p.save(path)
    q = load_params(path, sc)
    assert q == p and fingerprint(params=q.to_dict()) != fingerprint(params=_mix(weights=(1.0, 3.0)).to_dict())
    assert [n for n, _ in q.image_shares()] == ["uniform", "c0", "c1"]
    assert sum(s for _, s in q.image_shares()) == pytest.approx(1.0)


def test_expected_distribution_of_a_mixture_is_the_weighted_sum(sc):
    spec = sc.parameters["background.kind"]
    comps = [Component(weight=1.0, distributions={"background.kind": Distribution(kind="fixed", value="photo")}),
             Component(weight=3.0, distributions={"background.kind": Distribution(kind="fixed", value="solid")})]
    p = GenerationParams(scenario="digits", uniform_share=0.2, components=comps)
    probs = dict(zip([str(c) for c in spec.choices or []], expected_probs(spec, p, "background.kind"), strict=True))
    assert probs["photo"] == pytest.approx(0.04 + 0.8 * 0.25)
    assert probs["solid"] == pytest.approx(0.04 + 0.8 * 0.75)
    assert probs["noise"] == pytest.approx(0.04)
    num = sc.parameters["light.intensity"]
    edges = np.linspace(0.8, 8.0, 5)
    mixed = expected_probs(num, _mix(u=0.5, weights=(1.0, 1.0)), "light.intensity", edges)
    assert mixed[0] == pytest.approx(0.5 * 0.25 + 0.5)  # both fixed values (1.0, 2.0) in bin 0


@pytest.mark.parametrize(("data", "message"), [
    ({"components": [{"weight": -1.0}]},
     r"^params\.components\[0\]\.weight: must be a finite number >= 0, but got -1\.0$"),
    ({"components": [{"weight": 0.0}, {"weight": 0.0}]},
     r"^params\.components: at least one component weight must be > 0"),
    ({"components": [{"weight": 1.0, "distributions": {"no.such": {"kind": "uniform"}}}]},
     r"^params\.components\[0\]\.distributions\.no\.such: unknown parameter of scenario 'digits'"),
    ({"components": [{"weight": 1.0}, {"weight": 1.0, "distributions": {
        "light.intensity": {"kind": "truncnormal", "center": 50.0, "width": 1.0}}}]},
     r"^params\.components\[1\]\.distributions\.light\.intensity\.center: must lie inside \[0\.8, 8\.0\]"),
    ({"components": [{"weight": 1.0}], "distributions": {"light.intensity": {"kind": "uniform"}}},
     r"^params\.distributions: must be empty when `components` is given"),
    ({"components": []}, r"^params\.components: must hold at least one component"),
    ({"components": [{"name": "a", "weight": 1.0}, {"name": "a", "weight": 1.0}]}, r"names must be unique"),
])
def test_bad_mixtures_are_one_line_errors(tmp_path, sc, data, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"scenario": "digits", **data}))
    with pytest.raises(ConfigError, match=message) as exc:
        load_params(path, sc)
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------------- policy: pieces
def test_uniform_share_never_drops_below_the_floor(sc):
    base = GenerationParams(scenario="digits")
    for share in (0.0, 0.05, 0.19, 0.2, 0.5):
        p = mixture_params(sc, base, {}, share, 0.4, floor=0.2)
        assert p.uniform_share >= 0.2 and p.uniform_share == max(0.2, share)
    with pytest.raises(ConfigError, match=r"uniform_floor: must lie in \(0, 1\)"):
        MixtureOptions(uniform_floor=0.0).validate()
    with pytest.raises(ConfigError, match="low must be >= uniform_floor"):
        MixtureOptions(uniform_share=(0.1, 0.5)).validate()


def test_numeric_tilt_moves_at_most_the_cap_per_round_and_further_over_rounds(sc):
    name = "camera.distance"
    spec = sc.parameters[name]
    cur: Distribution | None = None  # uniform: centre 0.5
    centres = []
    for _ in range(6):
        new, how = numeric_move(sc, name, cur, centre=1.0, width=0.05, k=_knobs(max_shift=0.1))
        c0, _ = numeric_summary(spec, cur)
        c1, _ = numeric_summary(spec, new)
        assert c1 - c0 <= 0.1 + 1e-6 and how["centre_shift"] <= 0.1 + 1e-6
        centres.append(c1)
        cur = new
    assert centres[0] == pytest.approx(0.6, abs=1e-6)
    assert centres[2] == pytest.approx(0.8, abs=1e-6)  # several rounds go further
    assert centres[-1] == pytest.approx(1.0, abs=1e-6)  # and reach the target, never overshoot
    near, how = numeric_move(sc, name, None, centre=0.55, width=0.29, k=_knobs(max_shift=0.1))
    assert numeric_summary(spec, near)[0] == pytest.approx(0.55, abs=1e-6) and not how["capped"]


def test_categorical_tilt_is_capped_in_ratio_and_total_variation(sc):
    name = "background.kind"
    spec = sc.parameters[name]
    target = {"noise": 0.9, "checker": 0.1}
    w0 = categorical_weights(spec, None)
    new, how = categorical_move(sc, name, None, target, _knobs(max_shift=0.5), max_ratio=2.0)
    w1 = categorical_weights(spec, new)
    assert max(w1[n] / w0[n] for n in w0) <= 2.0 + 1e-5 and how["capped"]
    assert w1["noise"] == pytest.approx(0.4, abs=1e-5)  # ×2 of 0.2 exactly
    small, _ = categorical_move(sc, name, None, target, _knobs(max_shift=0.05), max_ratio=2.0)
    assert 0.5 * sum(abs(categorical_weights(spec, small)[n] - w0[n]) for n in w0) <= 0.05 + 1e-6


def test_tilt_acts_on_at_most_n_slices(sc):
    a, b = _ws("object_size", "low"), _ws("brightness", "low")
    ta = Target("camera.distance", "push", "", centre=1.0, width=0.1)
    tb = Target("light.intensity", "push", "", centre=0.0, width=0.1)
    plan = Plan(slices=[a, b], targets=[(a, ta), (b, tb)])
    dists, changes = tilt(sc, {}, plan, _knobs(n_slices=1), 2.0)
    assert [c.parameter for c in changes] == ["camera.distance"] and set(dists) == {"camera.distance"}
    _, both = tilt(sc, {}, plan, _knobs(n_slices=2), 2.0)
    assert [c.parameter for c in both] == ["camera.distance", "light.intensity"]


def test_only_slices_with_ci_wholly_below_overall_are_eligible(sc):
    below = weak_slice(sc, "object_size", 2.0, 5.0)  # ci [0.2, 0.4] < 0.7
    overlap = {**weak_slice(sc, "brightness", 0.0, 60.0), "ci": [0.5, 0.75]}
    no_ci = {**weak_slice(sc, "clutter", 14.0, 30.0), "ci": None}
    drift = {**weak_slice(sc, "noise", 5.0, 9.0), "ci": None, "recall": None,
             "source": "production-drift"}
    kept, dropped = eligible_reports([make_report(sc, [below, overlap, no_ci, drift])])
    assert [w["condition"] for w in kept[0]["weak_slices"]] == ["object_size", "noise"]
    assert [d["slice"].split()[0] for d in dropped] == ["brightness", "clutter"]
    assert "not below the overall recall" in dropped[0]["reason"] and "no recall CI" in dropped[1]["reason"]


# ---------------------------------------------------------------------- policy: end to end
def _propose(db, sc, report, shard, base=None, current=None, seed=0):
    policy = make_policy("mixture", study=db, loop_id="mix", config=OptunaConfig(seed=seed), base=base)
    return policy.propose(PolicyInputs(sc, [report], current, shard))


def _base(sc):
    return validate_params(GenerationParams(scenario="digits", uniform_share=0.0, distributions={
        "camera.distance": Distribution(kind="truncnormal", center=5.0, width=1.0),
        "light.intensity": Distribution(kind="truncnormal", center=3.0, width=1.0)}), sc)


def test_mixture_policy_proposes_uniform_base_and_a_capped_tilt(tmp_path, sc, shard):
    db, base = tmp_path / "p.db", _base(sc)
    rep = make_report(sc, [weak_slice(sc, "object_size", 0.5, 2.0)], map50=0.4, tag="a")  # far below
    d = _propose(db, sc, rep, shard, base=base)
    p = validate_params(GenerationParams.model_validate(d.params), sc)
    assert d.policy == "mixture" and d.trial == 0 and d.trial_source == "heuristic"
    assert p.uniform_share == pytest.approx(0.3) and [c.name for c in p.components or []] == ["base", "tilt"]
    assert (p.components or [])[0].distributions == base.distributions
    assert [c.weight for c in p.components or []] == [pytest.approx(0.7), pytest.approx(0.3)]
    assert d.changes and all(abs(c["centre_shift"]) <= 0.15 + 1e-6 for c in d.changes if c.get("centre_shift"))
    assert any(c["evidence"]["capped"] for c in d.changes)
    md = d.to_markdown()
    assert "(capped; wanted" in md
    assert "mixture (share of images): uniform 0.3, base 0.49, tilt 0.21" in md and "calibrated" in md
    for i in range(1, 5):  # TPE trials: whatever they pick, the floor holds
        d = _propose(db, sc, make_report(sc, [weak_slice(sc, "object_size", 0.5, 2.0)], map50=0.4 + i / 100,
                                         tag=str(i)), shard, base=base)
        q = GenerationParams.model_validate(d.params)
        assert q.uniform_share >= 0.2 and d.told[0]["state"] == "COMPLETE"
        assert all(abs(c["centre_shift"]) <= d.knobs["max_shift"] + 1e-6 for c in d.changes
                   if c.get("centre_shift") is not None)


def test_no_eligible_slice_means_no_tilt_and_says_why(tmp_path, sc, shard):
    overlap = {**weak_slice(sc, "object_size", 0.5, 2.0), "ci": [0.4, 0.8]}
    d = _propose(tmp_path / "p.db", sc, make_report(sc, [overlap]), shard, base=_base(sc))
    p = GenerationParams.model_validate(d.params)
    assert d.trial is None and not p.is_mixture and p.uniform_share == pytest.approx(0.3)
    assert p.distributions == _base(sc).distributions
    assert d.mixture is not None and d.mixture["tilt"].startswith("none: no weak slice's recall CI")
    assert "not eligible for the tilt: object_size low" in d.to_markdown()


def test_base_must_be_plain_and_modes_do_not_share_a_study(tmp_path, sc, shard):
    rep = make_report(sc, [weak_slice(sc, "object_size", 0.5, 2.0)])
    with pytest.raises(ConfigError, match="policy base: must be a plain params file"):
        _propose(tmp_path / "a.db", sc, rep, shard, base=_mix())
    with pytest.raises(ConfigError, match="only the mixture, refit and calibrated policies take a calibrated base"):
        make_policy("optuna", study=tmp_path / "b.db", loop_id="x", base=_base(sc))
    make_policy("optuna", study=tmp_path / "c.db", loop_id="mix").propose(PolicyInputs(sc, [rep], None, shard))
    with pytest.raises(ConfigError, match="made by the 'move' policy mode"):
        _propose(tmp_path / "c.db", sc, rep, shard)


def test_a_mixture_shard_renders_records_components_and_passes_coverage(tmp_path, sc):
    from generator.coverage import coverage_report
    from generator.pipeline import RenderJob, render_shard
    from generator.shard import Shard

    p = validate_params(_mix(u=0.3, weights=(1.0, 1.0)), sc)
    job = RenderJob(sc, p, n=60, seed=3, width=64, height=64, backend="fake")
    r = render_shard(job, tmp_path / "s", workers=2)
    df = Shard(r.path).conditions()
    assert set(df["param.mix_component"].unique()) <= {-1, 0, 1}
    again = render_shard(RenderJob(sc, p, n=60, seed=3, width=64, height=64, backend="fake"), tmp_path / "t")
    assert again.fingerprint == r.fingerprint
    assert (tmp_path / "s" / "annotations.json").read_bytes() == (tmp_path / "t" / "annotations.json").read_bytes()
    cov = coverage_report(r.path)
    assert cov["mixture"]["n"] == 60 and not cov["mixture"]["flags"]
    li = next(x for x in cov["parameters"] if x["name"] == "light.intensity")
    assert [m["share"] for m in li["distribution"]["mixture"]] == [0.3, 0.35, 0.35]


def test_loop_config_policy_base_and_initial_params(tmp_path, sc):
    from flows.loop.state import LoopConfig
    from policy.mixture import initial_params, load_base

    with pytest.raises(ConfigError,
                       match=r"^loop\.policy_base: applies to policies 'mixture', 'refit' and 'calibrated' only"):
        LoopConfig(workdir=str(tmp_path), policy="optuna", policy_base="base.yaml").validate()
    path = tmp_path / "base.yaml"
    _base(sc).save(path)
    LoopConfig(workdir=str(tmp_path), policy="mixture", policy_base=str(path)).validate()  # the file is read up front
    base = load_base(path, sc)
    first = initial_params(sc, base)
    assert not first.is_mixture and first.uniform_share == 0.3 and first.distributions == base.distributions
    assert initial_params(sc) == GenerationParams(scenario="digits")  # no base: the uniform arm's params


def test_lineage_summary_shows_a_mixture() -> None:
    from flows.tracking.lineage import params_summary

    comps = [{"name": "base", "weight": 0.7, "distributions": {}}, {"name": "tilt", "weight": 0.3}]
    p = {"gen.uniform_share": "0.3", "gen.components": json.dumps(comps)}
    assert params_summary(p) == "uniform_share 0.3; mixture of 2 components (base w 0.7, tilt w 0.3)"
    assert params_summary({**p, "gen.components": '[{"name": "ba…'}).endswith("(see the params file)")


def test_saved_proposal_is_told_and_a_rerun_replays(tmp_path, sc, shard):
    db, base = tmp_path / "p.db", _base(sc)
    slices = [weak_slice(sc, "object_size", 0.5, 2.0)]
    d0 = _propose(db, sc, make_report(sc, slices, map50=0.4, tag="a"), shard, base=base)
    GenerationParams.model_validate(d0.params).save(tmp_path / "params_1.yaml")
    current = load_params(tmp_path / "params_1.yaml", sc)  # what the loop rendered, read back
    b = make_report(sc, slices, map50=0.45, tag="b")
    d1 = _propose(db, sc, b, shard, base=base, current=current)
    assert d1.told[0]["state"] == "COMPLETE" and d1.told[0]["value"] == pytest.approx(0.05)
    again = _propose(db, sc, b, shard, base=base, current=current)
    assert again.replayed and {**again.to_dict(), "replayed": False} == d1.to_dict()
    # the tilt continues from the previous round's tilt: a second capped step, same direction
    t0 = next(c for c in d0.changes if c["parameter"] == "camera.distance")
    t1 = next(c for c in d1.changes if c["parameter"] == "camera.distance")
    assert t1["old"] == t0["new"] and t1["centre_shift"] * t0["centre_shift"] > 0


def test_baseline_after_a_mixture_lists_what_it_dropped(sc):
    from policy.base import UniformPolicy

    d = UniformPolicy().propose(PolicyInputs(sc, [make_report(sc)], validate_params(_mix(), sc)))
    assert [c["parameter"] for c in d.changes] == ["light.intensity"]
    assert d.changes[0]["old"]["kind"] == "mixture" and "mixture(0.75 fixed 1.0" in d.to_markdown()


def test_calibrated_policy_renders_the_base_mixture_every_round_whatever_the_reports(sc, shard):
    """Benchmark arm C: the open loop never tilts, however weak a slice is, and needs a base."""
    base = _base(sc)
    policy = make_policy("calibrated", base=base)
    far = make_report(sc, [weak_slice(sc, "object_size", 0.5, 2.0)], map50=0.1, tag="far")
    quiet = make_report(sc, [], map50=0.6, tag="quiet")
    first = policy.propose(PolicyInputs(sc, [far], None, shard))
    again = policy.propose(PolicyInputs(sc, [quiet], validate_params(GenerationParams.model_validate(first.params), sc),
                                        shard))
    p = GenerationParams.model_validate(first.params)
    assert first.params == again.params and not again.changes and first.policy == "calibrated"
    assert not p.is_mixture and p.uniform_share == pytest.approx(0.3) and p.distributions == base.distributions
    with pytest.raises(ConfigError, match=r"^--base: the calibrated policy needs a calibrated base"):
        make_policy("calibrated")
