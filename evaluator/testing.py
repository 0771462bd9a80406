"""Stand-in detectors for tests and demos: no training, exact control over the failures.

:class:`OracleDetector` recognises a shard's images by their pixels and answers with their true
boxes, except the objects a ``miss`` rule drops; it can also add false positives. That plants a
known failure mode (e.g. "misses objects under 10 px") for the evaluator to find. Images with
identical pixels are answered in shard order (so run it over the shard in order, as
:func:`evaluator.predict.predict_shard` does)::

    det = OracleDetector(shard, miss=lambda ann: ann["area"] < 100)
    monkeypatch.setattr(evaluator.predict, "load_detector", lambda path: det)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from generator.shard import Shard

Annotation = dict[str, Any]


def _key(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


class OracleDetector:
    """Follows the detector contract of :mod:`evaluator.predict` for one shard's images."""

    def __init__(self, shard: Shard, miss: Callable[[Annotation], bool] = lambda a: False,
                 score: Callable[[Annotation], float] = lambda a: 0.9,
                 false_positives: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None,
                 scenario: str | None = None) -> None:
        self.classes = shard.classes
        sc = shard.manifest.get("scenario")
        self.scenario = scenario or (sc.get("name") if isinstance(sc, dict) else sc) or "unknown"
        self.calls = 0
        # images with identical pixels (possible in toy renders) are answered in shard order
        self._answers: dict[str, list[list[dict[str, Any]]]] = {}
        self._served: dict[str, int] = {}
        by_image = shard.annotations_by_image()
        for img in shard.coco["images"]:
            dets = [{"bbox": list(a["bbox"]), "category_id": a["category_id"], "score": score(a)}
                    for a in by_image.get(img["id"], []) if not miss(a)]
            if false_positives is not None:
                dets += false_positives(img)
            self._answers.setdefault(_key(shard.load_image(img)), []).append(dets)

    def predict(self, images: list[np.ndarray],
                score_threshold: float = 0.05) -> list[list[dict[str, Any]]]:
        self.calls += 1
        return [[d for d in self._next(_key(im)) if d["score"] >= score_threshold] for im in images]

    def _next(self, key: str) -> list[dict[str, Any]]:
        answers = self._answers.get(key)
        if not answers:
            return []
        n = self._served.get(key, 0)
        self._served[key] = n + 1
        return answers[n % len(answers)]
