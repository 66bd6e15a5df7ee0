"""Why the plain residual network (no normalization, nothing else) stays at chance on
Fashion-MNIST, and what lets it train: the first steps of SGD, printed.

    python benchmarks/plain_collapse.py                      # about 3 minutes on one core
    python benchmarks/plain_collapse.py --arch plain_resnet18 --size 32
    # the depth table's setting (bench_fashion --group depth: batch 32, lr 0.05, 6 warm-up steps)
    python benchmarks/plain_collapse.py --arch skipinit_resnet_cifar1202 --batch 32 --settings 0.05 \
        --warmup 6 --schedule-steps 120 --steps 16 --every 1

For each setting it prints, every few steps, the training loss, the standard deviation
of the logits over the batch and classes, and the global gradient norm (before any
clipping), on the real training images with the benchmark's augmentation and the
official recipe's optimizer (SGD 0.9, weight decay 1e-4, constant lr: no warm-up, so the
first steps show what the initialization hands the optimizer; ``--warmup`` and
``--schedule-steps`` replay the trainer's schedule instead: its linear warm-up, then cosine
over a run of that many steps), and the sum and largest absolute value of the network's scalar parameters (the
residual gains of SkipInit, Fixup and RescaleNet; none in the plain net). At init the plain
network's features share a common positive mean ~20x their differences between images
(``relu(x + F(x))`` doubles the variance of each block and keeps every value positive),
so its first logits and gradients are huge; a net that collapses ends with logits of
near-zero spread (every image gets the class prior) and a vanishing gradient, which no
later step undoes.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, seeded_batches, table  # noqa: E402

from rescalenet.baselines import create_baseline  # noqa: E402
from rescalenet.training.schedule import WarmupSchedule  # noqa: E402


BATCH = 128  # bench_fashion's
SETTINGS = ("0.003", "0.02", "0.02:1")  # lr[:gradient norm clip]


def run(arch: str, size: int, data: str, lr: float, clip: float, steps: int, seed: int, every: int,
        batch: int = BATCH, warmup: int = 0, schedule_steps: int = 0):
    torch.manual_seed(seed)
    batches = seeded_batches(data, size, seed, batch)
    model = create_baseline(arch, num_classes=10, in_chans=1, drop_conv=0.03, drop_fc=0.3)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    # the trainer's schedule; without schedule_steps the lr stays constant after the warm-up
    schedule = WarmupSchedule(optimizer, schedule_steps or steps, 1, 0, "cosine" if schedule_steps else "step",
                              milestones=(), warmup_steps=warmup)
    scalars = [q for q in model.parameters() if q.numel() == 1]
    rows = []
    for step in range(steps):
        schedule.step()
        x, y = next(batches)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip else float("inf"))
        optimizer.step()
        if step % every == 0 or step == steps - 1:
            rows.append([step, f"{loss.item():.3f}", f"{logits.std().item():.3g}", f"{norm.item():.3g}",
                         f"{sum(q.abs().item() for q in scalars):.3g}" if scalars else "-",
                         f"{max(q.abs().item() for q in scalars):.3g}" if scalars else "-"])
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="plain_resnet_cifar20")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--data", default=os.path.join(ROOT, "data", "fashion_mnist"),
                   help="the ImageFolder copy written by `make data`")
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), metavar="LR[:CLIP]",
                   help="the runs, each an lr and optionally a gradient-norm clip (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (default: none)")
    p.add_argument("--schedule-steps", type=int, default=0,
                   help="cosine decay as in a trainer run of this many steps (default: constant lr)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--every", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "train")):
        raise SystemExit(f"plain_collapse: {os.path.join(args.data, 'train')!r} is missing: run `make data` "
                         "(Fashion-MNIST from Debian's dataset-fashion-mnist) or pass --data DIR")
    try:
        settings = [(float(lr), float(clip or 0)) for lr, _, clip in (x.partition(":") for x in args.settings)]
    except ValueError:
        p.error(f"--settings {args.settings}: each must be LR or LR:CLIP, numbers")
    torch.set_num_threads(args.threads)
    for lr, clip in settings:
        print(f"\n{args.arch}, batch {args.batch}, lr {lr:g}" + (f" after {args.warmup} warm-up steps" if args.warmup
              else "") + ", " + (f"gradient norm clipped to {clip:g}" if clip else "no clipping"))
        print(table(["step", "loss", "logit std", "gradient norm", "sum of abs(scalar params) after the step",
                     "max abs(scalar param)"],
                    run(args.arch, args.size, args.data, lr, clip, args.steps, args.seed, args.every,
                        args.batch, args.warmup, args.schedule_steps)), flush=True)


if __name__ == "__main__":
    main()
