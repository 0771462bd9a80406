"""Every shard file a consumer reads is verified against manifest.json (issue #15 item 3): an
edited ``annotations.json`` (or image, or ``conditions.parquet``) is one line naming the shard,
the file and the fix, and is never trained or evaluated on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from shardmaker import make_shard, read_json, rewrite_json

import evaluator.predict
from evaluator.testing import OracleDetector
from flows.cli import main
from generator.errors import DataError, ShardError
from generator.shard import Shard
from trainer import api


def edited(tmp_path: Path, name: str = "s") -> Path:
    """A finished shard whose annotations.json was edited afterwards (a box moved), manifest untouched."""
    shard = make_shard(tmp_path / name, n=4, seed=3)
    coco = read_json(shard, "annotations.json")
    coco["annotations"][0]["bbox"][0] += 5.0
    rewrite_json(shard, "annotations.json", coco, update_manifest=False)
    return shard


def test_trainer_refuses_an_edited_annotations_json(tmp_path: Path) -> None:
    shard = edited(tmp_path)
    with pytest.raises(ShardError) as err:
        api.train([shard], tmp_path / "m", steps=2, batch_size=2, input_size=64, device="cpu", num_threads=1)
    msg = str(err.value)
    assert "\n" not in msg and f"shard {str(shard)!r}: annotations.json does not match its sha256" in msg
    assert "re-render" in msg and f"synthloop validate {shard}" in msg
    assert not (tmp_path / "m").exists()


def test_train_cli_refuses_an_edited_annotations_json_in_one_line(tmp_path: Path, capsys) -> None:
    shard = edited(tmp_path)
    rc = main(["train", "--data", str(shard), "--out", str(tmp_path / "m"), "--steps", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "annotations.json does not match its sha256" in err
    assert not (tmp_path / "m").exists()


def test_evaluator_refuses_an_edited_annotations_json(tmp_path: Path, monkeypatch, capsys) -> None:
    shard = edited(tmp_path)
    monkeypatch.setattr(evaluator.predict, "load_detector", lambda p: OracleDetector(Shard(make_shard(
        tmp_path / "clean", n=4, seed=3))))
    (tmp_path / "model.pt").write_bytes(b"fake")
    rc = main(["evaluate", "--model", str(tmp_path / "model.pt"), "--data", str(shard), "--out",
               str(tmp_path / "out"), "--resamples", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "annotations.json does not match its sha256 in manifest.json" in err
    assert not (tmp_path / "out").exists()


def test_shard_reader_verifies_images_depth_and_conditions(tmp_path: Path) -> None:
    shard_dir = make_shard(tmp_path / "s", n=3, seed=1)
    shard = Shard(shard_dir)
    image = shard.coco["images"][1]
    assert shard.load_image(image).shape[2] == 3 and shard.load_depth(image) is not None
    assert len(shard.conditions()) > 0
    (shard_dir / image["file_name"]).write_bytes((shard_dir / shard.coco["images"][0]["file_name"]).read_bytes())
    with pytest.raises(ShardError, match=re.escape(f"{image['file_name']} does not match its sha256")):
        shard.load_image(image)
    (shard_dir / image["depth_file"]).unlink()
    with pytest.raises(ShardError, match=re.escape(f"cannot read {image['depth_file']}")):
        shard.load_depth(image)
    with open(shard_dir / "conditions.parquet", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ShardError, match=r"conditions\.parquet does not match its sha256"):
        shard.conditions()


def test_a_file_missing_from_the_manifest_is_refused(tmp_path: Path) -> None:
    shard_dir = make_shard(tmp_path / "s", n=2)
    manifest = read_json(shard_dir, "manifest.json")
    del manifest["files"]["annotations.json"]
    rewrite_json(shard_dir, "manifest.json", manifest)
    with pytest.raises(ShardError, match=r"annotations\.json must be listed with its sha256 in manifest\.json"):
        _ = Shard(shard_dir).coco
    with pytest.raises((ShardError, DataError)):
        api.train([shard_dir], tmp_path / "m", steps=1, batch_size=1, input_size=64, device="cpu", num_threads=1)


def test_shard_file_names_cannot_escape_the_shard(tmp_path: Path) -> None:
    """A crafted shard whose annotations.json (and manifest) name ../../secret is refused, not read
    or exported."""
    import hashlib

    shard_dir = make_shard(tmp_path / "s", n=2)
    secret = tmp_path / "secret.png"
    secret.write_bytes((shard_dir / "images" / "000000.png").read_bytes())
    coco = read_json(shard_dir, "annotations.json")
    coco["images"][0]["file_name"] = "../secret.png"
    rewrite_json(shard_dir, "annotations.json", coco)
    manifest = read_json(shard_dir, "manifest.json")
    manifest["files"]["../secret.png"] = hashlib.sha256(secret.read_bytes()).hexdigest()
    rewrite_json(shard_dir, "manifest.json", manifest)
    shard = Shard(shard_dir)
    with pytest.raises(ShardError, match=r"file '\.\./secret\.png' must lie inside the shard"):
        shard.load_image(shard.coco["images"][0])
    rc = main(["export", str(shard_dir), "--format", "yolo", "--out", str(tmp_path / "y")])
    assert rc == 2 and not (tmp_path / "y").exists()


def test_a_non_utf8_manifest_is_one_line(tmp_path: Path, capsys) -> None:
    shard_dir = make_shard(tmp_path / "s", n=2)
    (shard_dir / "manifest.json").write_bytes(b'{"format": "caf\xe9"}')
    with pytest.raises(ShardError, match=r"cannot read .*manifest\.json \(UnicodeDecodeError\)"):
        Shard(shard_dir)
    rc = main(["validate", str(shard_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "UnicodeDecodeError" in err
