"""Training throughput of the default detector (images/s), printed as one JSON line.

Runs the real training step (batch gather from an in-memory uint8 store, augmentation, target
encoding, forward, backward, AdamW) on random images with 1-4 random boxes each, so no shard is
needed. Default: CenterNet, 128² inputs, batch 32, CPU with every available core::

    .venv/bin/python benchmarks/train_throughput.py [--steps 30] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `synthloop train` does (before torch)

import numpy as np
import torch

from trainer.api import resolve_device
from trainer.centernet import CenterNet, CenterNetConfig
from trainer.config import TrainConfig
from trainer.data import Store
from trainer.loop import make_batch, make_optimizer, torch_settings, train_step


def random_store(n: int, size: int, classes: int, rng: np.random.Generator) -> Store:
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    counts = rng.integers(1, 5, size=n)
    m = int(counts.sum())
    xy = rng.uniform(0, size * 0.7, size=(m, 2))
    wh = rng.uniform(size * 0.08, size * 0.3, size=(m, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, size)], axis=1).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Store(images, boxes, rng.integers(0, classes, m).astype(np.int64), offsets,
                 np.zeros(n, dtype=np.int64))


def time_steps(args: argparse.Namespace, cfg: TrainConfig, dev: torch.device) -> float:
    """Seconds for ``args.steps`` training steps after ``args.warmup`` untimed ones."""
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    store = random_store(max(256, args.batch_size), args.input_size, 10, rng)
    detector = CenterNet(CenterNetConfig(input_size=args.input_size, width=args.width),
                         [str(i) for i in range(10)])
    detector.init_weights(gen)
    detector.to(dev)
    optimizer = make_optimizer(detector, cfg)
    pixels = torch.from_numpy(store.images).to(dev)
    start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        index = rng.choice(len(store), size=args.batch_size, replace=False)
        images, targets = make_batch(pixels, store, index, None if args.no_augment else gen, dev)
        train_step(detector, optimizer, images, targets, step + 1)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--width", type=int, default=CenterNetConfig.width)
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--no-augment", action="store_true")
    args = p.parse_args()
    cfg = TrainConfig(batch_size=args.batch_size, device=args.device,
                      num_threads=args.threads).validate()
    dev = resolve_device(args.device)
    with torch_settings(dev, cfg.effective_threads):
        seconds = time_steps(args, cfg, dev)
        threads = torch.get_num_threads()
    print(json.dumps({
        "benchmark": "train_throughput", "model": "centernet", "device": str(dev),
        "threads": threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "batch_size": args.batch_size, "input_size": args.input_size,
        "width": args.width, "augment": not args.no_augment, "steps": args.steps,
        "images_per_s": round(args.steps * args.batch_size / seconds, 2),
        "step_ms": round(1000 * seconds / args.steps, 1), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
