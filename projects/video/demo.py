"""SlowOnly RescaleNet-18 trained and tested on generated clips through the real
OpenMMLab command line, on the CPU:

1. generates rawframe clips of a square moving in one of 8 directions
   (:mod:`projects.video.synthetic_clips`) in a temporary folder;
2. ``mim train mmaction2 configs/slowonly_rescale18_synthetic_demo.py`` (a subprocess of
   the real CLI; the plugin is found through ``custom_imports`` because the project is
   pip-installed);
3. ``mim test mmaction2 ... --checkpoint <the checkpoint just written>`` (loaded with
   torch's ``weights_only=True``);
4. prints top-1 / top-5 accuracy on the generated validation split.

``python -m projects.video.demo [--epochs N] [--train-clips N] [--keep]``
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Dict, Optional, Sequence

from .. import mim_cli
from ..mim_cli import ROOT, last_checkpoint, read_test_metrics  # noqa: F401 (the tests use them)
from .synthetic_clips import data_cfg_options, generate

DEMO_CONFIG = os.path.join(ROOT, "configs", "slowonly_rescale18_synthetic_demo.py")


def run_mim(command: str, config: str, work_dir: str, cfg_options: Optional[Dict[str, object]] = None,
            extra: Sequence[str] = (), verbose: bool = True, env: Optional[Dict[str, str]] = None) -> str:
    """``mim <command> mmaction2 CONFIG ...`` (:func:`projects.mim_cli.run_mim`)."""
    return mim_cli.run_mim("mmaction2", command, config, work_dir, cfg_options, extra, verbose, env)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(description="SlowOnly RescaleNet-18 on generated moving squares (CPU)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-clips", type=int, default=64)
    parser.add_argument("--val-clips", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the data and work folder")
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="rescalenet-video-demo-")
    data_root, work_dir = os.path.join(tmp, "data"), os.path.join(tmp, "work")
    start = time.time()
    try:
        print(f"[1/3] generating {args.train_clips} + {args.val_clips} clips in {data_root}", flush=True)
        generate(data_root, args.train_clips, args.val_clips, seed=args.seed)
        options: Dict[str, object] = dict(data_cfg_options(data_root))
        options.update({"train_cfg.max_epochs": args.epochs, "train_cfg.val_interval": args.epochs,
                        "randomness.seed": args.seed})
        print(f"[2/3] mim train mmaction2 {os.path.relpath(DEMO_CONFIG, ROOT)}  ({args.epochs} epochs, CPU)",
              flush=True)
        run_mim("train", DEMO_CONFIG, work_dir, options)
        checkpoint = last_checkpoint(work_dir)
        print(f"      trained in {time.time() - start:.0f} s; checkpoint {checkpoint}", flush=True)
        print("[3/3] mim test mmaction2 ... --checkpoint (weights_only loading)", flush=True)
        test_dir = os.path.join(tmp, "test")
        run_mim("test", DEMO_CONFIG, test_dir, data_cfg_options(data_root), ["--checkpoint", checkpoint])
        metrics = read_test_metrics(test_dir)
        print(f"\nSlowOnly RescaleNet-18, {args.epochs} epochs on {args.train_clips} generated clips, "
              f"tested on {args.val_clips} (8 classes, chance 0.125; {time.time() - start:.0f} s in all):")
        for key in ("acc/top1", "acc/top5"):
            print(f"  {key:9s} {metrics[key]:.3f}")
        return metrics
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
