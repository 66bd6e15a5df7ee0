"""SlowOnly on real appearance through `mim train mmaction2` / `mim test mmaction2`: the
normalization-free RescaleNet3d R-18 against MMAction2's ResNet3dSlowOnly R-18 with BatchNorm.

Data: Fashion-Clips (``projects/video/fashion_clips.py``, written by ``make data``): 4,000
training, 1,000 validation and 1,000 test clips of 8 frames at 40x40 px, each showing one
real Fashion-MNIST item moving and bouncing across a noisy frame, labelled with its class
(10 classes, balanced); the three splits use disjoint Fashion-MNIST items.

Models: the recognizer, data and schedule of ``configs/slowonly_rescale18_fashion.py``
(I3D head, batch 16, 3 epochs = 750 iterations: 100 warm-up, then cosine; SGD with
momentum, gradient clipping at 40, as MMAction2's SlowOnly recipe); only the backbone
differs:

    rescale18   RescaleResNet3dSlowOnly, depth 18 (this project; no normalization)
    r18_bn      MMAction2 ResNet3dSlowOnly, depth 18, BatchNorm (configs/slowonly_r18_bn_fashion.py)

Protocol, run folders and resuming: as ``bench_detection_real.py`` (whose code this script
uses): each model's lr is swept on the first seed and scored by top-1 of ``mim test`` on
the **validation** split (extended past a winning edge, ``--max-extensions``), then every
seed runs at that lr and the table reports top-1 and
top-5 of ``mim test`` on the **test** split, mean +- sd over seeds. Runs live in
``runs/video_real/<tag>/<model>/lr<lr>_s<seed>/``.

    python benchmarks/bench_video_real.py --quick          # smoke test: 2 iterations per model, ~2 minutes
    python benchmarks/bench_video_real.py                  # the table (CPU budget: see --help)
    python benchmarks/bench_video_real.py --phase table --plot docs/video_real.png
"""
from __future__ import annotations

import os
import sys
from typing import Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_detection_real import ROOT, Budget, Model, Task, main  # noqa: E402


def _check_clips(root: str) -> None:
    from projects.video.fashion_clips import CLASSES

    how = (f"write it with `make data` or `python -m projects.video.fashion_clips --data "
           f"/usr/share/datasets/fashion-mnist --output {root}`")
    for split in ("train", "val", "test"):
        ann = os.path.join(root, f"{split}_list.txt")
        if not os.path.isfile(ann) or not os.path.isdir(os.path.join(root, split)):
            raise SystemExit(f"error: {ann} (or its frame folder {split}/) not found: --data must be a "
                             f"Fashion-Clips folder; {how}")
        with open(ann) as f:
            labels = {int(line.split()[-1]) for line in f if line.strip()}
        if not labels <= set(range(len(CLASSES))):
            raise SystemExit(f"error: {ann} has labels {sorted(labels - set(range(len(CLASSES))))} outside "
                             f"0..{len(CLASSES) - 1}: the configs have a {len(CLASSES)}-class head; {how}")


def _quick(epochs: int) -> Dict[str, object]:
    return {"train_cfg.max_epochs": epochs, "param_scheduler.1.T_max": epochs, "param_scheduler.1.end": epochs,
            "default_hooks.logger.interval": 1, "log_processor.window_size": 1}


def _video_task() -> Task:
    from projects.video import fashion_clips

    return Task(
        name="video_real", codebase="mmaction2",
        models={
            "rescale18": Model("SlowOnly RescaleNet3d-18 (no norm)", "configs/slowonly_rescale18_fashion.py",
                               "rescale", True),
            "r18_bn": Model("SlowOnly ResNet3d-18 BN", "configs/slowonly_r18_bn_fashion.py", "bn", True),
        },
        score="acc/top1", metrics=("acc/top1", "acc/top5"),
        default_data=os.path.join(ROOT, "data", "fashion_clips"), check_data=_check_clips,
        data_options=fashion_clips.data_cfg_options, quick_options=_quick,
        default=Budget(lrs=[0.025, 0.05, 0.1], seeds=[0, 1], max_extensions=2),
        quick=Budget(lrs=[0.05], seeds=[0], subset={"train": 32, "val": 16, "test": 16}, epochs=1),
        budget_note="CPU budget of the default table (1 thread, 2-core machine shared with other jobs): "
                    "8 runs (2 models x 3 lrs plus up to 2 past a winning edge each, then 1 more seed each) of 750 iterations; measured per run "
                    "in docs/results.md ('Real data: video').")


if __name__ == "__main__":
    main(_video_task(), title="SlowOnly R-18 from scratch on Fashion-Clips (8 x 40 x 40, 750 iterations of batch 16)")
