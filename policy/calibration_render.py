"""Cheap, comparable renders for calibration trials (no shard written, no training).

**Common random numbers by quantile coupling.** Every trial renders the same ``n`` images:
image *i* always gets the same fixed uniforms ``u`` (one per image-level parameter and per
object slot × object-level parameter, plus one for the uniform-share draw) and the same scene
and sensor seeds. A trial's params turn each ``u`` into a value through the inverse CDF of
that parameter's distribution, so two trials that differ in one parameter differ only in that
parameter's values, and monotonically: distances between trials reflect the params, not
sampling noise. The values follow exactly the distributions :class:`generator.sampling.Sampler`
draws from (same truncation, integer padding and rounding); only the coupling between draws
differs. The written params are checked by a normal shard render (:func:`render_measured`).

Images are built by the scenario's builder, rendered, passed through the pipeline's
:func:`generator.pipeline.to_record` (masks, truncation, sensor effects) and measured with the
functions the shard writer uses (:mod:`generator.imagestats`, :mod:`generator.annotations`).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from evaluator.conditions import condition_tables
from generator import imagestats
from generator.annotations import mask_bbox, visibility
from generator.errors import DataError
from generator.params import Distribution, GenerationParams
from generator.pipeline import RenderJob, make_renderer, render_shard, to_record
from generator.sampling import SceneSample, numeric_law
from generator.scenario import ParamSpec, Scalar, Scenario
from generator.shard import MIN_VISIBLE_PIXELS, ImageRecord, Shard
from policy.calibration_distance import Measured

UNIFORM = Distribution(kind="uniform")


def _categorical_ppf(p: ParamSpec, d: Distribution, u: float) -> Scalar:
    choices = list(p.choices or [])
    if d.kind == "fixed":
        return next(c for c in choices if str(c) == str(d.value))
    if d.kind == "uniform":
        return choices[min(len(choices) - 1, int(u * len(choices)))]
    w = np.array([(d.weights or {}).get(str(c), 0.0) for c in choices], dtype=float)
    cum = np.cumsum(w / w.sum())
    return choices[min(len(choices) - 1, int(np.searchsorted(cum, u, side="right")))]


def value_at(p: ParamSpec, d: Distribution, u: float) -> Scalar:
    """The value of quantile ``u`` in [0, 1) of distribution ``d`` of parameter ``p``."""
    if p.is_numeric:
        x = numeric_law(p, d).ppf(u)  # the sampler's law, at quantile u
        return round(x) if p.type == "int" else x
    return _categorical_ppf(p, d, u)


class CoupledSampler:
    """Scene samples of ``n`` images from fixed uniforms (see the module docstring)."""

    def __init__(self, scenario: Scenario, n: int, seed: int) -> None:
        self.scenario = scenario
        specs = scenario.parameters
        self.image_names = [k for k, p in specs.items() if p.scope == "image"]
        self.object_names = [k for k, p in specs.items() if p.scope == "object"]
        count = scenario.spec.count_param
        count_range = specs[count].range if count else None
        self.max_objects = int(count_range[1]) if count_range else 1
        width = 1 + len(self.image_names) + self.max_objects * len(self.object_names)
        self.u = np.random.default_rng(np.random.SeedSequence([seed, 1])).random((n, width))
        # image i's (scene, sensor) seeds, spawned once: SeedSequence.spawn is stateful (a second
        # call gives new children), so spawning per trial gave each trial other seeds
        self.seeds = [tuple(s.spawn(2)) for s in np.random.SeedSequence([seed, 2]).spawn(n)]

    def sample(self, i: int, params: GenerationParams) -> SceneSample:
        row, specs = self.u[i], self.scenario.parameters
        uniform = bool(row[0] < params.uniform_share)
        dists = {} if uniform else params.distributions

        def draw(name: str, u: float) -> Scalar:
            return value_at(specs[name], dists.get(name, UNIFORM), float(u))

        k = len(self.image_names)
        image = {n: draw(n, row[1 + j]) for j, n in enumerate(self.image_names)}
        count = self.scenario.spec.count_param
        n_obj = min(self.max_objects, int(image[count])) if count else 1
        m = len(self.object_names)
        objects = [{n: draw(n, row[1 + k + o * m + j]) for j, n in enumerate(self.object_names)}
                   for o in range(n_obj)]
        return SceneSample(image=image, objects=objects, uniform_mix=uniform)


def _object_row(image_id: int, record: ImageRecord, index: int) -> dict[str, Any] | None:
    obj = record.objects[index]
    area = int(obj.mask.sum())
    if area < MIN_VISIBLE_PIXELS:  # as the shard writer: not annotated
        return None
    _, _, w, h = mask_bbox(obj.mask)
    row: dict[str, Any] = {
        "image_id": image_id, "area": float(area), "pixel_size": float(np.sqrt(area)), "box_size": float(max(w, h)),
        "visibility": visibility(obj.mask, obj.amodal_mask) if obj.amodal_mask is not None else np.nan,
        "truncation": float(obj.truncation), "object_contrast": imagestats.object_contrast(record.image, obj.mask),
        "stroke_width": imagestats.stroke_width(obj.mask), "slant": imagestats.slant(obj.mask)}
    row.update({f"obj.{k}": v for k, v in obj.attributes.items()})
    return row


def measure_record(image_id: int, record: ImageRecord,
                   sample: SceneSample) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The image row and object rows of one rendered image (conditions + sampled values)."""
    objects = [r for i in range(len(record.objects)) if (r := _object_row(image_id, record, i)) is not None]
    image: dict[str, Any] = {"image_id": image_id, "n_objects": len(objects), "uniform_mix": sample.uniform_mix}
    image.update({f"stat.{k}": v for k, v in imagestats.image_stats(record.image).items()})
    image.update({f"param.{k}": v for k, v in sample.image.items()})
    return image, objects


def to_measured(image_rows: list[dict[str, Any]], object_rows: list[dict[str, Any]]) -> Measured:
    images = pd.DataFrame(image_rows)
    objects = pd.DataFrame(object_rows, columns=None if object_rows else ["image_id"])
    objects = objects.merge(images, on="image_id", how="left")  # image columns repeated per object
    return Measured(images=images, objects=objects)


class _Images:
    """The fixed trial images of one calibration in one process: sampler, builder, renderer."""

    def __init__(self, scenario: Scenario, n: int, seed: int, width: int, height: int, renderer: Any) -> None:
        self.scenario, self.width, self.height = scenario, width, height
        self.sampler = CoupledSampler(scenario, n, seed)
        self.builder = scenario.builder()
        self.renderer = renderer

    def rows(self, params: GenerationParams, start: int, stop: int) -> tuple[list[dict[str, Any]],
                                                                             list[dict[str, Any]]]:
        """Image and object rows of images ``start:stop`` under ``params`` (per-image seeds)."""
        image_rows: list[dict[str, Any]] = []
        object_rows: list[dict[str, Any]] = []
        for i in range(start, stop):
            sample = self.sampler.sample(i, params)
            s_scene, s_sensor = self.sampler.seeds[i]
            spec = self.builder(sample, np.random.default_rng(s_scene), self.width, self.height,
                                self.scenario.classes)
            out = self.renderer.render(spec)
            record = to_record(i, spec, out, sample, np.random.default_rng(s_sensor))
            image, objects = measure_record(i + 1, record, sample)
            image_rows.append(image)
            object_rows.extend(objects)
        return image_rows, object_rows


def measure_chunk(scenario: Scenario, n: int, seed: int, width: int, height: int, backend: str,
                  params: GenerationParams, start: int, stop: int) -> dict[str, Any]:
    """Run in a worker: the rows of trial images ``start:stop`` under ``params``. The chunk makes
    its renderer (one GL context) and deletes it when done, as a render task does with its shard:
    a context kept alive in a worker breaks once another task there deletes its own (EGL_BAD_DISPLAY)."""
    renderer = make_renderer(backend, width, height)
    try:
        image_rows, object_rows = _Images(scenario, n, seed, width, height, renderer).rows(params, start, stop)
    finally:
        renderer.close()
    return {"start": start, "stop": stop, "images": image_rows, "objects": object_rows}


def trial_chunks(n: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous, near-equal ``[start, stop)`` ranges covering ``n`` images."""
    k = max(1, min(chunks, n))
    edges = [round(j * n / k) for j in range(k + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


class TrialRenderer:
    """Renders the fixed image set of a calibration under any params: here with one GL context,
    or with ``executor`` (anything with ``submit``: a ``ProcessPoolExecutor``, a Dask client's
    ``get_executor()``) in ``chunks`` contiguous image ranges (:func:`measure_chunk`: one GL
    context per chunk, in its worker process; none here). Each image keeps its own seeds, so
    the measurements are the same either way."""

    def __init__(self, scenario: Scenario, n: int, seed: int, width: int, height: int,
                 backend: str = "pyrender", executor: Any = None, chunks: int = 2) -> None:
        self.scenario, self.n, self.seed, self.width, self.height = scenario, n, seed, width, height
        self.backend, self.executor, self.chunks = backend, executor, chunks
        self.local = None if executor is not None else _Images(scenario, n, seed, width, height,
                                                                make_renderer(backend, width, height))

    def __enter__(self) -> TrialRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.local is not None:
            self.local.renderer.close()

    def measure(self, params: GenerationParams) -> Measured:
        if self.local is not None:
            return to_measured(*self.local.rows(params, 0, self.n))
        ranges = trial_chunks(self.n, self.chunks)
        futures = [self.executor.submit(measure_chunk, self.scenario, self.n, self.seed, self.width, self.height,
                                        self.backend, params, a, b) for a, b in ranges]
        image_rows: list[dict[str, Any]] = []
        object_rows: list[dict[str, Any]] = []
        for f in futures:
            chunk = f.result()
            image_rows.extend(chunk["images"])
            object_rows.extend(chunk["objects"])
        ids = [int(r["image_id"]) for r in image_rows]
        if ids != list(range(1, self.n + 1)):
            raise DataError(f"calibrate: the trial's chunks returned images {_span(ids)}, not 1..{self.n} once each "
                            "in order; an executor lost or reordered a chunk — run again")
        return to_measured(image_rows, object_rows)


def _span(ids: list[int]) -> str:
    return f"{ids[:3]}…{ids[-2:]} ({len(ids)})" if len(ids) > 5 else str(ids)


def shard_measured(shard: Shard) -> Measured:
    """Measured conditions of a shard, through the evaluator's condition tables."""
    parquet = shard.conditions() if (shard.path / "conditions.parquet").is_file() else None
    tables = condition_tables(shard.coco, parquet, shard.load_image)
    return Measured(images=tables.images, objects=tables.objects)


def render_measured(job: RenderJob, progress: Callable[[Any], None] | None = None) -> Measured:
    """Render ``job`` as a normal shard (in a temporary directory) and measure it: what the
    generator really produces from the params file."""
    with tempfile.TemporaryDirectory(prefix="synthloop-calibrate-") as tmp:
        result = render_shard(job, f"{tmp}/shard", progress=progress)
        return shard_measured(Shard(result.path))

