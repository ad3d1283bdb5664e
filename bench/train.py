#!/usr/bin/env python3
"""Training throughput and data-pipeline efficiency.

images/s of the full training loop (``Trainer.train_epoch``: DataLoader, normalisation, augmentation,
host-to-device copy, forward, backward, optimizer step, progress) and of forward+backward+step alone on
batches already on the device, with the same model and batch size. Efficiency = loop / compute: 1.0 means
the data pipeline costs nothing; the target is >= 0.9.

On a shared machine other jobs' load changes from second to second, so the two measurements are
interleaved in short alternating rounds (one epoch of the loop, then the same number of compute-only
steps; the order flips every round, ABBA) and the figure is the **median of the per-round ratios**, with
its spread (quartiles). A second, load-independent figure times every ``train_step`` inside the real
loop: ``in_loop_step_share`` = time in forward+backward+step / epoch time, so 1 - share is exactly what the
data pipeline (and the loop's bookkeeping) costs in the same steps. The training folder is written by the real export (core.chips) from the
built-in sample scene.

    .venv/bin/python bench/train.py                      # CPU defaults: U-Net ResNet-18 width 32, 64 px chips
    .venv/bin/python bench/train.py --base-width 64 --encoder resnet34 --chip-px 256 --batch-size 16  # GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    p.add_argument("--rounds", type=int, default=12, help="alternating rounds (one loop epoch + as many compute steps)")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=0)
    args = p.parse_args()

    import torch

    from core.chips import ExportConfig, export_training_data
    from core.sample_data import SampleSceneConfig, generate_sample_scene
    from core.training import TrainConfig, Trainer, _TrainForward

    with tempfile.TemporaryDirectory() as tmp:
        scene = generate_sample_scene(Path(tmp) / "scene", SampleSceneConfig(size_px=args.size_px))
        folder = Path(tmp) / "chips"
        export_training_data(ExportConfig(raster=str(scene.image), labels=str(scene.landcover_polygons),
                                          output_folder=str(folder), tile_size_px=(args.chip_px, args.chip_px),
                                          stride_px=(args.chip_px, args.chip_px)))
        cfg = TrainConfig(model=args.model, encoder=args.encoder, base_width=args.base_width, epochs=args.rounds,
                          batch_size=args.batch_size, learning_rate=0.003, val_split="random", device=args.device,
                          num_workers=args.num_workers, patience=0)
        step_s: list[float] = []

        class Timed(Trainer):
            """Times every train_step inside the real loop: the rest of an epoch is the data pipeline."""

            def train_step(self, net: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> float:
                start = time.perf_counter()
                loss = super().train_step(net, batch)
                step_s.append(time.perf_counter() - start)
                return loss

        t = Timed(folder, Path(tmp) / "model", cfg)
        t._setup()
        t.fixed_lr = False
        net = _TrainForward(t.model, t.multi).train()
        cached = t.train_ds._cache is not None
        t.train_epoch(net, 0, cfg.batch_size)  # warm-up (allocator, cudnn autotune, first-touch pages)
        sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)
        batches = [tuple(x.to(t.device) for x in b)
                   for _, b in zip(range(4), t._loader(t.train_ds, cfg.batch_size, True))]
        steps_epoch = len(t._loader(t.train_ds, cfg.batch_size, True))
        images_round = steps_epoch * cfg.batch_size

        in_loop: list[float] = []

        def loop(r: int) -> float:
            sync()
            step_s.clear()
            start = time.perf_counter()
            t.train_epoch(net, r, cfg.batch_size)
            sync()
            total = time.perf_counter() - start
            in_loop.append(sum(step_s) / total)
            return total

        def compute() -> float:
            sync()
            start = time.perf_counter()
            for i in range(steps_epoch):
                t.train_step(net, batches[i % len(batches)])
            sync()
            return time.perf_counter() - start

        loop_s: list[float] = []
        compute_s: list[float] = []
        for r in range(args.rounds):
            if r % 2 == 0:
                loop_s.append(loop(r))
                compute_s.append(compute())
            else:
                compute_s.append(compute())
                loop_s.append(loop(r))
        # A DataLoader-only pass: what the pipeline itself costs per chip.
        start = time.perf_counter()
        n = sum(len(b[0]) for b in t._loader(t.train_ds, cfg.batch_size, True))
        loader_ips = n / (time.perf_counter() - start)

    ratios = [c / lp for lp, c in zip(loop_s, compute_s)]  # loop images/s / compute images/s, same images
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    result = {
        "device": t.device_text, "model": f"{args.model}/{args.encoder}/width {args.base_width}",
        "chip_px": args.chip_px, "batch_size": cfg.batch_size, "mixed_precision": t.amp,
        "num_workers": args.num_workers, "chips_cached_in_memory": cached,
        "train_chips": len(t.train_ds), "steps_per_round": steps_epoch, "rounds": args.rounds,
        "loop_images_per_s_median": round(images_round / statistics.median(loop_s), 2),
        "compute_images_per_s_median": round(images_round / statistics.median(compute_s), 2),
        "dataloader_only_images_per_s": round(loader_ips, 1),
        "pipeline_efficiency_median": round(statistics.median(ratios), 3),
        "pipeline_efficiency_quartiles": [round(q[0], 3), round(q[2], 3)],
        "per_round_ratios": [round(x, 3) for x in ratios],
        "in_loop_step_share_median": round(statistics.median(in_loop), 4),
        "target": ">= 0.9",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
