"""Render a shard: sample → build scene → render → annotate → sensor effects → write.

Image *i* draws everything from ``SeedSequence(seed).spawn(n)[i]``, so the output does not
depend on the number of worker processes. Workers are spawned processes, each owning one
renderer (one GL context per process); they write image files into the shard's temporary
directory and return small :class:`generator.shard.ImageEntry` objects.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from generator import GENERATOR_VERSION, sensor
from generator.annotations import keypoints, truncation
from generator.errors import ConfigError, ShardError
from generator.fingerprint import fingerprint
from generator.params import GenerationParams
from generator.render import Renderer, RenderOutput, SceneSpec
from generator.render.fake import GL_TO_CV, camera_points
from generator.sampling import Sampler, SceneSample, image_seeds
from generator.scenario import Scenario, load_scenario
from generator.shard import ImageEntry, ImageRecord, ObjectRecord, Shard, ShardWriter, encode_image
from generator.timing import NO_TIMES, StageTimes
from generator.workers import exit_on_sigint

BACKENDS = ("pyrender", "fake")


@dataclass(frozen=True)
class RenderJob:
    scenario: Scenario
    params: GenerationParams
    n: int
    seed: int
    width: int
    height: int
    backend: str = "pyrender"

    def fingerprint(self) -> str:
        assets = self.scenario.asset_digest()  # only scenarios with mesh assets: others unchanged
        return fingerprint(
            scenario=self.scenario.spec_dict(),
            params=self.params.to_dict(),
            seed=self.seed,
            n=self.n,
            image_size=[self.width, self.height],
            backend=self.backend,
            generator_version=GENERATOR_VERSION,
            **({"asset_files": assets} if assets else {}),
        )

    def manifest_info(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "name": s.name,
            "kind": "synthetic",
            "classes": s.classes,
            "fingerprint": self.fingerprint(),
            "scenario": {
                "name": s.name,
                "version": s.spec.version,
                "spec_sha256": s.spec_hash(),
                "spec": s.spec_dict(),
                **({"asset_files": s.asset_digest()} if s.spec.assets else {}),
            },
            "params": self.params.to_dict(),
            "seed": self.seed,
            "n": self.n,
            "image_size": [self.width, self.height],
            "backend": self.backend,
            "generator_version": GENERATOR_VERSION,
        }


def make_renderer(backend: str, width: int, height: int, times: StageTimes = NO_TIMES) -> Renderer:
    """One renderer per process; ``times`` receives the pyrender backend's per-pass stages."""
    if backend == "fake":
        from generator.render.fake import FakeRenderer

        return FakeRenderer(width, height)
    from generator.render.pyrender_backend import PyrenderRenderer

    return PyrenderRenderer(width, height, times=times)


def to_record(
    index: int,
    spec: SceneSpec,
    out: RenderOutput,
    sample: SceneSample,
    rng: np.random.Generator,
    times: StageTimes = NO_TIMES,
) -> ImageRecord:
    with times("annotate"):
        objects = _objects(spec, out)
    with times("sensor"):
        color = sensor.apply(out.color, sample.image, rng)
    return ImageRecord(
        index=index,
        image=color,
        objects=objects,
        depth=out.depth,
        intrinsics=spec.camera.intrinsics,
        conditions=sample.conditions(),
    )


def _objects(spec: SceneSpec, out: RenderOutput) -> list[ObjectRecord]:
    K = spec.camera.intrinsics
    objects = []
    for i in spec.labelled:
        obj = spec.objects[i]
        mask = out.instance == i + 1
        amodal = out.amodal.get(i, mask) | mask  # rasterisation passes can differ by a pixel edge
        pts = camera_points(obj, spec.camera.pose)
        trunc = truncation(pts, K, spec.camera.width, spec.camera.height) if (pts[:, 2] > 0).all() else 1.0
        pose = GL_TO_CV @ np.linalg.inv(spec.camera.pose) @ obj.pose
        kps = None if obj.keypoints is None else keypoints(obj.keypoints, pose, K, out.depth)
        assert obj.category_id is not None  # labelled objects carry a class (builder contract)
        objects.append(
            ObjectRecord(
                category_id=obj.category_id,
                mask=mask,
                amodal_mask=amodal,
                truncation=trunc,
                pose=pose,
                attributes=obj.attributes,
                keypoints=kps,
            )
        )
    return objects


class ImageRenderer:
    """Everything one process needs to turn an image index into an :class:`ImageEntry`."""

    def __init__(self, job: RenderJob, root: Path, times: StageTimes = NO_TIMES) -> None:
        self.job, self.root, self.times = job, root, times
        self.sampler = Sampler(job.scenario, job.params)
        self.builder = job.scenario.builder()
        self.seeds = image_seeds(job.seed, job.n)
        self.renderer = make_renderer(job.backend, job.width, job.height, times)

    def scene(self, index: int) -> tuple[SceneSpec, SceneSample, np.random.Generator]:
        s_sample, s_scene, s_sensor = self.seeds[index].spawn(3)
        sample = self.sampler.sample(np.random.default_rng(s_sample))
        spec = self.builder(
            sample, np.random.default_rng(s_scene), self.job.width, self.job.height, self.job.scenario.classes
        )
        return spec, sample, np.random.default_rng(s_sensor)

    def __call__(self, index: int) -> ImageEntry:
        times = self.times
        with times("scene"):
            spec, sample, rng = self.scene(index)
        out = self.renderer.render(spec)  # the backend times its gl_* stages
        return self._finish(index, spec, out, sample, rng, times)

    def _finish(
        self,
        index: int,
        spec: SceneSpec,
        out: RenderOutput,
        sample: SceneSample,
        rng: np.random.Generator,
        times: StageTimes,
    ) -> ImageEntry:
        """Everything after the GL passes: labels, sensor effects, statistics, PNGs, writes."""
        return encode_image(to_record(index, spec, out, sample, rng, times), self.root, times)

    def pipelined(self, indices: Iterable[int], ahead: int = 2) -> Iterator[ImageEntry]:
        """The entries of ``indices``, in order, as ``self(i)`` would give them, in three
        stages on three threads: a scene thread samples and builds the next images' scenes and
        backend scene graphs (:meth:`_prepare`), this thread makes the GL passes (GL stays on
        it), an encode thread runs each rendered image's :meth:`_finish` (NumPy, SciPy, zlib and
        the GL read-back release the GIL for much of their work). At most ``ahead`` images wait
        between stages; an error on either thread is raised here, at its image. Files still go
        into the shard's temporary directory, which is renamed only after every entry arrived.
        Every image draws from its own seeds, so the threads' timing cannot change an entry."""
        times = self.times
        pre = StageTimes() if times else NO_TIMES  # the scene thread's stages, merged at the end
        post = StageTimes() if times else NO_TIMES  # the encode thread's stages, merged at the end
        order = list(indices)
        upcoming: deque[Future[_Prepared]] = deque()
        pending: deque[Future[ImageEntry]] = deque()
        with (
            ThreadPoolExecutor(1, thread_name_prefix="synthloop-scene") as scenes,
            ThreadPoolExecutor(1, thread_name_prefix="synthloop-encode") as ex,
        ):
            try:
                upcoming.extend(scenes.submit(self._prepare, i, pre) for i in order[:ahead])
                for k, i in enumerate(order):
                    with times("wait_scene"):
                        spec, sample, rng, prepared = upcoming.popleft().result()
                    if k + ahead < len(order):
                        upcoming.append(scenes.submit(self._prepare, order[k + ahead], pre))
                    out = self.renderer.render(spec, prepared=prepared)  # GL: this thread only
                    pending.append(ex.submit(self._finish, i, spec, out, sample, rng, post))
                    while len(pending) > ahead:
                        with times("wait_encode"):
                            entry = pending.popleft().result()
                        yield entry
                while pending:
                    with times("wait_encode"):
                        entry = pending.popleft().result()
                    yield entry
            finally:
                for f in upcoming:
                    f.cancel()
                for g in pending:
                    g.cancel()
        times.merge(pre, prefix="scene_thread.")
        times.merge(post, prefix="encode_thread.")

    def _prepare(self, index: int, times: StageTimes) -> _Prepared:
        """Image ``index``'s sample, scene and backend scene graph (no GL; any thread)."""
        with times("scene"):
            spec, sample, rng = self.scene(index)
        with times("gl_scene"):
            prepared = self.renderer.prepare(spec)
        return spec, sample, rng, prepared

    def close(self) -> None:
        self.renderer.close()


_Prepared = tuple[SceneSpec, SceneSample, np.random.Generator, object]

_WORKER: ImageRenderer | None = None


def _init_worker(scenario_source: str, params: dict[str, Any], job_args: dict[str, Any], root: str) -> None:
    global _WORKER
    exit_on_sigint()  # the parent reports a Ctrl-C; a worker just ends
    job = RenderJob(scenario=load_scenario(scenario_source), params=GenerationParams.model_validate(params), **job_args)
    _WORKER = ImageRenderer(job, Path(root))


def _work(index: int) -> ImageEntry:
    assert _WORKER is not None
    return _WORKER(index)


def _entries(job: RenderJob, root: Path, workers: int, times: StageTimes = NO_TIMES) -> Iterator[ImageEntry]:
    if workers <= 1:
        with times("setup"):  # sampler, scene builder, GL context
            r = ImageRenderer(job, root, times)
        try:
            yield from r.pipelined(range(job.n))
        finally:
            with times("close"):
                r.close()
        return
    make_renderer(job.backend, job.width, job.height).close()  # fail here, clearly, if EGL is missing
    args = {"n": job.n, "seed": job.seed, "width": job.width, "height": job.height, "backend": job.backend}
    with ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(str(job.scenario.source), job.params.to_dict(), args, str(root)),
    ) as ex:
        yield from ex.map(_work, range(job.n), chunksize=max(1, min(16, job.n // (4 * workers) or 1)))


@dataclass
class RenderResult:
    path: Path
    fingerprint: str
    images: int
    annotations: int
    seconds: float
    reused: bool = False
    repaired: str | None = None  # what was wrong with the shard of this fingerprint that was replaced

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def existing_fingerprint(out: Path) -> str | None:
    try:
        return str(json.loads((out / "manifest.json").read_text())["fingerprint"])
    except (OSError, ValueError, KeyError):
        return None


def shard_problem(out: str | Path, fp: str) -> str | None:
    """None when ``out`` is a finished shard with fingerprint ``fp`` whose every file matches
    its sha256 in manifest.json; else what is wrong with it (missing, another fingerprint,
    a damaged file), as a short phrase."""
    out = Path(out)
    if not (out / "manifest.json").is_file():
        return "missing" if not out.exists() else "has no manifest.json"
    found = existing_fingerprint(out)
    if found != fp:
        return f"has fingerprint {found}, expected {fp}"
    try:
        Shard(out).verify()
    except ShardError as exc:
        return str(exc).split("; ")[0].removeprefix(f"shard {str(out)!r}: ")
    return None


IMAGE_SIZE_RANGE = (16, 4096)  # width and height a render accepts, in pixels (as ScenarioSpec.image)


def check_job(job: RenderJob) -> None:
    if job.n < 1:
        raise ConfigError(f"-n: number of images must be >= 1, but got {job.n}")
    if job.seed < 0:
        raise ConfigError(f"--seed: must be an integer >= 0, but got {job.seed}")
    if job.backend not in BACKENDS:
        raise ConfigError(f"--backend: must be one of {BACKENDS}, but got {job.backend!r}")
    lo, hi = IMAGE_SIZE_RANGE
    if not (lo <= job.width <= hi and lo <= job.height <= hi):
        raise ConfigError(f"--size: width and height must lie in [{lo}, {hi}], but got {job.width}x{job.height}")


def render_shard(
    job: RenderJob,
    out: str | Path,
    workers: int = 1,
    overwrite: bool = False,
    reuse: bool = False,
    progress: Any = None,
    times: StageTimes | None = None,
) -> RenderResult:
    """Render ``job`` into the shard directory ``out`` (atomically).

    ``reuse``: if ``out`` already holds a shard with this job's fingerprint and every file
    matches its sha256 (:func:`shard_problem`), return it untouched (the loop's resume path); a
    damaged one is re-rendered from the job into a temporary directory and swapped in
    atomically (``repaired`` says what was wrong). ``progress``: an optional callable invoked
    once per finished image. ``times``: a :class:`generator.timing.StageTimes` that receives
    per-stage wall times (1 worker only: spawned workers' stages are not collected; the
    shard's content does not depend on it).
    """
    check_job(job)
    out = Path(out)
    fp = job.fingerprint()
    repaired = None
    if reuse:
        problem = shard_problem(out, fp)
        if problem is None:
            shard = Shard(out)
            return RenderResult(
                out, fp, shard.manifest["counts"]["images"], shard.manifest["counts"]["annotations"], 0.0, reused=True
            )
        repaired = problem if existing_fingerprint(out) == fp else None
    t0 = time.perf_counter()
    tm = times if times is not None else NO_TIMES
    with ShardWriter(out, job.manifest_info(), overwrite=overwrite or reuse) as writer:
        for entry in _entries(job, writer.root, workers, tm):
            writer.add(entry)
            if progress is not None:
                progress(entry)
        n_ann = sum(len(e.annotations) for e in writer.entries.values())
        t_fin = time.perf_counter()
    tm.add("finalize", time.perf_counter() - t_fin)  # annotations.json, parquet, manifest, rename
    return RenderResult(out, fp, job.n, n_ann, time.perf_counter() - t0, repaired=repaired)
