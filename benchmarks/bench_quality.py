"""Quality at small scale: top-1 of RescaleNet-50 against BN, GroupNorm, Fixup and
SkipInit ResNet-50 on a generated task, same data, schedule, budget and seeds.

    python benchmarks/bench_quality.py                    # defaults: about 25 minutes on 2 idle cores
    python benchmarks/bench_quality.py --steps 600 --seeds 0 1 2

Task: ``rescalenet.data.tensor_dataset(hard=True)``: 8 shape classes, random colour,
size, position and rotation, colour-gradient background, Gaussian noise and two
distractor strokes; ``--train`` training and ``--test`` test images at ``--size``
pixels (different generator seeds). Every model gets the same ``--steps`` SGD steps
(momentum 0.9, lr ``--lr`` with a linear warm-up then cosine, weight decay 1e-4
in each method's official groups), the same batches per seed, random flips.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import append_result, table  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import rescalenet  # noqa: E402
from rescalenet.baselines import baseline_param_groups, create_baseline  # noqa: E402
from rescalenet.data import tensor_dataset  # noqa: E402

METHODS = {
    "rescalenet50": "RescaleNet-50",
    "resnet50": "ResNet-50 BN",
    "gn_resnet50": "ResNet-50 GN",
    "fixup_resnet50": "Fixup-50",
    "skipinit_resnet50": "SkipInit-50",
}


def train_eval(name, seed, data, args):
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    if name.startswith("rescalenet"):
        model = rescalenet.create_model(name, num_classes=8)
        groups = rescalenet.param_groups(model, 1e-4, lr=args.lr)
    else:
        model = create_baseline(name, num_classes=8)
        groups = baseline_param_groups(model, name, args.lr, 1e-4)
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        r = (step + 1) / args.warmup if step < args.warmup else \
            0.5 * (1 + math.cos(math.pi * (step - args.warmup) / (args.steps - args.warmup)))
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * r
        idx = torch.randint(0, xtr.shape[0], (args.batch,), generator=gen)
        x = xtr[idx]
        flip = torch.rand(args.batch, generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        loss = F.cross_entropy(model(x), ytr[idx])
        if not torch.isfinite(loss):
            return float("nan"), time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 256):
            correct += (model(xte[i:i + 256]).argmax(1) == yte[i:i + 256]).sum().item()
    return 100.0 * correct / xte.shape[0], elapsed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=300, help="SGD steps per run (60 left every method at chance)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--train", type=int, default=2048)
    p.add_argument("--test", type=int, default=1024)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.methods.split(",") if n]
    bad = [n for n in names if n not in METHODS]
    if bad:
        p.error(f"unknown methods {bad}; choose from {list(METHODS)}")
    xtr, ytr = tensor_dataset(args.train, args.size, 8, seed=1000, hard=True)
    xte, yte = tensor_dataset(args.test, args.size, 8, seed=2000, hard=True)
    data = (xtr, ytr, xte, yte)
    acc = {n: [] for n in names}
    secs = {n: [] for n in names}
    for seed in args.seeds:
        for n in names:
            a, s = train_eval(n, seed, data, args)
            acc[n].append(a)
            secs[n].append(s)
            print(f"seed {seed} {n}: top-1 {a:.1f}% ({s:.0f} s)", flush=True)
    rows = []
    for n in names:
        vals = acc[n]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append([METHODS[n], " / ".join(f"{v:.1f}" for v in vals), f"{statistics.mean(vals):.1f} ± {sd:.1f}",
                     f"{statistics.mean(secs[n]):.0f}"])
    body = (f"Generated shapes (hard), 8 classes (chance 12.5%), {args.size}x{args.size}, {args.train} train / "
            f"{args.test} test images; {args.steps} steps of batch {args.batch}, SGD lr {args.lr}, warm-up "
            f"{args.warmup} + cosine, wd 1e-4; seeds {args.seeds}:\n\n"
            + table(["model", "top-1 per seed (%)", "mean ± sd", "train s/run"], rows))
    print(body)
    if not args.no_append:
        append_result("Quality at small scale", body)


if __name__ == "__main__":
    main()
