"""Eval-mode throughput: folded vs unfolded RescaleNet vs torchvision ResNet with BN folded.

    .venv/bin/python benchmarks/bench_inference.py --arch 50 --batch-size 8 --threads 1

Every contender runs the same input in ``torch.inference_mode()``; the rounds are
interleaved (contender A, B, C, ... then again) so that load changes on a shared
machine hit all of them alike, and the median over rounds is reported, with the
ratios to the folded RescaleNet and to the BN-folded torchvision ResNet. The
RescaleNet is calibrated on random batches first (calibration changes values,
not speed), and the folded model is checked against the original before timing.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torchvision
from torch.fx.experimental.optimization import fuse as fx_fuse_conv_bn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rescalenet  # noqa: E402
from rescalenet.fold import fold_for_inference  # noqa: E402

TORCHVISION = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}


def contenders(arch: int, device: torch.device, channels_last: bool):
    net = rescalenet.create_model(f"rescalenet{arch}")
    rescalenet.calibrate(net, [torch.randn(2, 3, 64, 64) for _ in range(8)])
    net.eval()
    models = {}
    if hasattr(net, "set_fused_forward"):  # the core's training-time fused path, off
        import copy

        reference = copy.deepcopy(net)
        reference.set_fused_forward(False)
        models["RescaleNet, module by module"] = reference
        models["RescaleNet, core forward (fused)"] = net
    else:
        models["RescaleNet, unfolded"] = net
    models["RescaleNet, fold_for_inference"] = fold_for_inference(net)
    tv = getattr(torchvision.models, TORCHVISION[arch])().eval()
    models["torchvision ResNet (BN, eval)"] = tv
    models["torchvision ResNet, BN folded (torch.fx fuse)"] = fx_fuse_conv_bn(tv)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {k: m.to(device=device, memory_format=fmt) for k, m in models.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=50, choices=sorted(TORCHVISION))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2, help="forward passes per contender per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    models = contenders(args.arch, device, args.channels_last)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).to(memory_format=fmt)

    with torch.inference_mode():
        ref = models[next(k for k in models if k.startswith("RescaleNet"))](x)
        out = models["RescaleNet, fold_for_inference"](x)
        err = ((ref - out).abs().max() / ref.abs().max()).item()
        if err > 1e-4:
            raise SystemExit(f"folded model differs from the original: relative error {err:.2e}")
        for m in models.values():
            for _ in range(args.warmup):
                m(x)
        sync()
        times = {k: [] for k in models}
        for _ in range(args.rounds):
            for name, m in models.items():
                start = time.perf_counter()
                for _ in range(args.iters):
                    m(x)
                sync()
                times[name].append((time.perf_counter() - start) / args.iters)

    ips = {k: args.batch_size / statistics.median(v) for k, v in times.items()}
    folded = ips["RescaleNet, fold_for_inference"]
    tv_fused = ips["torchvision ResNet, BN folded (torch.fx fuse)"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} cores"
    )
    print(f"# eval throughput, depth {args.arch}, batch {args.batch_size}x3x{args.image_size}x{args.image_size}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}, {where}, torch {torch.__version__}")
    print(f"# median of {args.rounds} interleaved rounds x {args.iters} passes; folded vs original: "
          f"max relative difference {err:.1e}")
    print("| model | images/s | folded RescaleNet / this | this / BN-folded torchvision |")
    print("|---|---:|---:|---:|")
    for name, v in ips.items():
        print(f"| {name} | {v:.1f} | {folded / v:.2f} | {v / tv_fused:.2f} |")


if __name__ == "__main__":
    main()
