"""Checks of a loop's settings that need a library (scenario registry, renderer limits, torch):
run by :meth:`flows.loop.state.LoopConfig.validate`, so ``synthloop run`` refuses a bad
``scenario``, image size, ``device`` or ``real_sizes`` in one line *before* anything is written (no MLflow
run, no ``params.yaml``, no shard).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from generator.errors import ConfigError, field_error, is_int

DEVICES = ("auto", "cpu", "cuda")


def check_scenario(cfg: Any) -> Any:
    """The loop's scenario (a ConfigError naming ``loop.scenario`` when there is none)."""
    from generator.errors import ConfigError
    from generator.scenario import available, load_scenario

    try:
        return load_scenario(cfg.scenario)
    except ConfigError as exc:
        raise field_error("loop.scenario", "must be a built-in scenario or a scenario YAML path", cfg.scenario,
                          f"available: {', '.join(available())} ({str(exc).partition(': ')[2]})") from None


def check_image_size(cfg: Any, scenario: Any) -> None:
    """``width`` and ``height`` (default: the scenario's) within what the renderer accepts."""
    from generator.pipeline import IMAGE_SIZE_RANGE

    lo, hi = IMAGE_SIZE_RANGE
    for name, given, default in (("width", cfg.width, scenario.spec.image.width),
                                 ("height", cfg.height, scenario.spec.image.height)):
        value = default if given is None else given
        if not lo <= value <= hi:
            raise field_error(f"loop.{name}", f"must lie in [{lo}, {hi}] pixels (the renderer's limits)", value,
                              f"drop it to use scenario {cfg.scenario!r}'s {default}")


def check_device(device: Any) -> None:
    """``device`` is one of :data:`DEVICES`, and ``cuda`` only where torch sees a GPU."""
    if device not in DEVICES:
        raise field_error("loop.device", f"must be one of {', '.join(DEVICES)}", device)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise field_error("loop.device", "must be a device torch can use, but torch sees no CUDA device",
                              device, "use device=auto or cpu")


def check_real_sizes(sizes: Any) -> None:
    """``real_sizes`` (None: the generator's) maps every real split to a digit count >= 1; the
    total against the bundled digits is checked when the real set is built."""
    from generator.real.splits import REAL_SPLITS

    if sizes is None:
        return
    ok = (isinstance(sizes, dict) and set(sizes) == set(REAL_SPLITS)
          and all(is_int(n) and n >= 1 for n in sizes.values()))
    if not ok:
        raise field_error("loop.real_sizes", f"must map each of {', '.join(REAL_SPLITS)} to an integer >= 1",
                          sizes, "e.g. {real-train: 1000, real-val: 300, real-test: 300}, or drop it")


def check_runnable(cfg: Any) -> None:
    """Every check above, cheapest first."""
    check_device(cfg.device)
    check_real_sizes(cfg.real_sizes)
    check_image_size(cfg, check_scenario(cfg))


def check_init_model(path: Any, scenario: str) -> dict[str, Any]:
    """Refuse an init model that does not load or was trained for another scenario or class
    list (one ConfigError line naming ``loop.init_model``); return its identity
    ``{"path", "weights_sha256", "fingerprint"}``."""
    from generator.scenario import load_scenario
    from generator.shard import sha256_file
    from trainer.checkpoint import load_checkpoint

    if not isinstance(path, str) or not path:
        raise field_error("loop.init_model", "must be a model directory path or null", path)
    fix = "pass a directory written by `synthloop train` (model.json + model.pt) or drop init_model"
    try:
        detector, _, meta = load_checkpoint(path)
        sha = sha256_file(Path(path) / "model.pt")
    except (ConfigError, OSError) as exc:
        raise ConfigError(f"loop.init_model: {path!r} does not load ({exc}); {fix}") from None
    if sha != meta.get("weights_sha256"):
        raise ConfigError(f"loop.init_model: {path!r} model.pt has sha256 {sha[:12]}…, but its model.json "
                          f"records {str(meta.get('weights_sha256'))[:12]}…; {fix}")
    sc = load_scenario(scenario)
    if meta.get("scenario") not in (None, "", sc.name):
        raise field_error("loop.init_model", f"must be a model of the loop's scenario {sc.name!r}",
                          f"{path} (scenario {meta.get('scenario')!r})", "train one for this scenario")
    if list(detector.classes) != list(sc.classes):
        raise field_error("loop.init_model", f"must have the scenario's classes {sc.classes}",
                          f"{path} (classes {detector.classes})", "train one for this scenario")
    return {"path": str(Path(path).resolve()), "weights_sha256": sha, "fingerprint": meta.get("fingerprint")}


def check_resumed_init(recorded: dict[str, Any] | None, cfg: Any) -> None:
    """A resumed warm-started loop must start from the same weights it recorded."""
    from generator.shard import sha256_file

    if recorded is None or cfg.init_model is None:
        return
    try:
        if cfg.external:  # your detector's directory: its content hash (flows/loop/external.py)
            from flows.loop.external import dir_sha256

            sha = dir_sha256(cfg.init_model)
        else:
            sha = sha256_file(Path(cfg.init_model) / "model.pt")
    except OSError:
        sha = "unreadable"
    if sha != recorded.get("weights_sha256"):
        raise ConfigError(f"loop.init_model: the work directory {cfg.workdir!r} started from weights sha256 "
                          f"{str(recorded.get('weights_sha256'))[:12]}…, but {cfg.init_model!r} now has "
                          f"{sha[:12]}…; restore that model or choose another workdir")
