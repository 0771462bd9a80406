"""The closed-loop flow's one parameter: :class:`LoopSettings` (a pydantic model).

Every field of :class:`flows.loop.state.LoopConfig` (same names, types and defaults: that
dataclass stays the single source of truth and the model is built from it), plus what only
the product layer needs: where MLflow tracks (``tracking_uri``, ``experiment``,
``model_name``) and ``add_iterations`` (grow the loop by N iterations per run, for
schedules). The production window (``production``) is a loop field. JSON-friendly, so a
Prefect deployment takes it as a parameter and the Prefect UI renders a form for it.

    settings = LoopSettings.from_file("loop.yaml", iterations=3)   # file + overrides
    settings.loop_config()  # -> LoopConfig, checked field by field

Unknown keys are refused by name (``extra="forbid"``); every value error is one line naming
the field. ``loop_config()`` checks everything before anything is written, including what needs
a library (:mod:`flows.loop.checks`): the scenario exists, ``width``/``height`` (or the
scenario's) lie in the renderer's [16, 4096], ``device`` is auto/cpu/cuda and usable. A
non-UTF-8 ``--config`` file or a ``--set`` value that is not YAML is one line too.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from flows.loop.state import LoopConfig
from generator.errors import ConfigError, field_error
from generator.validation import first_error_line, load_yaml_or_json

DATA_DIR = Path("runs")  # the project's data directory (relative to the working directory)
DEFAULT_WORKDIR = str(DATA_DIR / "loop")
UNATTENDED_WAIT_S = 3600.0  # scheduled and monitor-triggered runs wait this long for a busy loop


def settings_data(path: str | Path | None, overrides: dict[str, Any], what: str) -> dict[str, Any]:
    """A YAML mapping file's settings (optional) updated with the ``overrides`` that are not None;
    ``what`` names the settings in errors ("loop", "monitor")."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = load_yaml_or_json(path, "--config")
        if not isinstance(loaded, dict):
            raise field_error("--config", f"must hold a mapping of {what} settings", type(loaded).__name__)
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return data


def set_value(key: str, text: str) -> Any:
    """The value of one ``--set KEY=VALUE``, parsed as YAML; one ConfigError line when it is not."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise field_error(f"--set {key}", f"value must parse as YAML ({exc.__class__.__name__})", text,
                          "quote it or fix the brackets, e.g. --set 'drift_conditions=[brightness]'") from None


def settings_error(exc: ValidationError, what: str) -> ConfigError:
    """A pydantic validation error as one ConfigError line naming ``<what>.<field>``."""
    return ConfigError(first_error_line(exc, what, sep=".", missing_fix="e.g. --set {field}=..."))


class FileSettings(BaseModel):
    """Settings read from a YAML mapping file plus overrides; errors name ``<KIND>.<field>``."""

    model_config = ConfigDict(extra="forbid")
    KIND: ClassVar[str] = "settings"  # "loop", "monitor": the prefix of error messages

    @classmethod
    def build(cls, data: dict[str, Any]) -> Self:
        """Validate ``data``; a bad, missing or unknown key is one ConfigError line naming it."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise settings_error(exc, cls.KIND) from None

    @classmethod
    def from_file(cls, path: str | Path | None = None, **overrides: Any) -> Self:
        """Settings from a YAML/JSON mapping file (optional) with ``overrides`` (None = not given)."""
        return cls.build(settings_data(path, overrides, cls.KIND))


class _Product(FileSettings):
    KIND: ClassVar[str] = "loop"

    tracking_uri: str | None = None  # default: sqlite:///<DATA_DIR>/mlflow.db
    experiment: str | None = None  # default: synthloop/<loop id>
    model_name: str | None = None  # default: synthloop-<scenario>
    # > 0: run this many iterations more than the loop has completed (a scheduled deployment
    # grows its loop by this much each run); `iterations` is then ignored
    add_iterations: int = Field(default=0, ge=0)
    # another run holds the loop's work directory: wait this long for it, then fail (0: at once)
    wait_for_loop_s: float = Field(default=0.0, ge=0)
    # where the parallel steps (render tasks) run (flows/orchestration/executor.py, docs/orchestration.md "Scaling
    # out"): "process" (this machine's process pool) or "dask"; how the flow runs, not what the loop
    # computes, so not in history.json and free to change on a resume
    executor: str = "process"
    dask_address: str | None = None  # an existing scheduler (tcp://HOST:8786); None: a LocalCluster
    dask_workers: int | None = None  # the LocalCluster's worker processes (default min(render_shards, CPUs))
    dask_gpu: bool = False  # render tasks ask for the Dask resource GPU=1 (workers `--resources GPU=1`)
    # on Dask, a real split of more than this many images is predicted in chunks of this many
    # on the cluster (the same report; evaluator.run.evaluate_model)
    eval_chunk_images: int = 500


def _loop_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(LoopConfig)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(LoopConfig):
        default = DEFAULT_WORKDIR if f.name == "workdir" else f.default
        out[f.name] = (hints[f.name], default)
    return out


_Base: type[BaseModel] = create_model("_LoopSettingsBase", __base__=_Product, **_loop_fields())


class LoopSettings(_Base):  # type: ignore[misc, valid-type]
    """All settings of one closed loop (see :class:`flows.loop.state.LoopConfig` for the loop's)."""

    def loop_config(self) -> LoopConfig:
        """The library-level config, validated (raises ConfigError naming the field)."""
        from flows.orchestration.executor import check_settings

        check_settings(self.executor, self.dask_address, self.dask_workers, self.dask_gpu, self.eval_chunk_images)
        names = {f.name for f in dataclasses.fields(LoopConfig)}
        cfg = LoopConfig(**{k: v for k, v in self.model_dump().items() if k in names}).validate()
        from flows.orchestration.stores import check_loop_stores

        check_loop_stores(self.tracking_uri, cfg.study)  # a database server: reachable, before anything is written
        return cfg
