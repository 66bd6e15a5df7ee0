"""`make demo`: Mask R-CNN with a RescaleNet backbone, trained and evaluated on the CPU
through the real OpenMMLab command line.

1. generates a small COCO-format instance-segmentation set of coloured shapes with
   polygon masks in a temporary folder (:mod:`projects.detection.synthetic_coco`);
2. ``mim train mmdet configs/mask_rcnn_rescale18_synthetic_demo.py`` (a subprocess of
   the real CLI; the plugin is found through ``custom_imports`` because the project
   is pip-installed);
3. ``mim test mmdet ... --checkpoint <the checkpoint just written>`` (which loads with
   torch's ``weights_only=True``);
4. prints COCO bbox and segm mAP on the generated validation split.

``python -m projects.detection.demo [--epochs N] [--train-images N] [--keep]``
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from typing import Dict, Optional, Sequence

from .. import mim_cli
from ..mim_cli import PROGRESS_MARKS, ROOT, last_checkpoint, read_test_metrics  # noqa: F401 (the tests use them)
from .synthetic_coco import data_cfg_options, make_synthetic_coco

DEMO_CONFIG = os.path.join(ROOT, "configs", "mask_rcnn_rescale18_synthetic_demo.py")


def _progress(line: str) -> str:
    """A runner log line shortened to what shows progress: epoch/iteration, lr, ETA,
    time per iteration, total loss, mAPs."""
    start = next((line.find(m) for m in PROGRESS_MARKS if m in line), 0)
    line = line[start:].rstrip()
    if not line.startswith("Epoch("):
        return line[:160]
    head = re.match(r"Epoch\(\w+\)\s*(\[\d+\])?\s*\[\s*\d+/\d+\]", line)
    fields = re.findall(r"\b(lr|eta|time|loss|coco/bbox_mAP|coco/segm_mAP): (\S+)", line)
    return " ".join([head.group(0) if head else line[:24]] + [f"{k}: {v}" for k, v in fields])


def run_mim(command: str, config: str, work_dir: str, cfg_options: Optional[Dict[str, object]] = None,
            extra: Sequence[str] = (), verbose: bool = True) -> str:
    """``mim <command> mmdet CONFIG ...`` (:func:`projects.mim_cli.run_mim`), progress
    lines shortened by :func:`_progress`."""
    return mim_cli.run_mim("mmdet", command, config, work_dir, cfg_options, extra, verbose, show=_progress)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(description="Mask R-CNN + RescaleNet-18 on generated shapes (CPU)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--val-images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the data and work folder")
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="rescalenet-det-demo-")
    data_root, work_dir = os.path.join(tmp, "data"), os.path.join(tmp, "work")
    start = time.time()
    try:
        print(f"[1/3] generating {args.train_images} + {args.val_images} images of shapes with polygon masks "
              f"in {data_root}", flush=True)
        make_synthetic_coco(data_root, args.train_images, args.val_images, seed=args.seed)
        options: Dict[str, object] = dict(data_cfg_options(data_root))
        options.update({
            "train_cfg.max_epochs": args.epochs, "train_cfg.val_interval": args.epochs,
            "param_scheduler.1.end": args.epochs,
            "param_scheduler.1.milestones": f"[{max(1, int(args.epochs * 0.75))}]",
            "randomness.seed": args.seed})
        print(f"[2/3] mim train mmdet {os.path.relpath(DEMO_CONFIG, ROOT)}  ({args.epochs} epochs on the CPU)",
              flush=True)
        run_mim("train", DEMO_CONFIG, work_dir, options)
        checkpoint = last_checkpoint(work_dir)
        print(f"      trained in {time.time() - start:.0f} s; checkpoint {checkpoint}", flush=True)
        print("[3/3] mim test mmdet ... --checkpoint (weights_only loading)", flush=True)
        test_dir = os.path.join(tmp, "test")
        run_mim("test", DEMO_CONFIG, test_dir, data_cfg_options(data_root), ["--checkpoint", checkpoint])
        metrics = read_test_metrics(test_dir)
        print(f"\nRescaleNet-18 Mask R-CNN, {args.epochs} epochs on {args.train_images} generated images, "
              f"evaluated on {args.val_images} ({time.time() - start:.0f} s in all):")
        for key in ("bbox_mAP", "bbox_mAP_50", "segm_mAP", "segm_mAP_50"):
            print(f"  {key:12s} {metrics[f'coco/{key}']:.3f}")
        return metrics
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
