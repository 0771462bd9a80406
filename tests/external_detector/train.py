"""Train GridNet from a synthloop train request (docs/trainer.md, "Your own model in the loop").

    python tests/external_detector/train.py REQUEST.json

Reads the shards' annotations.json, samples images by shard weight, continues from the
request's ``init`` model when given, writes ``gridnet.pt`` + ``gridnet.json`` into ``out``.
Test hook: with EXTDET_FAIL_AT_ITERATION=k it prints a few lines and exits 3 at iteration k
(after writing a partial file, which the loop must never publish).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import gridnet
import numpy as np
import torch


def main() -> int:
    req = gridnet.read_request(sys.argv)
    out = Path(req["out"])
    out.mkdir(parents=True, exist_ok=True)
    fail_at = os.environ.get("EXTDET_FAIL_AT_ITERATION")
    if fail_at is not None and int(fail_at) == req["iteration"]:
        (out / "partial.bin").write_bytes(b"half a model")
        for i in range(12):
            print(f"gridnet: loading batch {i}", flush=True)
        print("gridnet: CUDA out of memory (simulated)", file=sys.stderr)
        return 3
    torch.manual_seed(req["seed"])
    rng = np.random.default_rng(req["seed"])
    if req.get("num_threads"):
        torch.set_num_threads(int(req["num_threads"]))
    classes = list(req["classes"])
    samples, weights = [], []
    for s in req["shards"]:
        coco = json.loads(Path(s["annotations"]).read_text(encoding="utf-8"))
        cat_index = {c["id"]: classes.index(c["name"]) for c in coco["categories"] if c["name"] in classes}
        boxes: dict[int, list[tuple[list[float], int]]] = {img["id"]: [] for img in coco["images"]}
        for a in coco["annotations"]:
            if a["category_id"] in cat_index:
                boxes[a["image_id"]].append((a["bbox"], cat_index[a["category_id"]]))
        for img in coco["images"]:
            samples.append((Path(s["path"]) / img["file_name"], boxes[img["id"]]))
            weights.append(float(s["weight"]))
    p = np.asarray(weights) / sum(weights)
    model = gridnet.GridNet(len(classes))
    if req.get("init"):
        model, meta = gridnet.load(Path(req["init"]))
        assert meta["classes"] == classes, "init model has other classes"
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=float(req["lr"]))
    for step in range(int(req["steps"])):
        batch = rng.choice(len(samples), size=int(req["batch_size"]), p=p)
        xs, ts = [], []
        for b in batch:
            path, bxs = samples[b]
            x, w, h = gridnet.load_image(path)
            xs.append(x)
            ts.append(gridnet.targets(bxs, w, h, len(classes)))
        loss = gridnet.loss(model(torch.stack(xs)), torch.stack(ts))
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step} loss {loss.item():.4f}")
    gridnet.save(model, out, classes, int(req["steps"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
