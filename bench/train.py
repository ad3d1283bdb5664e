#!/usr/bin/env python3
"""Training throughput and data-pipeline efficiency.

images/s of the full training loop (DataLoader, augmentation, host-to-device copy, forward, backward,
optimizer step) and of forward+backward+step alone on batches already on the device, in the same
run with the same model and batch size. Efficiency = loop / compute: 1.0 means the data pipeline
costs nothing; the target is >= 0.9.

    .venv/bin/python bench/train.py                      # CPU defaults: U-Net ResNet-18 width 32, 64 px chips
    .venv/bin/python bench/train.py --base-width 64 --encoder resnet34 --chip-px 256 --batch-size 16  # GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-px", type=int, default=512, help="sample scene size")
    p.add_argument("--chip-px", type=int, default=64)
    p.add_argument("--model", default="unet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--base-width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=4, help="measured rounds (one epoch each)")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=0)
    args = p.parse_args()

    import torch

    from core.sample_data import SampleSceneConfig, generate_sample_scene
    from core.training import TrainConfig, Trainer, _TrainForward
    from tests.core.test_training_helpers import write_training_folder

    with tempfile.TemporaryDirectory() as tmp:
        scene = generate_sample_scene(Path(tmp) / "scene", SampleSceneConfig(size_px=args.size_px))
        folder = write_training_folder(scene, Path(tmp) / "chips", "landcover", chip_px=args.chip_px,
                                       stride_px=args.chip_px)
        cfg = TrainConfig(model=args.model, encoder=args.encoder, base_width=args.base_width, epochs=args.epochs,
                          batch_size=args.batch_size, learning_rate=0.003, val_split="random", device=args.device,
                          num_workers=args.num_workers, patience=0)
        t = Trainer(folder, Path(tmp) / "model", cfg)
        t._setup()
        t.fixed_lr = False
        net = _TrainForward(t.model, t.multi).train()
        t.train_epoch(net, 0, cfg.batch_size)  # warm-up (allocator, cudnn autotune)
        sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)

        batches = [tuple(x.to(t.device) for x in b)
                   for _, b in zip(range(4), t._loader(t.train_ds, cfg.batch_size, True))]
        # Interleave loop epochs and compute-only blocks of the same number of steps, so that other
        # load on the machine (shared CPUs, another GPU job) affects both measurements alike.
        loop_s = compute_s = 0.0
        images = 0
        for epoch in range(args.epochs):
            sync()
            start = time.perf_counter()
            t.train_epoch(net, epoch, cfg.batch_size)
            sync()
            loop_s += time.perf_counter() - start
            steps_epoch = len(t.train_ds) // cfg.batch_size
            images += steps_epoch * cfg.batch_size
            start = time.perf_counter()
            for i in range(steps_epoch):
                t.train_step(net, batches[i % len(batches)])
            sync()
            compute_s += time.perf_counter() - start
        steps = images // cfg.batch_size

    loop_ips = images / loop_s
    compute_ips = steps * cfg.batch_size / compute_s
    result = {
        "device": t.device_text, "model": f"{args.model}/{args.encoder}/width {args.base_width}",
        "chip_px": args.chip_px, "batch_size": cfg.batch_size, "mixed_precision": t.amp,
        "train_chips": len(t.train_ds), "steps": steps,
        "loop_images_per_s": round(loop_ips, 2), "compute_images_per_s": round(compute_ips, 2),
        "pipeline_efficiency": round(loop_ips / compute_ips, 3), "target": ">= 0.9",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
