"""Speed and peak memory of a training step (forward, backward, SGD step) and of
inference: RescaleNet-50 against torchvision ResNet-50 (BN), timm nf_resnet50 and
Fixup-50, same batch, resolution and optimizer, in one run, as ratios.

    python benchmarks/bench_speed.py                      # CPU defaults
    python benchmarks/bench_speed.py --batch 64 --size 224 --device cuda --amp --channels-last

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

MODELS = {
    "rescalenet50": "RescaleNet-50 (fused)",
    "rescalenet50-ref": "RescaleNet-50 (reference forward)",
    "resnet50": "ResNet-50, BN (torchvision)",
    "nf_resnet50": "NF-ResNet-50 (timm)",
    "fixup_resnet50": "Fixup-50",
}


def build(name: str, args) -> tuple:
    """Model and SGD optimizer (official groups) on the device, calibrated if needed."""
    dev = torch.device(args.device)
    if name.startswith("rescalenet"):
        model = rescalenet.rescalenet50(num_classes=args.classes)
        groups = rescalenet.param_groups(model, 1e-4)
    else:
        model = create_baseline(name, num_classes=args.classes)
        groups = baseline_param_groups(model, name, 0.1, 1e-4)
    model.to(dev)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-4)
    if name.startswith("rescalenet"):
        with torch.no_grad():
            rescalenet.calibrate(model, (batch(args)[0] for _ in range(8)))
        model.set_fused_forward(name == "rescalenet50")
    model.train()
    return model, opt


def batch(args):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
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
    rn, _ = build("rescalenet50", args)
    rn.eval()
    bn = create_baseline("resnet50", num_classes=args.classes).to(args.device)
    if args.channels_last:
        bn.to(memory_format=torch.channels_last)
    bn = fold_batchnorm(bn)
    models = {"rescalenet50 (fused eval forward)": rn,
              "rescalenet50 (fold_for_inference)": rescalenet.fold_for_inference(rn),
              "resnet50 (BN folded)": bn}
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
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
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
    names = [n for n in args.models.split(",") if n]
    bad = [n for n in names if n not in MODELS]
    if bad or "resnet50" not in names:
        p.error(f"--models: unknown {bad}; resnet50 (the reference) must be included")
    if "nf_resnet50" in names:
        try:
            import timm  # noqa: F401
        except ImportError:
            print("timm is not installed: skipping nf_resnet50")
            names.remove("nf_resnet50")

    speed = time_training(names, args)
    mem = {n: measure_memory(n, args) for n in names} if not args.no_memory else {}
    ref_s, ref_m = speed["resnet50"], mem.get("resnet50")
    rows = []
    for n in names:
        row = [MODELS[n], f"{speed[n]:.2f}", f"{speed[n] / ref_s:.3f}"]
        if mem:
            row += [f"{mem[n]:.0f}", f"{mem[n] / ref_m:.3f}"]
        if "nf_resnet50" in speed:
            row.append(f"{speed[n] / speed['nf_resnet50']:.3f}")
        rows.append(row)
    header = ["model", "train img/s", "x BN"]
    if mem:
        header += ["peak MiB", "mem x BN"]
    if "nf_resnet50" in speed:
        header.append("x NF")
    body = (f"Training step (forward + backward + SGD), batch {args.batch}, {args.size}x{args.size}, "
            f"{'bf16 autocast' if args.amp else 'fp32'}{', channels-last' if args.channels_last else ''}, "
            f"{args.device}, {args.clock} clock, median of {args.rounds} interleaved rounds of {args.steps} steps:\n\n" + table(header, rows))
    if not args.no_inference:
        inf = time_inference(args)
        ref = inf["resnet50 (BN folded)"]
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
