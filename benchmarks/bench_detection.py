"""One Mask R-CNN FPN training iteration: RescaleNet-50 against mmdet's ResNet-50 (BN).

Both detectors come from this project's configs, so everything but the backbone is
identical (FPN, RPN, RoI heads, optimizer with gradient clipping):

* ``rescale50``: ``configs/mask_rcnn_rescale50.py`` (nothing frozen);
* ``r50_bn``: ``configs/mask_rcnn_r50_bn_baseline.py``, the like-for-like baseline
  (ResNet-50 + trained BN, nothing frozen);
* ``r50_bn_stock``: the stock ``mask-rcnn_r50_fpn_1x_coco.py`` backbone (stem and
  stage 1 frozen, BN in eval mode), ``init_cfg=None`` (no download).

One iteration = ``model.train_step``: data preprocessing, forward with losses,
backward, gradient clipping, SGD step, on a fixed batch of generated images
(``mmdet.testing.demo_mm_inputs``, 5 boxes with masks each). RescaleNet's AddBias
means are calibrated first, as they are after the first 8 training iterations.

Time: the models run interleaved in one process (A B C A B C ...), after one warm-up
iteration each; the median over ``--repeats`` is reported, with the ratio to
``r50_bn``. Peak memory (CPU): each model runs one iteration in a fresh subprocess,
and the peak is the process's maximum resident set size after that iteration
(``VmHWM``, reset to the current RSS just before the step) minus its resident set size just before it
(model and optimizer built, backbone calibrated). On a GPU, ``torch.cuda.max_memory_allocated``
over the iteration is used instead.

    .venv/bin/python benchmarks/bench_detection.py [--size 512 --batch 2 --repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODELS_ = ("rescale50", "r50_bn", "r50_bn_stock")


def build(name: str, device: str):
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    MMLogger.get_current_instance().setLevel("ERROR")  # no per-parameter init report
    cfg_name = "mask_rcnn_rescale50.py" if name == "rescale50" else "mask_rcnn_r50_bn_baseline.py"
    cfg = Config.fromfile(os.path.join(ROOT, "configs", cfg_name))
    if name == "r50_bn_stock":
        cfg.model.backbone.update(frozen_stages=1, norm_eval=True)
    model = MODELS.build(cfg.model).to(device)
    model.init_weights()
    model.train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def batch(size: int, batch_size: int, device: str):
    from mmdet.testing import demo_mm_inputs

    torch.manual_seed(0)
    packed = demo_mm_inputs(batch_size, [(3, size, size)] * batch_size, num_items=[5] * batch_size,
                            with_mask=True, num_classes=80)
    if device != "cpu":
        packed["inputs"] = [x.to(device) for x in packed["inputs"]]
        packed["data_samples"] = [s.to(device) for s in packed["data_samples"]]
    return packed


def calibrate_backbone(model, device: str) -> None:
    import rescalenet

    if any(isinstance(m, rescalenet.AddBias) for m in model.backbone.modules()):
        rescalenet.calibrate(model.backbone, (torch.randn(1, 3, 128, 128, device=device) for _ in range(8)))


def step(model, optim_wrapper, data, device: str) -> float:
    if device != "cpu":
        torch.cuda.synchronize()
    t = time.perf_counter()
    model.train_step(data, optim_wrapper)
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def peak_memory(name: str, size: int, batch_size: int, device: str) -> float:
    """MiB; run in a fresh process (see module docstring)."""
    model, optim_wrapper = build(name, device)
    calibrate_backbone(model, device)
    data = batch(size, batch_size, device)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(model, optim_wrapper, data, device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    # The calibration passes above may have set a higher high-water mark than one
    # training step: reset it (Linux: writing 5 to clear_refs resets VmHWM to VmRSS).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    current = _current_rss_kib()
    step(model, optim_wrapper, data, device)
    return (_status_kib("VmHWM") - current) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _current_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square image side (pixels)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--memory-of", choices=MODELS_, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.memory_of:  # child process of the memory measurement
        print(json.dumps(dict(mib=peak_memory(args.memory_of, args.size, args.batch, device))))
        return

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch} x 3 x {args.size} x {args.size}, {args.repeats} repeats", flush=True)
    runs = {}
    for name in MODELS_:
        model, optim_wrapper = build(name, device)
        calibrate_backbone(model, device)
        runs[name] = (model, optim_wrapper)
    data = batch(args.size, args.batch, device)
    times = {name: [] for name in MODELS_}
    for name, (model, ow) in runs.items():  # warm-up
        step(model, ow, data, device)
    for r in range(args.repeats):
        for name, (model, ow) in runs.items():
            times[name].append(step(model, ow, data, device))
        print(f"  repeat {r + 1}: " + "  ".join(f"{n} {times[n][-1]:.2f}s" for n in MODELS_), flush=True)
    del runs

    memory = {}
    for name in MODELS_:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-of", name, "--size", str(args.size),
               "--batch", str(args.batch), "--threads", str(torch.get_num_threads())]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"memory run of {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        memory[name] = json.loads(proc.stdout.strip().splitlines()[-1])["mib"]

    base_t, base_m = statistics.median(times["r50_bn"]), memory["r50_bn"]
    mem_kind = "CUDA max_memory_allocated" if device != "cpu" else "peak RSS growth"
    print(f"\n| backbone | iteration (median s) | time / r50_bn | {mem_kind} (MiB) | memory / r50_bn |")
    print("|---|---|---|---|---|")
    for name in MODELS_:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.3f} | {t / base_t:.3f} | {memory[name]:.0f} | {memory[name] / base_m:.3f} |")


if __name__ == "__main__":
    main()
