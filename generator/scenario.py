"""Scenarios: a declarative parameter space (YAML) plus a scene builder.

Every parameter declares its type, range or choices, default, scope (one value per image or
per object) and the observable conditions it controls. The evaluator slices on those
conditions and maps weak slices back to parameters through the same declarations; the
policy moves the parameters' distributions (see :mod:`generator.params`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from generator.assets import AssetSpec, LoadedMesh, asset_digest, check_assets
from generator.errors import ConfigError, is_number
from generator.fingerprint import json_sha256
from generator.validation import load_yaml_or_json, parse_model

BUILTIN_DIR = Path(__file__).parent / "scenarios"
Scalar = str | int | float | bool


class ParamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical", "bool"]
    range: tuple[float, float] | None = None
    choices: list[Scalar] | None = None
    default: Scalar
    scope: Literal["image", "object"] = "image"
    conditions: list[str] = Field(default_factory=list)
    unit: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type in ("float", "int"):
            if self.range is None:
                raise ValueError(f"a {self.type} parameter needs `range: [low, high]`")
            lo, hi = self.range
            if not lo <= hi:
                raise ValueError(f"`low <= high` must hold in range [{lo}, {hi}]")
            if not is_number(self.default):
                raise ValueError(f"default must be a number inside [{lo}, {hi}]")
            if not lo <= float(self.default) <= hi:
                raise ValueError(f"default {self.default} must lie inside range [{lo}, {hi}]")
        elif self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            if self.default not in self.choices:
                raise ValueError(f"default {self.default!r} must be one of the choices {self.choices}")
        else:
            self.choices = [False, True]
            if not isinstance(self.default, bool):
                raise ValueError("a bool parameter needs default true or false")
        return self

    @property
    def is_numeric(self) -> bool:
        return self.type in ("float", "int")


class ConditionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    column: str  # column of conditions.parquet / the evaluator's condition table
    level: Literal["image", "object"] = "object"
    bins: list[float] | None = None  # explicit edges; else `quantiles` equal-count bins
    quantiles: int = Field(default=4, ge=2, le=20)


class ImageSize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(default=128, ge=16, le=4096)
    height: int = Field(default=128, ge=16, le=4096)


class ScenarioSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    version: int = Field(ge=1)
    description: str = ""
    classes: list[str] = Field(min_length=1)
    builder: str  # "package.module:function" or "file.py:function" relative to the YAML
    image: ImageSize = Field(default_factory=ImageSize)
    count_param: str | None = None  # image-level int parameter giving the object count
    parameters: dict[str, ParamSpec] = Field(min_length=1)
    conditions: dict[str, ConditionSpec] = Field(default_factory=dict)
    assets: dict[str, AssetSpec] | None = None  # class -> mesh file/folder (generator/assets.py)

    @model_validator(mode="after")
    def _check(self) -> ScenarioSpec:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("class names must be unique")
        for pname, p in self.parameters.items():
            for c in p.conditions:
                if c not in self.conditions:
                    raise ValueError(f"parameter {pname!r} names condition {c!r}, which `conditions` does not declare")
        if self.count_param is not None:
            cp = self.parameters.get(self.count_param)
            if cp is None or cp.type != "int" or cp.scope != "image":
                raise ValueError(f"count_param {self.count_param!r} must name an image-scope int parameter")
        if self.assets is not None:
            for cls in self.assets:
                if cls not in self.classes:
                    raise ValueError(f"assets.{cls}: is not one of the classes {self.classes}")
            missing = [c for c in self.classes if c not in self.assets]
            if missing:
                raise ValueError(f"assets: every class needs an asset; add one for {missing[0]!r}")
        return self


class Scenario:
    """A validated spec plus where it came from (for builder paths and hashing)."""

    def __init__(self, spec: ScenarioSpec, source: Path) -> None:
        self.spec = spec
        self.source = source
        self._meshes: dict[str, list[LoadedMesh]] | None = None
        self._asset_digest: dict[str, str] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def classes(self) -> list[str]:
        return self.spec.classes

    @property
    def parameters(self) -> dict[str, ParamSpec]:
        return self.spec.parameters

    def spec_dict(self) -> dict[str, Any]:
        # no `assets` key when none are declared: the specs (and fingerprints) of scenarios
        # written before assets existed stay exactly as they were
        return self.spec.model_dump(mode="json", exclude={"assets"} if self.spec.assets is None else None)

    def asset_digest(self) -> dict[str, str]:
        """sha256 per asset file (empty without assets): in the shard fingerprint. Hashed once
        per instance, like :meth:`meshes` loads once: every job's fingerprint and manifest asks."""
        if self._asset_digest is None:
            self._asset_digest = asset_digest(self.spec, self.source.parent) if self.spec.assets else {}
        return self._asset_digest

    def spec_hash(self) -> str:
        return json_sha256(self.spec_dict())

    def parameters_for_condition(self, condition: str) -> list[str]:
        return [n for n, p in self.parameters.items() if condition in p.conditions]

    def builder(self) -> Callable[..., Any]:
        mod_name, _, func = self.spec.builder.partition(":")
        if not func:
            raise ConfigError(
                f"scenario {self.name}: builder: must look like 'module:function', but got {self.spec.builder!r}"
            )
        if mod_name.endswith(".py"):
            path = (self.source.parent / mod_name).resolve()
            spec = importlib.util.spec_from_file_location(f"synthloop_user_{self.name}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise ConfigError(f"scenario {self.name}: builder file {str(path)!r} does not exist")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            try:
                module = importlib.import_module(mod_name)
            except ImportError as exc:
                raise ConfigError(
                    f"scenario {self.name}: builder module {mod_name!r} cannot be imported: {exc}"
                ) from exc
        fn = getattr(module, func, None)
        if not callable(fn):
            raise ConfigError(f"scenario {self.name}: builder {self.spec.builder!r} names no function")
        if getattr(fn, "needs_scenario", False):  # e.g. generator.scenes.assets:build reads `assets:`
            return functools.partial(fn, scenario=self)
        return fn

    def meshes(self) -> dict[str, list[LoadedMesh]]:
        """The loaded, checked meshes of the `assets:` section per class (once per instance)."""
        if self._meshes is None:
            self._meshes = check_assets(self.spec, self.source.parent, self.source.name)
        return self._meshes


def available() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a built-in scenario by name, or a user scenario from a YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        path = p
    elif str(name_or_path) in available():
        path = BUILTIN_DIR / f"{name_or_path}.yaml"
    else:
        raise ConfigError(
            f"--scenario: unknown scenario {str(name_or_path)!r}; available: {', '.join(available())} "
            "(or pass the path of a scenario YAML)"
        )
    data = load_yaml_or_json(path, "scenario")
    spec = parse_model(ScenarioSpec, data, f"scenario {path.name}")
    scenario = Scenario(spec, path.resolve())
    if spec.assets:
        scenario.meshes()  # every mesh rule, checked before any work
    return scenario
