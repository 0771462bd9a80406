"""Render throughput: raw pyrender colour+depth loop vs the full synthloop pipeline.

(a) raw: the same scenes (built once by the digits builder, outside the timer) rendered
    colour+depth by pyrender in a loop — the floor any pipeline pays;
(b) full: `render_shard` — sampling, scene building, colour+depth, SEG and amodal passes,
    annotations (RLE, boxes, visibility, truncation, pose), sensor effects, PNG + JSON +
    Parquet writing, checksums.
Reports images/s at each size, the ratio b/a, peak RSS, and 2 workers vs 1, as one JSON
document on stdout; ``--breakdown`` adds (b)'s wall time per image split by stage (1 worker,
from :class:`generator.timing.StageTimes`: scene = sampling + SceneSpec building, gl_scene =
pyrender scene graph, gl_colour_depth = the pass (a) times (with mesh/texture upload), gl_seg,
gl_amodal, annotate = masks/RLE/boxes/visibility/pose, sensor, stats = image and object
statistics, png = encoding, write = file writes + sha256, finalize = annotations.json, Parquet,
manifest and rename, setup/close = ImageRenderer start (GL context) and end, other = the rest). Usage:
python benchmarks/render_throughput.py [--n 200] [--sizes 128 512] [--breakdown] [--repeat 1]
``--repeat k`` alternates (a) and (b) k times per size and reports the median of the k ratios
(on a machine shared with other jobs one (a)-then-(b) pair is at the mercy of the load of the
moment); the 2-worker run stays single.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from generator.params import uniform_params
from generator.pipeline import ImageRenderer, RenderJob, render_shard
from generator.render.pyrender_backend import PyrenderRenderer
from generator.scenario import load_scenario
from generator.timing import StageTimes


def raw_loop(job: RenderJob, root: Path) -> float:
    """images/s of plain pyrender colour+depth over the job's scenes (scene building untimed)."""
    r = ImageRenderer(job, root)
    backend = r.renderer
    if not isinstance(backend, PyrenderRenderer):
        raise SystemExit(f"raw_loop: needs the pyrender backend, but the job uses {job.backend!r}")
    scenes = [backend._scene(r.scene(i)[0])[0] for i in range(job.n)]  # pyrender scenes, prebuilt
    backend._r.render(scenes[0])  # warm-up: shader compilation
    t0 = time.perf_counter()
    for s in scenes:
        backend._r.render(s)
    dt = time.perf_counter() - t0
    r.close()
    return job.n / dt


def full_pipeline(job: RenderJob, out: Path, workers: int, times: StageTimes | None = None) -> float:
    return render_shard(job, out, workers=workers, overwrite=True, times=times).images_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--breakdown", action="store_true", help="per-stage ms/img of the 1-worker full pipeline")
    ap.add_argument("--repeat", type=int, default=1,
                    help="(a), (b) pairs per size, alternating; b/a is the median of the pairs' ratios")
    args = ap.parse_args()
    scenario = load_scenario("digits")
    results: dict[str, object] = {"machine": f"{platform.node()} {platform.processor()} {os.cpu_count()} cores",
                                  "n": args.n, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            job = RenderJob(scenario, uniform_params(scenario), n=args.n, seed=args.seed, width=size, height=size)
            full_pipeline(RenderJob(scenario, job.params, n=8, seed=99, width=size, height=size),
                          Path(tmp) / "warm", 1)  # glyph caches and shader compilation
            times = StageTimes() if args.breakdown else None
            raws, fulls = [], []
            for _ in range(args.repeat):  # (a) and (b) alternate, so both see the same machine load
                raws.append(raw_loop(job, Path(tmp)))
                fulls.append(full_pipeline(job, Path(tmp) / f"s{size}-1", 1, times))
            ratios = [f / r for f, r in zip(fulls, raws, strict=True)]
            raw, full1 = statistics.median(raws), statistics.median(fulls)
            full2 = full_pipeline(job, Path(tmp) / f"s{size}-2", 2)
            row: dict[str, object] = {
                "raw_img_s": round(raw, 1), "full_img_s_1worker": round(full1, 1),
                "full_img_s_2workers": round(full2, 1), "ratio_full_over_raw": round(statistics.median(ratios), 3),
                "speedup_2_over_1": round(full2 / full1, 2),
            }
            if args.repeat > 1:
                row["ratios_each_pair"] = [round(x, 3) for x in ratios]
            if times is not None:
                row["raw_ms_per_img"] = round(1e3 * sum(1 / r for r in raws) / len(raws), 2)
                row["breakdown_ms_per_img"] = times.per_image_ms(
                    job.n * len(fulls), total_s=sum(job.n / f for f in fulls)
                )
            results["sizes"][size] = row  # type: ignore[index]
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    results["peak_rss_mb"] = {"main": round(self_kb / 1024), "largest_worker": round(child_kb / 1024)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
