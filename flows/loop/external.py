"""Your own detector in the loop: an external train command and predict command.

With ``LoopConfig.external_train`` and ``external_predict`` set, :func:`flows.loop.steps.train_step`
and :func:`flows.loop.steps.evaluate_step` (and the warm start's init evaluation) run these commands
instead of the built-in CenterNet; everything else (render, the evaluator, the policy, history,
MLflow) is unchanged. The contract (docs/trainer.md, "Your own model in the loop"):

- each command is an argv list or a string (split with :func:`shlex.split`), run in the loop's
  current directory with the request file's path appended as its last argument and in the
  environment variable ``SYNTHLOOP_REQUEST``;
- the request is a JSON object (:func:`train_request`, :func:`predict_request`); ``out`` is
  where the command writes: a directory (train: the model, any files) or a file (predict: a
  COCO results list ``[{image_id, category_id, bbox: [x, y, w, h], score}, ...]``);
- exit code 0 means success. stdout and stderr go to ``iter_k/external/<step>.log``; any other
  exit code is an :class:`ExternalCommandError` (one line: the setting, the command, the exit
  code, the log and its last lines), and nothing is published: the model directory appears
  (atomically) only when the command succeeded and wrote at least one file.

A model directory's identity is :func:`dir_sha256` (its files, sorted by relative path), which
history.json records; a resume keeps a model whose request and content hash are unchanged
(``iter_k/external/train.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generator import atomic
from generator.errors import SynthloopError, field_error

TRAIN_FORMAT = "synthloop-external-train/1"
PREDICT_FORMAT = "synthloop-external-predict/1"
ENV = "SYNTHLOOP_REQUEST"
DIR = "external"  # iter_k/external: requests, logs, the train record, the detections
TAIL_LINES = 10


class ExternalCommandError(SynthloopError):
    """An external train/predict command failed or wrote nothing (one line; exit 2 in the CLI)."""


def argv(field: str, value: Any) -> list[str]:
    """The command of setting ``field`` as an argv list (a string is shell-split)."""
    if isinstance(value, str):
        try:
            parts = shlex.split(value)
        except ValueError as exc:
            raise field_error(f"loop.{field}", f"must be a command line ({exc})", value,
                              'e.g. "python -m mypkg.train"') from None
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        parts = list(value)
    else:
        raise field_error(f"loop.{field}", "must be a command: a string or a list of strings", value,
                          'e.g. "python -m mypkg.train" or ["python", "-m", "mypkg.train"]')
    if not parts or not parts[0]:
        raise field_error(f"loop.{field}", "must name a command", value, 'e.g. "python -m mypkg.train"')
    return parts


def check_command(field: str, value: Any) -> list[str]:
    """Refuse a command whose program is not found on PATH or not executable (before anything
    is written); return its argv."""
    parts = argv(field, value)
    if shutil.which(parts[0]) is None:
        where = "is not an executable file" if os.sep in parts[0] else "is not found on PATH (or not executable)"
        raise field_error(f"loop.{field}", f"must name an executable program, but {parts[0]!r} {where}",
                          value, "install it, fix PATH, or give the program's full path")
    return parts


def check_settings(train: Any, predict: Any) -> None:
    """Both commands or neither (a loop trains and evaluates the same detector)."""
    if (train is None) != (predict is None):
        given, missing = ("external_train", "external_predict") if predict is None else \
            ("external_predict", "external_train")
        raise field_error(f"loop.{missing}", f"is required with {given} (the loop evaluates the model it trains)",
                          None, f"set both {given} and {missing}, or neither for the built-in detector")
    if train is not None:
        check_command("external_train", train)
        check_command("external_predict", predict)


def dir_sha256(path: str | Path) -> str:
    """Content hash of a model directory: sha256 over ``<relative posix path>\\0<file sha256>\\n``
    of every regular file, sorted by relative path (names and bytes; not times or modes)."""
    from generator.shard import sha256_file

    root = Path(path)
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()):
        h.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return h.hexdigest()


def has_files(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() for p in path.rglob("*"))


def check_model_dir(field: str, path: Any) -> str:
    """An existing external model directory (e.g. a warm start's ``init_model``): its hash."""
    if not isinstance(path, str) or not path:
        raise field_error(f"loop.{field}", "must be a model directory path or null", path)
    if not has_files(Path(path)):
        raise field_error(f"loop.{field}", "must be a directory holding your detector's model files", path,
                          "pass a directory your external_train command wrote, or drop it")
    return dir_sha256(path)


def _tail(log: Path, n: int = TAIL_LINES) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return "(no output)"
    lines = [ln for ln in lines if ln]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def run_command(field: str, command: Any, request: dict[str, Any], step_dir: Path, name: str) -> float:
    """Write ``step_dir/<name>.request.json`` and run ``command`` on it (output to
    ``step_dir/<name>.log``); raise :class:`ExternalCommandError` unless it exits 0.
    Returns the seconds it ran."""
    parts = argv(field, command)
    step_dir.mkdir(parents=True, exist_ok=True)
    req, log = step_dir / f"{name}.request.json", step_dir / f"{name}.log"
    atomic.write_json(req, request)
    cmd = [*parts, str(req.resolve())]
    t0 = time.perf_counter()
    try:
        with open(log, "wb") as out:
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, ENV: str(req.resolve())}, check=False).returncode
    except OSError as exc:
        raise ExternalCommandError(f"loop.{field}: command {shlex.join(parts)!r} could not start "
                                   f"({exc.strerror or exc}); check the setting") from None
    if rc != 0:
        raise ExternalCommandError(f"loop.{field}: command {shlex.join(parts)!r} exited with code {rc}; "
                                   f"output in {log}; last lines: {_tail(log)}")
    return time.perf_counter() - t0


def _shard_entry(path: Path, weight: float) -> dict[str, Any]:
    from generator.shard import Shard

    shard = Shard(path)
    return {"path": str(Path(path).resolve()), "weight": float(weight), "fingerprint": shard.fingerprint,
            "annotations": str((Path(path) / "annotations.json").resolve()),
            "images": len(shard.coco["images"])}


def train_request(data: Sequence[tuple[Path, float]], init: Path | None, out: Path, *, seed: int, steps: int,
                  batch_size: int, lr: float, device: str, num_threads: int | None, scenario: str,
                  classes: list[str], iteration: int, strategy: str = "synthetic-only",
                  real_ratio: float | None = None) -> dict[str, Any]:
    """The train command's request (``out`` is the directory it must fill)."""
    return {"format": TRAIN_FORMAT, "iteration": iteration, "scenario": scenario, "classes": classes,
            "shards": [_shard_entry(p, w) for p, w in data], "strategy": strategy, "real_ratio": real_ratio,
            "init": None if init is None else str(Path(init).resolve()),
            "seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "device": device,
            "num_threads": num_threads, "out": str(Path(out).resolve())}


def train(cfg: Any, k: int, data: Sequence[tuple[Path, float]], init: Path | None, options: dict[str, Any],
          classes: list[str]) -> tuple[Path, str, float, bool]:
    """Run ``cfg.external_train`` for iteration ``k`` into ``iter_k/model`` (atomically);
    ``(model dir, its dir_sha256, seconds, reused)``. A model already there from the same
    request and init (and with its recorded hash) is kept."""
    step_dir, out = cfg.iter_dir(k) / DIR, cfg.iter_dir(k) / "model"
    request = train_request(data, init, out, seed=options["seed"], steps=options["steps"],
                            batch_size=options["batch_size"], lr=options["lr"], device=options["device"],
                            num_threads=options["num_threads"], scenario=cfg.scenario, classes=classes,
                            iteration=k, strategy=cfg.strategy, real_ratio=cfg.real_ratio)
    identity = {"request": {key: v for key, v in request.items() if key not in ("device", "num_threads")},
                "init_sha256": None if init is None else dir_sha256(init), "command": argv("external_train",
                                                                                         cfg.external_train)}
    record_path = step_dir / "train.json"
    try:
        old = json.loads(record_path.read_text(encoding="utf-8"))
        if has_files(out) and old.get("identity") == identity and dir_sha256(out) == old.get("sha256"):
            return out, str(old["sha256"]), 0.0, True
    except (OSError, ValueError, AttributeError):
        pass
    record_path.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{atomic.TMP_PREFIX}model-", dir=cfg.iter_dir(k)))
    try:
        seconds = run_command("external_train", cfg.external_train, {**request, "out": str(tmp.resolve())},
                              step_dir, "train")
        if not has_files(tmp):
            raise ExternalCommandError(f"loop.external_train: command "
                                       f"{shlex.join(argv('external_train', cfg.external_train))!r} exited 0 "
                                       f"but wrote no file in the request's out directory; output in "
                                       f"{step_dir / 'train.log'}; last lines: {_tail(step_dir / 'train.log')}")
        sha = dir_sha256(tmp)
        if out.exists():
            trash = cfg.iter_dir(k) / f"{atomic.TMP_PREFIX}old-model-{os.getpid()}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic.write_json(record_path, {"identity": identity, "sha256": sha, "seconds": round(seconds, 3)})
    return out, sha, seconds, False


def predict_request(model: Path, shard_dir: Path, out: Path, *, score_threshold: float, scenario: str,
                    classes: list[str], categories: list[dict[str, Any]]) -> dict[str, Any]:
    """The predict command's request: every image of the shard with its id and absolute path."""
    from generator.shard import Shard

    shard = Shard(shard_dir)
    root = Path(shard_dir).resolve()
    return {"format": PREDICT_FORMAT, "model": str(Path(model).resolve()), "shard": str(root),
            "annotations": str(root / "annotations.json"), "scenario": scenario, "classes": classes,
            "categories": categories, "score_threshold": score_threshold,
            "images": [{"id": int(img["id"]), "path": str(root / str(img["file_name"])),
                        "width": img.get("width"), "height": img.get("height")} for img in shard.coco["images"]],
            "out": str(Path(out).resolve())}


def predict(cfg: Any, model: Path, shard_dir: Path, step_dir: Path, name: str) -> Path:
    """Run ``cfg.external_predict`` with ``model`` on ``shard_dir``; the detections file
    ``step_dir/<name>.json`` (written only when the command succeeded and wrote it)."""
    from evaluator.predict import PREDICT_THRESHOLD
    from generator.shard import Shard

    shard = Shard(shard_dir)
    cats = [{"id": int(c["id"]), "name": c.get("name")} for c in shard.coco["categories"]]
    classes = [str(c["name"]) for c in sorted(cats, key=lambda c: c["id"])]
    final = step_dir / f"{name}.json"
    step_dir.mkdir(parents=True, exist_ok=True)
    tmp = step_dir / f"{atomic.TMP_PREFIX}{name}-{os.getpid()}.json"
    tmp.unlink(missing_ok=True)
    final.unlink(missing_ok=True)
    request = predict_request(model, shard_dir, tmp, score_threshold=PREDICT_THRESHOLD,
                              scenario=cfg.scenario, classes=classes, categories=cats)
    try:
        run_command("external_predict", cfg.external_predict, request, step_dir, name)
        if not tmp.is_file():
            raise ExternalCommandError(f"loop.external_predict: command "
                                       f"{shlex.join(argv('external_predict', cfg.external_predict))!r} exited 0 "
                                       f"but wrote no detections file at the request's out; output in "
                                       f"{step_dir / (name + '.log')}; last lines: {_tail(step_dir / (name + '.log'))}")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def check_init(cfg: Any) -> None:
    """A warm start from an external model: a non-empty directory (hashed, not loaded)."""
    if cfg.init_model is not None:
        check_model_dir("init_model", cfg.init_model)
