"""Every loop setting is checked before anything is written (issue #15 item 8): a bad image size,
device or scenario is one line and exit 2 from `synthloop run`, with an empty work directory
(no MLflow run, no params.yaml, no shard)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from flows.orchestration.settings import LoopSettings
from generator.errors import ConfigError


def run_cli(tmp_path: Path, *sets: str) -> list[str]:
    return ["run", "--workdir", str(tmp_path / "work"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--iterations", "1", *[a for s in sets for a in ("--set", s)], "--set", "backend=fake",
            "--set", "render_shards=1"]


@pytest.mark.parametrize(("value", "expected"), [
    ("width=8", "error: loop.width: must lie in [16, 4096] pixels (the renderer's limits), but got 8"),
    ("height=5000", "error: loop.height: must lie in [16, 4096] pixels"),
    ("device=banana", "error: loop.device: must be one of auto, cpu, cuda, but got 'banana'"),
    ("scenario=nosuch", "error: loop.scenario: must be a built-in scenario or a scenario YAML path, but got 'nosuch'"),
    ("scenario=missing.yaml", "error: loop.scenario: must be a built-in scenario"),
    ("real_sizes={real-train: 0, real-val: 5, real-test: 5}", "error: loop.real_sizes: must map each of real-train"),
    ("real_sizes={real-train: 5}", "error: loop.real_sizes: must map each of real-train"),
])
def test_run_refuses_a_bad_setting_before_writing_anything(value: str, expected: str, tmp_path: Path,
                                                           capsys) -> None:
    rc = main(run_cli(tmp_path, value))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists()


def test_loop_settings_refuse_cuda_without_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^loop\.device: must be a device torch can use, but torch sees no CUDA"):
        LoopSettings.build({"workdir": str(tmp_path / "w"), "device": "cuda"}).loop_config()
    assert not (tmp_path / "w").exists()

