"""Where one training step spends its time: ``torch.profiler`` tables of the kernels
(CUDA) or operators (CPU) of one step, for the models that the speed benchmarks
compare, built exactly as those benchmarks build them.

    python benchmarks/profile_step.py --models rescalenet50,resnet50 --device cuda --amp --channels-last
    python benchmarks/profile_step.py --translation --device cuda     # rescale vs LayerNorm Transformer

Prints, per model, the top ``--top`` entries by self time and the step's total.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402


def _profile(step, device: str, top: int, steps: int = 3) -> str:
    for _ in range(3):  # warm-up: cudnn autotuning, caching allocator
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="rescalenet50,resnet50")
    p.add_argument("--translation", action="store_true", help="profile the two Transformer archs instead")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--length", type=int, default=64, help="tokens per sentence (--translation)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    if args.translation:
        import bench_translation as bt

        dev = torch.device(args.device)
        for arch in ("rescale_transformer_wmt_en_de", "transformer_wmt_en_de"):
            torch.manual_seed(0)
            model, d = bt.build(arch, 32768, dev, ["--dropout", "0.1"])
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
            b = bt.make_batch(d, args.batch, args.length, torch.Generator().manual_seed(0), dev)
            for _ in range(9):  # AddBias calibration
                bt.train_step(model, opt, b, args.amp)
            print(f"\n### {arch}: 3 steps, batch {args.batch} x {args.length} tokens\n")
            print(_profile(lambda: bt.train_step(model, opt, b, args.amp), args.device, args.top))
        return
    import bench_speed as bs

    bs_args = argparse.Namespace(device=args.device, batch=args.batch, size=args.size, classes=1000,
                                 amp=args.amp, channels_last=args.channels_last)
    x, y = bs.batch(bs_args)
    for name in args.models.split(","):
        model, opt = bs.build(name, bs_args)
        print(f"\n### {name}: 3 steps, batch {args.batch}, {args.size}px, "
              f"{'bf16' if args.amp else 'fp32'}{', channels-last' if args.channels_last else ''}\n")
        print(_profile(lambda: bs.train_step(model, opt, x, y, bs_args), args.device, args.top))
        del model, opt


if __name__ == "__main__":
    main()
