"""Why RescaleNet-20 diverges at learning rates BatchNorm trains at, on Fashion-MNIST: the
first steps of the benchmark's schedule, printed.

    python benchmarks/lr_ceiling.py                    # about 5 minutes on one idle core
    python benchmarks/lr_ceiling.py --runs rescalenet_cifar20:0.2 resnet_cifar20:0.4 --steps 60
    python benchmarks/lr_ceiling.py --runs rescalenet_cifar20:0.2 --freeze-scalars   # the weights alone

Each run (``ARCH:LR[:CLIP]``) builds the model and optimizer as ``python -m rescalenet.train``
does for ``benchmarks/bench_fashion.py`` (its parameter groups, SGD 0.9, weight decay 1e-4,
Dropout2d 0.03 / dropout 0.3, the trainer's ``WarmupSchedule``: a linear warm-up over 21
steps to LR then cosine over the 421-step epoch, padded crop + flip, batch 128), on the real training images in a seeded
order (not the trainer's loader: the step at which a run blows up can differ from the
benchmark's), and prints every few steps: the training loss, the global gradient norm
(before any clipping), and the largest relative update of one convolution's weights in
that step, ``||W_new - W_old|| / ||W_old||``, with the layer's name (layers whose weights
are all zero, as Fixup's at init, have no ratio and are left out). A run stops at the
first non-finite loss. ``--freeze-scalars`` keeps every parameter with at most one
dimension at its init (RescaleNet's multipliers and AddBias biases, the convs' and the
classifier's biases): does a run still blow up when only the weight matrices move?
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, seeded_batches, table  # noqa: E402

from rescalenet.train import RESCALENETS, build_model, build_param_groups  # noqa: E402
from rescalenet.training import WarmupSchedule  # noqa: E402

EPOCH_STEPS, WARMUP_STEPS, BATCH = 421, 21, 128  # bench_fashion's budget


def run(arch: str, lr: float, clip: float, data: str, steps: int, seed: int, every: int, freeze_scalars: bool):
    torch.manual_seed(seed)
    batches = seeded_batches(data, 28, seed, BATCH)
    kwargs = dict(num_classes=10, in_chans=1, drop_conv=0.03, drop_fc=0.3)
    model = build_model(arch, **kwargs)
    if freeze_scalars:
        for p in model.parameters():
            if p.dim() <= 1:
                p.requires_grad_(False)
    groups = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in build_param_groups(model, arch, lr, 1e-4)]
    optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=0.9, weight_decay=1e-4)
    # the trainer's schedule with bench_fashion's flags (--epochs 1 --schedule cosine --warmup-steps 21)
    schedule = WarmupSchedule(optimizer, EPOCH_STEPS, 1, 0, "cosine", warmup_steps=WARMUP_STEPS)
    convs = {n: m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    rows = []
    model.train()
    for step in range(steps):
        schedule.step()
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            rows.append([step, f"{loss.item()}", "-", "-", "(stopped: non-finite loss)"])
            break
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip else float("inf"))
        before = {n: w.detach().clone() for n, w in convs.items()}
        optimizer.step()
        rel = {n: ((w.detach() - before[n]).norm() / before[n].norm()).item()
               for n, w in convs.items() if before[n].norm() > 0}  # (Fixup's zero-init layers: no ratio)
        worst = max(rel, key=rel.get)
        if step % every == 0 or step == steps - 1:
            rows.append([step, f"{loss.item():.3f}", f"{norm.item():.3g}", f"{rel[worst]:.3g}", worst])
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", metavar="ARCH:LR[:CLIP]",
                   default=["rescalenet_cifar20:0.1", "rescalenet_cifar20:0.2", "resnet_cifar20:0.4",
                            "rescalenet_cifar20:0.4:1"])
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion_mnist"),
                   help="the ImageFolder copy written by `make data`")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--freeze-scalars", action="store_true",
                   help="train only the parameters with two or more dimensions (weights)")
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "train")):
        raise SystemExit(f"lr_ceiling: {os.path.join(args.data, 'train')!r} is missing: run `make data` "
                         "(Fashion-MNIST from Debian's dataset-fashion-mnist) or pass --data DIR")
    runs = []
    for spec in args.runs:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise SystemExit(f"lr_ceiling: {spec!r} is not ARCH:LR or ARCH:LR:CLIP")
        try:
            runs.append((parts[0], float(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0))
        except ValueError:
            raise SystemExit(f"lr_ceiling: {spec!r}: LR and CLIP must be numbers") from None
    torch.set_num_threads(args.threads)
    for arch, lr, clip in runs:
        kind = "RescaleNet" if arch in RESCALENETS else "baseline"
        print(f"\n{arch} ({kind}), peak lr {lr:g}, " + (f"gradient norm clipped to {clip:g}" if clip else "no clipping")
              + (", scalars frozen" if args.freeze_scalars else ""))
        print(table(["step", "loss", "gradient norm", "largest relative conv update", "in layer"],
                    run(arch, lr, clip, args.data, args.steps, args.seed, args.every, args.freeze_scalars)),
              flush=True)


if __name__ == "__main__":
    main()
