"""Write GridNet's detections on a synthloop predict request as a COCO results list.

    python tests/external_detector/predict.py REQUEST.json

Output (the request's ``out``): ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``
with the request's image ids and category ids.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gridnet
import torch


def main() -> int:
    req = gridnet.read_request(sys.argv)
    model, meta = gridnet.load(Path(req["model"]))
    cat_id = {c["name"]: c["id"] for c in req["categories"]}
    results = []
    with torch.no_grad():
        for img in req["images"]:
            x, w, h = gridnet.load_image(img["path"])
            for d in gridnet.decode(model(x[None])[0], w, h, float(req["score_threshold"])):
                results.append({"image_id": img["id"], "category_id": cat_id[meta["classes"][d["category_index"]]],
                                "bbox": [round(v, 2) for v in d["bbox"]], "score": round(d["score"], 5)})
    Path(req["out"]).write_text(json.dumps(results) + "\n", encoding="utf-8")
    print(f"gridnet: {len(results)} detections on {len(req['images'])} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
