"""``synthloop policy next``: propose the next generation params from failure reports.

Reads the failure report(s) of the current model (real-val first, then any production
windows; real-test is refused), the params in use and the latest synthetic shard(s), asks the
chosen policy for the next GenerationParams, writes them (and the decision record) atomically
and prints the decision as Markdown. The ``optuna`` policy keeps its study in ``--study``
(one study per ``--loop-id``), so running this once per loop iteration continues the study.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.commands import add_group


def add_parser(sub: Any) -> None:
    add_group(sub, "policy", "steer generation toward the conditions the model fails on",
              "Generation policies: turn failure reports into the next generation params.",
              {"next": (_add_next, run)})


def _add_next(psub: Any) -> argparse.ArgumentParser:
    n = psub.add_parser(
        "next", help="propose the next generation params from failure reports",
        description=(
            "Read failure reports (real-val first; production windows may follow; real-test is "
            "refused), the params in use and the latest synthetic shard(s); propose the next "
            "generation params with the chosen policy; write them to --out (and the decision "
            "record to --record) and print the decision as Markdown. With --policy optuna, each "
            "run is one iteration of the loop's Optuna study: it tells the previous proposal its "
            "measured gain, then asks a new trial."))
    n.add_argument("--scenario", required=True, metavar="S", help="scenario name or YAML path")
    n.add_argument("--report", required=True, action="append", metavar="REPORT",
                   help="report.json written by `synthloop evaluate` (or its directory); repeat "
                        "for production reports, the first one (real-val) gives the objective")
    n.add_argument("--shard", action="append", default=[], metavar="DIR",
                   help="latest synthetic shard(s): their conditions.parquet shows which parameter "
                        "values produce the weak conditions (repeatable)")
    n.add_argument("--current", default=None, metavar="PARAMS",
                   help="params in use (YAML/JSON); default: the study's latest proposal, else "
                        "uniform over every range")
    n.add_argument("--policy", default="optuna", metavar="NAME",
                   help="optuna (steered by failures), mixture (uniform share + --base + a capped "
                        "tilt toward weak slices), refit (uniform share + --base + a capped tilt toward "
                        "--target), uniform, fixed or calibrated (baselines); default optuna")
    n.add_argument("--base", default=None, metavar="PARAMS",
                   help="--policy mixture/refit/calibrated: the calibrated base params (`synthloop "
                        "calibrate`); default uniform")
    n.add_argument("--target", default=None, metavar="PARAMS",
                   help="--policy refit: the base re-fitted to the model's misses (`synthloop calibrate "
                        "--params BASE --failures REPORT_DIR`)")
    n.add_argument("--study", default=None, metavar="URL",
                   help="Optuna storage: SQLAlchemy URL or .db path (default: policy.db next to --out)")
    n.add_argument("--loop-id", default=None, metavar="ID",
                   help="study name, one per loop (default: <scenario>-loop)")
    n.add_argument("--objective", default="map50", metavar="M",
                   help="what a trial is scored on, as the gain after − before: map50, recall or "
                        "slice_recall (recall on the weak slices it targeted); default map50")
    n.add_argument("--top-k", type=int, default=3, metavar="K",
                   help="act on at most K weak slices (default 3)")
    n.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the Optuna sampler (default 0)")
    n.add_argument("--out", required=True, metavar="PARAMS",
                   help="where to write the next params (YAML)")
    n.add_argument("--record", default=None, metavar="JSON",
                   help="also write the decision record as JSON here")
    return n


def _conditions(paths: list[str], scenario_name: str) -> Any:
    import pandas as pd

    from evaluator.checks import manifest_scenario
    from generator.errors import DataError, ShardError
    from generator.shard import Shard

    frames = []
    for path in paths:
        try:
            shard = Shard(path)
        except ShardError as exc:
            raise ShardError(f"--shard: {exc}") from exc
        kind, name = shard.manifest.get("kind"), manifest_scenario(shard.manifest)
        if kind != "synthetic" or name != scenario_name:
            raise DataError(f"--shard: {path!r} must be a synthetic shard of scenario {scenario_name!r}, "
                            f"but its manifest says kind={kind!r}, scenario={name!r}; pass a shard "
                            "rendered by `synthloop render` for this scenario")
        if not (shard.path / "conditions.parquet").is_file():
            raise ShardError(f"--shard: {path!r} has no conditions.parquet; render it again")
        frames.append(shard.conditions())
    return pd.concat(frames, ignore_index=True) if frames else None


def run(args: argparse.Namespace) -> int:
    import optuna

    from generator import atomic
    from generator.errors import ConfigError
    from generator.params import GenerationParams, load_params
    from generator.scenario import load_scenario
    from policy import PolicyInputs, load_report, make_policy
    from policy.mixture import load_base
    from policy.optuna_policy import OptunaConfig
    from policy.registry import STEERED, check_name
    from policy.study import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_name(args.policy)
    for opt, path in (("--out", args.out), ("--record", args.record)):
        if path is not None and Path(path).is_dir():
            raise ConfigError(f"--{opt.lstrip('-')}: must be a file path, but {path!r} is a directory; "
                              "name a file such as params.yaml")
    scenario = load_scenario(args.scenario)
    reports = [load_report(r) for r in args.report]
    current = load_params(args.current, scenario) if args.current else None
    conditions = _conditions(args.shard, scenario.name)
    if args.target is not None and args.policy != "refit":
        raise ConfigError(f"--target: only --policy refit reads a re-fit target, but got --policy {args.policy}; "
                          "drop --target or use --policy refit")
    target = load_params(args.target, scenario) if args.target else None
    inputs = PolicyInputs(scenario, reports, current, conditions, target).check()
    out = Path(args.out)
    config = OptunaConfig(seed=args.seed, objective=args.objective,
                          space=SearchSpace(top_k=args.top_k))
    base = load_base(args.base, scenario) if args.base else None
    policy = make_policy(args.policy, study=args.study or out.parent / "policy.db",
                         loop_id=args.loop_id or f"{scenario.name}-loop", config=config, base=base)
    if args.policy in STEERED and args.study is None:
        out.parent.mkdir(parents=True, exist_ok=True)  # the default study lives next to --out
    decision = policy.propose(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    GenerationParams.model_validate(decision.params).save(out)
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(args.record, decision.to_dict())
    print(decision.to_markdown())
    trial = f" (Optuna trial {decision.trial})" if decision.trial is not None else ""
    print(f"wrote {out}{trial}" + (f" and {args.record}" if args.record else ""))
    return 0
