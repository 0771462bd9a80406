"""A small explicit registry of detector models, chosen by name in configuration.

Built-in: ``centernet`` (:mod:`trainer.centernet`). A user package adds its own with::

    from trainer.registry import register_model
    register_model("fasterrcnn", MyFasterRCNN)      # a Detector subclass

and selects it with ``--model mypkg.detectors:fasterrcnn`` (the module is imported first, which
runs its ``register_model`` call). The checkpoint records that module, but a checkpoint is
data, not code: :func:`trainer.checkpoint.load_checkpoint` loads only models registered in this
process (built-ins, or a module the caller imported first) and imports the recorded module only
when trusted (``trust_module=True`` or ``SYNTHLOOP_TRUST_MODEL_MODULE=1``).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

from generator.errors import ConfigError
from trainer.detector import Detector, ModelConfig

_BUILTIN_MODULES = ("trainer.centernet",)
_REGISTRY: dict[str, ModelSpec] = {}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    detector_class: type[Detector]
    module: str  # importing it registers the model (recorded in model.json)

    @property
    def config_class(self) -> type[ModelConfig]:
        return self.detector_class.config_class


def register_model(name: str, detector_class: type[Detector]) -> None:
    """Make ``detector_class`` available as ``name``; re-registering the same class is a no-op."""
    if not (isinstance(detector_class, type) and issubclass(detector_class, Detector)):
        raise TypeError(f"register_model({name!r}): expected a Detector subclass, got {detector_class!r}")
    old = _REGISTRY.get(name)
    if old is not None and old.detector_class is not detector_class:
        raise ValueError(f"model name {name!r} is already registered by {old.module}")
    _REGISTRY[name] = ModelSpec(name, detector_class, detector_class.__module__)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_models() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def registered(name: str) -> ModelSpec | None:
    """The spec registered as ``name`` (built-ins loaded first), or None; imports nothing else."""
    _load_builtins()
    return _REGISTRY.get(name)


def get_model(ref: str, module: str | None = None) -> ModelSpec:
    """Look up ``NAME`` or ``package.module:NAME`` (importing the module first).

    Unknown names raise ConfigError listing the available ones.
    """
    _load_builtins()
    name = ref
    if ":" in ref:
        module, name = ref.split(":", 1)
    if module and name not in _REGISTRY:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--model: cannot import module {module!r} ({exc}); "
                              "check that the package is installed") from exc
    if name not in _REGISTRY:
        raise ConfigError(f"--model: unknown model {name!r}; available: "
                          f"{', '.join(sorted(_REGISTRY))} (or package.module:NAME)")
    return _REGISTRY[name]


def spec_for(detector: Detector) -> ModelSpec:
    """The registry entry of ``detector``'s class (checkpoints record its name and module)."""
    for spec in _REGISTRY.values():
        if spec.detector_class is type(detector):
            return spec
    raise ConfigError(f"model class {type(detector).__name__} is not registered; call "
                      "trainer.registry.register_model(name, cls) first")


def make_config(spec: ModelSpec, values: dict[str, Any]) -> ModelConfig:
    """Build and validate ``spec``'s config dataclass from plain values (e.g. model.json)."""
    cls = spec.config_class
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"model config: unknown field(s) {unknown} for model {spec.name!r}; "
                          f"known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        default = fields[key].default
        kwargs[key] = tuple(value) if isinstance(value, list) and isinstance(default, tuple) else value
    config = cls(**kwargs)
    config.validate()
    return config


def config_dict(config: ModelConfig) -> dict[str, Any]:
    """JSON-able dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
