"""Each iteration's checkpoint as an MLflow 3 logged model, registered with a ``champion`` alias.

:func:`log_model` turns ``iter_k/model/`` (model.pt + model.json) into a pyfunc model — this
module is its ``loader_module``: :func:`_load_pyfunc` loads the checkpoint with
``trainer.api.load_detector`` on the CPU — and registers it as a new version of
``Tracking.model_name`` tagged ``synthloop.run_id`` / ``synthloop.iteration`` /
``synthloop.metric`` (+ ``synthloop.metric_name``, ``synthloop.model_id``). The alias
``champion`` moves to the new version only when its metric is a finite number strictly above
the current champion's (read from that version's ``synthloop.metric`` tag).

No global MLflow state is touched: the logged model is created with
``MlflowClient.create_logged_model``, saved with ``mlflow.pyfunc.save_model`` into a temporary
directory (pip requirements given explicitly, never inferred) and uploaded with
``log_model_artifacts``. The version's ``source`` is the logged model's artifact location,
not ``models:/<model_id>``: for that form MLflow's sqlite registry looks the model up through
``MlflowClient()`` with the *global* tracking URI (and would create ``./mlflow.db``).

Loading a version needs ``synthloop`` importable (the loader module and ``trainer``):
``mlflow.pyfunc.load_model(version.source).predict([rgb_uint8_image, ...])``.
"""

from __future__ import annotations

import importlib.metadata
import math
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flows.tracking.runs import TAG_ITERATION, Tracking, _set_tags, client
from generator.errors import ConfigError, field_error, is_number

CHAMPION = "champion"
TAG_RUN = "synthloop.run_id"
TAG_METRIC = "synthloop.metric"
TAG_METRIC_NAME = "synthloop.metric_name"
TAG_MODEL_ID = "synthloop.model_id"
REQUIREMENTS = ("mlflow", "torch", "numpy", "pillow", "pyyaml", "pydantic", "synthloop")


def _requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return out


class DetectorModel:
    """What ``mlflow.pyfunc.load_model`` wraps: ``predict(images, params)`` with RGB uint8
    arrays (or image file paths, or a DataFrame with a ``path`` column) returns, per image,
    ``[{"bbox": [x, y, w, h], "category_id": int, "score": float}, ...]``
    (``params={"score_threshold": 0.05}`` by default)."""

    def __init__(self, path: str) -> None:
        from trainer.api import load_detector

        self.detector = load_detector(path, device="cpu")

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[list[dict[str, Any]]]:
        import numpy as np
        from PIL import Image

        if hasattr(model_input, "columns"):
            model_input = list(model_input["path"])
        if isinstance(model_input, np.ndarray) and model_input.ndim == 3:
            model_input = [model_input]
        images = []
        for item in model_input:
            if isinstance(item, str | Path):
                with Image.open(item) as im:
                    item = np.asarray(im.convert("RGB"))
            images.append(np.asarray(item))
        threshold = float((params or {}).get("score_threshold", 0.05))
        return self.detector.predict(images, score_threshold=threshold)


def _load_pyfunc(data_path: str) -> DetectorModel:
    """pyfunc loader entry point (``loader_module: flows.tracking.model``)."""
    return DetectorModel(data_path)


def _finite(x: Any) -> bool:
    return is_number(x)


def _version_of_run(c: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    found = [mv for mv in c.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
             if mv.tags.get(TAG_RUN) == run_id]
    return min(found, key=lambda mv: int(mv.version)) if found else None


def _ready(m: Any) -> bool:
    return str(m.status) in ("READY", "LoggedModelStatus.READY")


def _model_of_run(c: MlflowClient, experiment: str, run_id: str, k: int) -> tuple[str, bool] | None:
    """``(model_id, ready)`` of this run's logged model of iteration ``k``, if there is one: a
    READY one (a crash before registering left it), else the oldest unfinished one (a process
    killed while uploading left it PENDING, or an upload failed): it is filled again and
    finalized rather than joined by a second ``detector-iter<k>``."""
    models = [m for m in c.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
              if m.tags.get(TAG_ITERATION) == str(k)]
    ready = [m for m in models if _ready(m)]
    if ready:
        return str(ready[0].model_id), True
    if models:
        return str(min(models, key=lambda m: m.creation_timestamp or 0).model_id), False
    return None


def _logged_model(c: MlflowClient, experiment: str, run_id: str, model_dir: Path, k: int) -> str:
    """The logged model of iteration ``k`` on ``run_id``: the READY one already there, else the
    unfinished one left by a killed upload (filled and finalized), else a new one."""
    found = _model_of_run(c, experiment, run_id, k)
    if found is not None and found[1]:
        return found[0]
    if found is not None:
        return _fill_logged_model(c, c.get_logged_model(found[0]), run_id, model_dir, k)
    return _new_logged_model(c, experiment, run_id, model_dir, k)


def _new_logged_model(c: MlflowClient, experiment: str, run_id: str, model_dir: Path, k: int) -> str:
    """Create, fill and finalize a logged model from the checkpoint directory."""
    lm = c.create_logged_model(experiment, name=f"detector-iter{k}", source_run_id=run_id,
                               tags={TAG_ITERATION: str(k), "synthloop.checkpoint": str(model_dir.resolve())},
                               model_type="synthloop-detector")
    return _fill_logged_model(c, lm, run_id, model_dir, k)


def _fill_logged_model(c: MlflowClient, lm: Any, run_id: str, model_dir: Path, k: int) -> str:
    """Save the checkpoint as a pyfunc model into ``lm``'s artifacts (again, for a model a
    killed upload left unfinished: files are overwritten), record it as the run's output at
    step ``k`` (once) and finalize it READY (FAILED on an error)."""
    import mlflow.pyfunc
    from mlflow.models import Model

    try:
        with tempfile.TemporaryDirectory(prefix="synthloop-model-") as tmp:
            local = Path(tmp) / "model"
            meta = Model(artifact_path=lm.artifact_location, model_uuid=lm.model_id, run_id=run_id,
                         model_id=lm.model_id)
            mlflow.pyfunc.save_model(str(local), loader_module=__name__, data_path=str(model_dir),
                                     pip_requirements=_requirements(), mlflow_model=meta,
                                     metadata={"synthloop_iteration": k})
            c.log_model_artifacts(lm.model_id, str(local))
        outputs = c.get_run(run_id).outputs
        if not any(o.model_id == lm.model_id for o in (outputs.model_outputs if outputs else [])):
            c.log_outputs(run_id, [LoggedModelOutput(lm.model_id, step=k)])
        c.finalize_logged_model(lm.model_id, "READY")
    except BaseException:
        c.finalize_logged_model(lm.model_id, "FAILED")
        raise
    return str(lm.model_id)


def _ensure_registered(c: MlflowClient, name: str) -> None:
    try:
        c.get_registered_model(name)
    except MlflowException:
        try:
            c.create_registered_model(name, description="synthloop detector, one version per loop iteration; "
                                                        "alias `champion` = best on the tracked metric")
        except MlflowException:  # created meanwhile by another worker
            c.get_registered_model(name)


def _champion(c: MlflowClient, name: str) -> ModelVersion | None:
    try:
        return c.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _promote(c: MlflowClient, name: str, mv: ModelVersion, metric: float | None, metric_name: str) -> bool:
    """Move ``champion`` to ``mv`` when ``metric`` strictly beats the champion's; True when
    ``mv`` is the champion afterwards."""
    current = _champion(c, name)
    if current is not None and str(current.version) == str(mv.version):
        return True
    if not _finite(metric):
        return False
    if current is not None:
        if current.tags.get(TAG_METRIC_NAME, metric_name) != metric_name:
            raise ConfigError(f"log_model.metric_name: champion v{current.version} of {name!r} was chosen on "
                              f"{current.tags.get(TAG_METRIC_NAME)!r}, but got {metric_name!r}; compare one "
                              "metric per registered model (or register under another model_name)")
        try:
            best = float(current.tags.get(TAG_METRIC, "nan"))
        except ValueError:
            best = math.nan
        if math.isfinite(best) and not float(metric) > best:  # type: ignore[arg-type]
            return False
    c.set_registered_model_alias(name, CHAMPION, mv.version)
    return True


def log_model(t: Tracking, run_id: str, model_dir: Path, k: int, metric: float | None, *,
              metric_name: str = "real_val_map50", external_sha256: str | None = None) -> dict[str, Any]:
    """Log ``model_dir`` as iteration ``k``'s logged model on run ``run_id``, register it as a
    version of ``t.model_name`` and move ``champion`` on a strict improvement of ``metric``.
    A second call for the same run returns the existing version (and re-checks the alias).

    Returns ``{"model_id", "version", "champion", "model_uri"}`` (``models:/<name>/<version>``).

    An external detector's model directory (``external_sha256``: its content hash) is logged by
    :func:`log_external_model` instead."""
    if external_sha256 is not None:
        return log_external_model(t, run_id, model_dir, external_sha256)
    model_dir = Path(model_dir)
    if not (model_dir / "model.pt").is_file() or not (model_dir / "model.json").is_file():
        raise field_error("log_model.model_dir", "must be a checkpoint directory with model.pt and model.json",
                          str(model_dir), "pass iter_k/model of a completed iteration")
    c = client(t.uri)
    _ensure_registered(c, t.model_name)
    mv = _version_of_run(c, t.model_name, run_id)
    if mv is None:
        experiment = c.get_run(run_id).info.experiment_id
        model_id = _logged_model(c, experiment, run_id, model_dir, k)
        tags = {TAG_RUN: run_id, TAG_ITERATION: str(k), TAG_MODEL_ID: model_id, TAG_METRIC_NAME: metric_name,
                TAG_METRIC: repr(float(metric)) if _finite(metric) else "none"}  # type: ignore[arg-type]
        mv = c.create_model_version(t.model_name, source=c.get_logged_model(model_id).artifact_location,
                                    run_id=run_id, tags=tags, model_id=model_id)
    champion = _promote(c, t.model_name, mv, metric, metric_name)
    return {"model_id": mv.tags.get(TAG_MODEL_ID), "version": str(mv.version), "champion": champion,
            "model_uri": f"models:/{t.model_name}/{mv.version}"}


EXTERNAL_ARTIFACTS = "external_model"
TAG_MODEL_SHA256 = "synthloop.model_sha256"


def log_external_model(t: Tracking, run_id: str, model_dir: Path, sha256: str) -> dict[str, Any]:
    """An external detector's model directory (flows/loop/external.py) as the run's artifacts under
    ``external_model/`` with its content hash in tag ``synthloop.model_sha256``; not a logged or
    registered model (MLflow could not load it: its code is not synthloop's), so ``champion``
    does not move. Idempotent (files already logged are skipped)."""
    c = client(t.uri)
    have = {f.path for f in c.list_artifacts(run_id, EXTERNAL_ARTIFACTS)}
    if not have:
        c.log_artifacts(run_id, str(model_dir), EXTERNAL_ARTIFACTS)
    _set_tags(c, run_id, {TAG_MODEL_SHA256: sha256, "synthloop.model_kind": "external"})
    return {"model_id": None, "version": None, "champion": False, "sha256": sha256,
            "model_uri": f"runs:/{run_id}/{EXTERNAL_ARTIFACTS}"}
