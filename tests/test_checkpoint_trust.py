"""A checkpoint is data, not code (issue #15 item 12): its ``model.json`` may not choose a
module to import unless the caller trusts it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from generator.errors import ConfigError
from trainer import api
from trainer.checkpoint import FORMAT, TRUST_ENV, load_checkpoint

SIDE_EFFECT = "synthloop_test_side_effect_15"


def checkpoint(root: Path, **meta: Any) -> Path:
    out = root / "model"
    out.mkdir()
    (out / "model.pt").write_bytes(b"")
    (out / "model.json").write_text(json.dumps({"format": FORMAT, "config": {}, "classes": ["a"], **meta}))
    return out


@pytest.fixture
def side_effect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path whose import writes a marker file (what a hostile plugin would do)."""
    marker = tmp_path / "imported"
    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    (pkg / f"{SIDE_EFFECT}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.delitem(sys.modules, SIDE_EFFECT, raising=False)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    return marker


@pytest.mark.parametrize("meta", [{"model": "evil", "model_module": SIDE_EFFECT},
                                  {"model": f"{SIDE_EFFECT}:evil"},
                                  {"model": "centernet-nope", "model_module": SIDE_EFFECT}])
def test_checkpoint_model_json_cannot_import_a_module(tmp_path: Path, side_effect: Path, meta: dict[str, Any]) -> None:
    path = checkpoint(tmp_path, **meta)
    with pytest.raises(ConfigError, match=r"which is not registered, and a checkpoint may not choose code to import"
                                          rf".*{TRUST_ENV}=1") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    assert not side_effect.exists() and SIDE_EFFECT not in sys.modules


def test_checkpoint_naming_os_is_refused_without_importing(tmp_path: Path, side_effect: Path) -> None:
    path = checkpoint(tmp_path, model="system", model_module="os")
    with pytest.raises(ConfigError, match=r"names model 'system' \(module 'os'\), which is not registered"):
        api.load_detector(path, device="cpu")


def test_trusted_checkpoint_may_import_its_module(tmp_path: Path, side_effect: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = checkpoint(tmp_path, model="evil", model_module=SIDE_EFFECT)
    with pytest.raises(ConfigError, match="unknown model 'evil'"):  # imported, but it registers nothing
        load_checkpoint(path, trust_module=True)
    assert side_effect.read_text() == "ran"
    side_effect.unlink()
    monkeypatch.delitem(sys.modules, SIDE_EFFECT)
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.raises(ConfigError, match="unknown model 'evil'"):
        load_checkpoint(path)
    assert side_effect.exists()

