"""Model checkpoints: a directory written atomically, readable without the training code.

::

    model/
      model.pt     torch.save({"format", "model": state dict, "optimizer": state dict,
                               "rng": {"numpy": bit-generator state, "torch": generator state}})
      model.json   format, model name + module, config dataclass, classes, scenario, training
                   data (path, kind, fingerprint, weight, counts), strategy, train config,
                   steps, images seen, final loss, seed, torch/synthloop versions, init parent,
                   weights_sha256 and a fingerprint of all training inputs

``model.json`` holds no timings, so the same seed, data and code give the same file.

A checkpoint is data and may come from anywhere: loading one never imports the module its
``model.json`` names unless the caller trusts it (``trust_module=True``, or the environment
variable ``SYNTHLOOP_TRUST_MODEL_MODULE=1``). Otherwise only models registered in this process
load (the built-ins, or a plugin the caller imported first).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from generator import atomic
from generator.errors import ConfigError
from generator.shard import sha256_file
from trainer.detector import Detector
from trainer.registry import ModelSpec, get_model, make_config, registered

FORMAT = "synthloop-model/1"
TRUST_ENV = "SYNTHLOOP_TRUST_MODEL_MODULE"  # "1": checkpoints may import the module they name


def save_checkpoint(out: Path, detector: Detector, optimizer: torch.optim.Optimizer,
                    rng: dict[str, Any], info: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Write ``out/`` atomically (nothing appears unless both files are complete); return the
    ``model.json`` content."""
    state = {k: v.detach().cpu() for k, v in detector.module.state_dict().items()}
    payload = {"format": FORMAT, "model": state, "optimizer": _cpu(optimizer.state_dict()),
               "rng": rng}
    with atomic.atomic_dir(out, overwrite) as tmp:
        _save(payload, tmp / "model.pt")
        meta = {"format": FORMAT, **info, "weights_sha256": sha256_file(tmp / "model.pt")}
        atomic.write_json(tmp / "model.json", meta)
    return meta


def _save(payload: dict[str, Any], path: Path) -> None:
    """``torch.save``, with its failed write (a RuntimeError from the zip writer, e.g. on a full
    disk) raised as the OSError it is, so I/O retries and the CLI's one-line error see it."""
    try:
        torch.save(payload, path)
    except RuntimeError as exc:
        text = str(exc).strip()
        if "write" not in text.lower():
            raise
        first = next((line for line in text.splitlines() if "write" in line.lower()), text)[:200]
        import errno
        import shutil

        full = shutil.disk_usage(path.parent).free < 1 << 20
        raise OSError(errno.ENOSPC if full else errno.EIO,
                      f"writing the checkpoint failed ({first})", str(path)) from exc


def export_weights(src: str | Path, out: Path) -> dict[str, Any]:
    """Copy checkpoint ``src`` into the existing directory ``out`` without its optimizer moments
    (about a third of the size: what a shipped base model needs). ``model.json`` keeps every
    field but ``weights_sha256`` (the new file's) and notes ``exported_from`` (the old sha256).
    Continuing from an export starts fresh AdamW moments, as from any model without them."""
    src = Path(src)
    meta = read_model_json(src)
    payload = torch.load(src / "model.pt", map_location="cpu", weights_only=True)
    slim = {k: v for k, v in payload.items() if k != "optimizer"}
    _save(slim, out / "model.pt")
    new = {**meta, "exported_from": meta.get("weights_sha256"), "weights_sha256": sha256_file(out / "model.pt")}
    atomic.write_json(out / "model.json", new)
    return new


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


def read_model_json(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata; ConfigError when ``path`` is not a synthloop model."""
    path = Path(path)
    meta_path = path / "model.json"
    if not path.is_dir():
        raise ConfigError(f"model: directory {str(path)!r} does not exist; pass a directory "
                          "written by `synthloop train --out`")
    if not meta_path.is_file() or not (path / "model.pt").is_file():
        raise ConfigError(f"model: {str(path)!r} lacks model.json or model.pt, so it is not a "
                          "finished checkpoint; train it again")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model: cannot read {meta_path} ({exc}); train it again") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ConfigError(f"model: {meta_path} format must be {FORMAT!r}, but got {found!r}")
    return meta


def _trusted(trust_module: bool | None) -> bool:
    return os.environ.get(TRUST_ENV, "") == "1" if trust_module is None else trust_module


def model_spec(meta: dict[str, Any], meta_path: Path, trust_module: bool | None = None) -> ModelSpec:
    """The registered model ``model.json`` names. Its ``model_module`` (or a ``module:NAME``
    model) is imported only when trusted (module docstring); otherwise a ConfigError says how."""
    name, module = meta.get("model"), meta.get("model_module")
    if not isinstance(name, str) or not name or not (module is None or isinstance(module, str)):
        raise ConfigError(f"model: {meta_path} `model` must be a registered model name, but got {name!r}; "
                          "train it again")
    spec = registered(name)
    if spec is not None:
        return spec
    if not _trusted(trust_module):
        where = name.split(":", 1)[0] if ":" in name else module
        raise ConfigError(f"model: {meta_path} names model {name!r} (module {where!r}), which is not registered, "
                          "and a checkpoint may not choose code to import; import that module yourself first, "
                          f"or set {TRUST_ENV}=1 (trust_module=True) if you trust this checkpoint")
    return get_model(name, module)


def load_checkpoint(path: str | Path, trust_module: bool | None = None
                    ) -> tuple[Detector, dict[str, Any], dict[str, Any]]:
    """Rebuild the detector on the CPU: ``(detector, payload, model.json)``. ``trust_module``
    (default: ``SYNTHLOOP_TRUST_MODEL_MODULE=1``) lets ``model.json`` import its model's module."""
    path = Path(path)
    meta = read_model_json(path)
    spec = model_spec(meta, path / "model.json", trust_module)
    try:
        config = make_config(spec, dict(meta["config"]))
        detector = spec.detector_class(config, list(meta["classes"]), str(meta.get("scenario", "")))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"model: {path / 'model.json'} is malformed ({exc!r}); train it again") from exc
    try:
        payload = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        detector.module.load_state_dict(payload["model"])
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise ConfigError(f"model: cannot load weights from {path / 'model.pt'} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "train it again") from exc
    return detector, payload, meta
