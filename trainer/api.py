"""Public trainer API: :func:`train` a detector from shards, :func:`load_detector` it back.

>>> result = train(["shards/s0", "shards/real_train:0.5"], "models/m0",
...                strategy="mixed", real_ratio=0.3, epochs=10)            # doctest: +SKIP
>>> det = load_detector(result.path)                                      # doctest: +SKIP
>>> det.predict([image])  # [[{"bbox": [x, y, w, h], "category_id": 3, "score": 0.91}, ...]]

Order of work in :func:`train`: validate options → check every shard's manifest → plan the
phases → check ``out`` → decode images into memory → build (or load, ``init``) the model →
train → write the checkpoint atomically. A bad option or shard fails in the first steps, before
any expensive work, and nothing is written unless training finishes with finite losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import generator
from generator import atomic
from generator.errors import ConfigError, DataError, is_number
from generator.fingerprint import fingerprint
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.data import DataSource, ShardInfo, check_sources, load_store, parse_data_arg
from trainer.detector import Detector
from trainer.loop import LoopResult, StepHook, make_optimizer, run_phases, torch_settings
from trainer.registry import config_dict, get_model, make_config, spec_for
from trainer.sampling import plan_phases

__all__ = ["DataSource", "Detector", "TrainConfig", "TrainResult", "load_detector",
           "parse_data_arg", "resolve_device", "train"]


@dataclass
class TrainResult:
    """What :func:`train` hands back (the checkpoint itself lives at ``path``)."""

    path: Path
    steps: int
    images_seen: int
    seconds: float
    images_per_s: float
    final_loss: float  # mean of the last 20 steps
    device: str
    phase_steps: dict[str, int] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # one per step
    model_json: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device: 'cuda' was asked for, but torch sees no CUDA device "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device: must be auto, cpu or cuda, but got {name!r}")
    return torch.device(name)


def load_detector(path: str | Path, device: str = "auto", trust_module: bool | None = None) -> Detector:
    """Load a checkpoint directory written by :func:`train`, ready for ``predict``. Only a
    registered model loads unless ``trust_module`` (default ``SYNTHLOOP_TRUST_MODEL_MODULE=1``)
    lets ``model.json`` import its module (:mod:`trainer.checkpoint`)."""
    detector, _, _ = load_checkpoint(path, trust_module)
    detector.to(resolve_device(device))
    detector.module.eval()
    return detector


def _as_source(item: str | Path | DataSource | tuple[str | Path, float]) -> DataSource:
    if isinstance(item, DataSource):
        return item
    if isinstance(item, tuple):
        path, weight = item
        if not is_number(weight) \
                or not math.isfinite(weight) or weight <= 0:
            raise ConfigError(f"data: the weight of {str(path)!r} must be a number > 0, but got "
                              f"{weight!r}")
        return DataSource(Path(path), float(weight))
    if isinstance(item, Path):
        return DataSource(item)
    return parse_data_arg(item)


def train(data: Sequence[str | Path | DataSource | tuple[str | Path, float]], out: str | Path, *,
          strategy: str = "synthetic-only", epochs: float | None = None,
          steps: int | None = None, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
          device: str = "auto", real_ratio: float | None = None,
          finetune_steps: int | None = None, finetune_epochs: float | None = None,
          finetune_lr: float | None = None, model: str | None = None,
          input_size: int | None = None, model_options: dict[str, Any] | None = None,
          init: str | Path | None = None, augment: bool = True, num_threads: int | None = None,
          overwrite: bool = False, progress: bool = False,
          checkpoint: StepHook | None = None, channels_last: bool = True) -> TrainResult:
    """Train a detector on shards and write the checkpoint directory ``out``.

    ``data`` items are ``"DIR"``, ``"DIR:weight"``, ``Path``, ``(path, weight)`` or
    :class:`DataSource`. ``model`` is a registered name or ``package.module:NAME`` (default
    ``centernet``); ``model_options`` are fields of its config dataclass. With ``init``, the
    model, its config and its weights (and optimizer moments) come from that checkpoint and the
    shards' classes must equal its classes. Raises ConfigError/DataError for bad input and
    TrainingError when the loss diverges; nothing is written in either case.
    """
    cfg = TrainConfig(strategy=strategy, epochs=epochs, steps=steps, batch_size=batch_size,
                      lr=lr, seed=seed, device=device, real_ratio=real_ratio,
                      finetune_steps=finetune_steps, finetune_epochs=finetune_epochs,
                      finetune_lr=finetune_lr, augment=augment,
                      num_threads=num_threads).validate()
    sources = [_as_source(d) for d in data]
    return train_with_config(sources, Path(out), cfg, model=model, input_size=input_size,
                             model_options=model_options, init=init, overwrite=overwrite,
                             progress=progress, checkpoint=checkpoint, channels_last=channels_last)


@dataclass
class _Parent:
    """The ``--init`` checkpoint: its detector (weights loaded), torch payload and model.json."""

    path: Path
    detector: Detector
    payload: dict[str, Any]
    meta: dict[str, Any]


def train_with_config(sources: list[DataSource], out: Path, cfg: TrainConfig, *,
                      model: str | None = None, input_size: int | None = None,
                      model_options: dict[str, Any] | None = None,
                      init: str | Path | None = None, overwrite: bool = False,
                      progress: bool = False, checkpoint: StepHook | None = None,
                      channels_last: bool = True) -> TrainResult:
    """:func:`train` with a ready :class:`TrainConfig` and parsed sources."""
    dev = resolve_device(cfg.device)
    parent = _load_init(Path(init), model, input_size, model_options) if init is not None else None
    infos = check_sources(sources)
    classes = infos[0].shard.classes
    if parent is not None and classes != parent.detector.classes:
        raise ConfigError(f"--init: the model's classes {parent.detector.classes} differ from the "
                          f"shards' classes {classes}; train a new model instead of --init")
    scenario = _resolve_scenario(infos, parent.meta if parent else None)
    phases = plan_phases(cfg, infos)
    seeds = np.random.SeedSequence(cfg.seed).spawn(3)
    gens = [torch.Generator().manual_seed(int(s.generate_state(1)[0])) for s in seeds[:2]]
    if parent is None:
        detector = _new_detector(model, input_size, model_options, classes, scenario, gens[0])
    else:
        detector = parent.detector
        detector.scenario = scenario
    _check_out(out, overwrite, sources)
    store = load_store(infos, detector.config.input_size, progress)
    rng = np.random.default_rng(seeds[2])
    with torch_settings(dev, cfg.effective_threads):
        detector.to(dev)
        if channels_last:  # the same maths in NHWC layout: faster convolutions (RESULTS.md)
            detector.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        optimizer = make_optimizer(detector, cfg)
        if parent is not None and "optimizer" in parent.payload:
            optimizer.load_state_dict(parent.payload["optimizer"])
        loop = run_phases(detector, optimizer, store, infos, phases, cfg, rng, gens[1], progress,
                          checkpoint, channels_last)
    info = _model_info(detector, cfg, infos, loop, dev, parent)
    rng_state = {"numpy": rng.bit_generator.state, "torch": gens[1].get_state()}
    meta = save_checkpoint(out, detector, optimizer, rng_state, info, overwrite)
    return TrainResult(out, loop.steps, loop.images_seen, loop.seconds, loop.images_per_s,
                       loop.final_loss, str(dev), loop.phase_steps, loop.losses, meta)


def _load_init(init: Path, model: str | None, input_size: int | None,
               model_options: dict[str, Any] | None) -> _Parent:
    if model is not None:
        get_model(model)  # an explicit `--model pkg.mod:NAME` registers its model before the checkpoint loads
    detector, payload, meta = load_checkpoint(init)
    if model is not None and get_model(model).name != meta["model"]:
        raise ConfigError(f"--model: {model!r} differs from the --init model {meta['model']!r}; "
                          "drop --model (it comes from --init)")
    if input_size is not None and input_size != detector.config.input_size:
        raise ConfigError(f"--input-size: {input_size} differs from the --init model's "
                          f"{detector.config.input_size}; drop --input-size (it comes from --init)")
    if model_options:
        raise ConfigError(f"model options {sorted(model_options)}: come from the --init model and "
                          "cannot change; drop them")
    return _Parent(init, detector, payload, meta)


def _new_detector(model: str | None, input_size: int | None, options: dict[str, Any] | None,
                  classes: list[str], scenario: str, gen: torch.Generator) -> Detector:
    spec = get_model(model or "centernet")
    values = dict(options or {})
    if input_size is not None:
        values["input_size"] = input_size
    detector = spec.detector_class(make_config(spec, values), classes, scenario)
    detector.init_weights(gen)
    return detector


def _resolve_scenario(infos: list[ShardInfo], parent_meta: dict[str, Any] | None) -> str:
    names = sorted({i.scenario for i in infos if i.scenario})
    if len(names) > 1:
        raise DataError(f"--data: shards come from different scenarios {names}; train one model "
                        "per scenario")
    prior = str(parent_meta.get("scenario") or "") if parent_meta else ""
    if names and prior and names[0] != prior:
        raise ConfigError(f"--init: the model's scenario {prior!r} differs from the shards' "
                          f"scenario {names[0]!r}; train a new model instead of --init")
    return names[0] if names else prior


def _check_out(out: Path, overwrite: bool, sources: list[DataSource]) -> None:
    resolved = out.resolve()
    for src in sources:
        shard = src.path.resolve()
        if resolved == shard or shard in resolved.parents:
            raise ConfigError(f"--out: {str(out)!r} lies inside training shard {str(src.path)!r}; "
                              "choose a path outside the data")
    atomic.prepare_output_dir(out, overwrite)


def _model_info(detector: Detector, cfg: TrainConfig, infos: list[ShardInfo], loop: LoopResult,
                dev: torch.device, parent: _Parent | None) -> dict[str, Any]:
    spec = spec_for(detector)
    data = [i.record() for i in infos]
    parent_meta = parent.meta if parent else None
    init_block = None if parent is None else {
        "path": str(parent.path), "weights_sha256": parent.meta.get("weights_sha256"),
        "fingerprint": parent.meta.get("fingerprint")}
    train_config = cfg.to_dict()
    identity = {"model": spec.name, "config": config_dict(detector.config),
                "classes": detector.classes, "data": [[d["fingerprint"], d["weight"]] for d in data],
                "train": {k: v for k, v in train_config.items() if k not in ("device", "num_threads")},
                "init": init_block and init_block["weights_sha256"],
                "torch": torch.__version__, "synthloop": generator.__version__}
    return {
        "model": spec.name, "model_module": spec.module, "config": config_dict(detector.config),
        "classes": detector.classes, "scenario": detector.scenario, "data": data,
        "strategy": cfg.strategy, "train_config": train_config, "seed": cfg.seed,
        "steps": loop.steps, "phase_steps": loop.phase_steps, "images_seen": loop.images_seen,
        "total_steps": loop.steps + int(parent_meta.get("total_steps", 0) if parent_meta else 0),
        "final_loss": loop.final_loss, "device": str(dev), "torch_version": torch.__version__,
        "synthloop_version": generator.__version__, "init": init_block,
        "fingerprint": fingerprint(**identity),
    }

