"""Speed and peak memory of a training step (forward, backward, SGD step) and of
inference: RescaleNet-50 against torchvision ResNet-50 (BN), timm nf_resnet50 and
Fixup-50, same batch, resolution and optimizer, in one run, as ratios.

    python benchmarks/bench_speed.py                      # CPU defaults
    python benchmarks/bench_speed.py --batch 64 --size 224 --device cuda --amp --channels-last
    python benchmarks/bench_speed.py --family cifar20 --in-chans 1 --size 28 --batch 128   # small inputs
    python benchmarks/bench_speed.py --family imagenet18 --in-chans 1 --size 32 --batch 128

``--family`` picks the RescaleNet, its BatchNorm counterpart of the same layout (the
reference of every ratio) and the other baselines: ``imagenet50`` (default: RescaleNet-50,
ResNet-50, NF-ResNet-50, Fixup-50), ``imagenet18`` (RescaleNet-18, ResNet-18,
NF-ResNet-26), ``cifar20`` / ``cifar56`` (the CIFAR layout, BN ResNet-20 / -56).

Speed: all models live in this process and are timed in interleaved rounds, after
warm-up; in each round a model runs ``--steps`` steps back to back, as a training loop
does (on a GPU: one synchronisation per round, so the host may queue work ahead of
the device as in real training); images/s = batch / median over the rounds of the
round's mean step time. RescaleNet is calibrated first (8 training-mode passes), so the timed
steps run the fused forward; ``rescalenet50-ref`` times the module-by-module
reference forward of the same model, to show what the fusing buys.

Peak memory: each model is built (and calibrated) in a fresh subprocess, trained for 2
warm-up steps, then the high-water mark is reset and one more step is measured; the
number is that step's peak over the process's memory just before the model was
built: weights, gradients, optimizer state, activations and allocator slack. On the
CPU the peak is the kernel's resident-set high-water mark (``VmHWM``, which sees every
allocation, torch's included; reset through ``/proc/self/clear_refs``), on CUDA
``torch.cuda.max_memory_allocated``. (Runs before 2026-11-26 01:10 measured the peak
over the build and first steps instead, so RescaleNet's calibration passes and cuDNN's
autotuning trials could set it.)

Inference: eval mode, ``torch.inference_mode``; RescaleNet-50 (its fused eval forward,
and folded by ``rescalenet.fold_for_inference``) against ResNet-50 with every
BatchNorm folded into its conv.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, append_result, table  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import rescalenet  # noqa: E402
from rescalenet.baselines import baseline_param_groups, create_baseline, fold_batchnorm  # noqa: E402

# family -> (RescaleNet, its BN counterpart, other baselines)
FAMILIES = {
    "imagenet50": ("rescalenet50", "resnet50", ("nf_resnet50", "fixup_resnet50")),
    "imagenet18": ("rescalenet18", "resnet18", ("nf_resnet26",)),
    "cifar20": ("rescalenet_cifar20", "resnet_cifar20", ()),
    "cifar56": ("rescalenet_cifar56", "resnet_cifar56", ()),
}


def family_models(family: str):
    rescale, bn, others = FAMILIES[family]
    return [rescale, rescale + "-ref", bn, *others]


def label(name: str) -> str:
    if name.endswith("-ref"):
        return f"{name[:-4]} (reference forward)"
    return f"{name} (fused)" if name in rescalenet.list_models(kind="2d") else name


def _is_rescalenet(name: str) -> bool:
    return name.removesuffix("-ref") in rescalenet.list_models(kind="2d")


def build(name: str, args) -> tuple:
    """Model and SGD optimizer (official groups) on the device, calibrated if needed."""
    dev = torch.device(args.device)
    if _is_rescalenet(name):
        model = rescalenet.create_model(name.removesuffix("-ref"), num_classes=args.classes, in_chans=args.in_chans)
        groups = rescalenet.param_groups(model, 1e-4)
    else:
        extra = dict(in_chans=args.in_chans) if args.in_chans != 3 else {}
        model = create_baseline(name, num_classes=args.classes, **extra)
        groups = baseline_param_groups(model, name, 0.1, 1e-4)
    model.to(dev)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-4)
    if _is_rescalenet(name):
        with torch.no_grad():
            rescalenet.calibrate(model, (batch(args)[0] for _ in range(8)))
        model.set_fused_forward(not name.endswith("-ref"))
    model.train()
    return model, opt


def batch(args):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.in_chans, args.size, args.size, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    x, y = x.to(args.device), y.to(args.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def sync(args):
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step(model, opt, x, y, args):
    with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.amp):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def clock(args) -> float:
    """Wall time, or this process's CPU time (``--clock cpu``: robust to other
    processes competing for the cores; on a GPU only wall time makes sense)."""
    return time.process_time() if args.clock == "cpu" else time.perf_counter()


def peak_rss_mib() -> float:
    """The kernel's RSS high-water mark of this process (VmHWM). Not ``ru_maxrss``:
    that survives fork + exec, so a child started by a big parent reports the
    parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(name: str, args) -> None:
    """Runs in a fresh process: peak memory of 2 training steps of one model."""
    x, y = batch(args)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_mib()
    model, opt = build(name, args)
    for _ in range(2):  # warm-up: optimizer state, cudnn autotuning, allocator caches
        train_step(model, opt, x, y, args)
    sync(args)
    # the measured step's peak only: not calibration's passes nor autotuning's trial workspaces
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # Linux: resets VmHWM to the current RSS
            f.write("5")
    train_step(model, opt, x, y, args)
    sync(args)
    if args.device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = peak_rss_mib() - base
    print(json.dumps({"peak_mib": peak}))


def measure_memory(name: str, args) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", name] + [
        a for a in sys.argv[1:] if a != "--no-append"
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    if out.returncode:
        raise RuntimeError(f"memory run of {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def time_training(names, args):
    built = {n: build(n, args) for n in names}
    x, y = batch(args)
    times = {n: [] for n in names}
    for n in names:  # warm-up
        for _ in range(args.warmup):
            train_step(*built[n], x, y, args)
    for r in range(args.rounds):
        for n in names:
            model, opt = built[n]
            sync(args)
            t0 = clock(args)
            for _ in range(args.steps):  # back to back, as a training loop runs them
                train_step(model, opt, x, y, args)
            sync(args)
            times[n].append((clock(args) - t0) / args.steps)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {args.batch / statistics.median(times[n]):.1f} img/s" for n in names), flush=True)
    return {n: args.batch / statistics.median(t) for n, t in times.items()}


@torch.inference_mode()
def time_inference(args):
    x, _ = batch(args)
    rescale, bn_name, _ = FAMILIES[args.family]
    rn, _ = build(rescale, args)
    rn.eval()
    bn, _ = build(bn_name, args)
    bn = fold_batchnorm(bn.eval())
    models = {f"{rescale} (fused eval forward)": rn,
              f"{rescale} (fold_for_inference)": rescalenet.fold_for_inference(rn),
              f"{bn_name} (BN folded)": bn}
    times = {n: [] for n in models}
    for m in models.values():
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.amp):
            m(x)
    for _ in range(args.rounds):
        for n, m in models.items():
            sync(args)
            t0 = clock(args)
            for _ in range(args.steps):
                with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.amp):
                    m(x)
            sync(args)
            times[n].append((clock(args) - t0) / args.steps)
    return {n: args.batch / statistics.median(t) for n, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="imagenet50", choices=sorted(FAMILIES), help="the models compared (see above)")
    p.add_argument("--models", default="", help="comma-separated subset of the family's models (default: all of them)")
    p.add_argument("--in-chans", type=int, default=3, help="input channels (1: greyscale, as Fashion-MNIST)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=128, help="input resolution")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="time steps by wall clock or by the process's CPU time (shared machines)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-inference", action="store_true")
    p.add_argument("--no-append", action="store_true", help="do not append to docs/results.md")
    p.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # as every ImageNet training script; same for all models
    if args.memory_child:
        return memory_child(args.memory_child, args)
    family = family_models(args.family)
    reference = FAMILIES[args.family][1]
    names = [n for n in args.models.split(",") if n] or family
    bad = [n for n in names if n not in family]
    if bad or reference not in names:
        p.error(f"--models: {bad} not in the {args.family} family {family}; {reference} (the reference) must be included")
    nf = next((n for n in names if n.startswith("nf_")), None)
    if nf:
        try:
            import timm  # noqa: F401
        except ImportError:
            print(f"timm is not installed: skipping {nf}")
            names.remove(nf)
            nf = None

    speed = time_training(names, args)
    mem = {n: measure_memory(n, args) for n in names} if not args.no_memory else {}
    ref_s, ref_m = speed[reference], mem.get(reference)
    rows = []
    for n in names:
        row = [label(n), f"{speed[n]:.2f}", f"{speed[n] / ref_s:.3f}"]
        if mem:
            row += [f"{mem[n]:.0f}", f"{mem[n] / ref_m:.3f}"]
        if nf:
            row.append(f"{speed[n] / speed[nf]:.3f}")
        rows.append(row)
    header = ["model", "train img/s", "x BN"]
    if mem:
        header += ["peak MiB", "mem x BN"]
    if nf:
        header.append("x NF")
    body = (f"Training step (forward + backward + SGD), batch {args.batch}, {args.in_chans}x{args.size}x{args.size}, "
            f"{'bf16 autocast' if args.amp else 'fp32'}{', channels-last' if args.channels_last else ''}, "
            f"{args.device}, {args.clock} clock, median of {args.rounds} interleaved rounds of {args.steps} steps:\n\n" + table(header, rows))
    if not args.no_inference:
        inf = time_inference(args)
        ref = inf[f"{FAMILIES[args.family][1]} (BN folded)"]
        body += "\n\nInference (eval, no grad):\n\n" + table(
            ["model", "img/s", "x BN folded"], [[n, f"{v:.2f}", f"{v / ref:.3f}"] for n, v in inf.items()])
    print(body)
    if not args.no_append:
        peak = ("the peak RSS (VmHWM)" if args.device == "cpu" else "torch.cuda.max_memory_allocated")
        append_result("Speed and memory", body, notes=(
            f"Peak memory: {peak} of one training step after 2 warm-up steps (high-water mark reset), "
            "in a fresh process per model, over its memory before the model was built."))


if __name__ == "__main__":
    main()
