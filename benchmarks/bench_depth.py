"""Trainability against depth without normalization: a plain residual network
(``relu(x + F(x))``, He init) against RescaleNet blocks, same depth, data, learning
rate and steps. Does the loss fall, explode or stall?

    python benchmarks/bench_depth.py                       # depths 50, 200, 1001
    python benchmarks/bench_depth.py --depths 50 200 1001 2000 --steps 60

Networks: ``rescalenet.baselines.NarrowResNet`` (one stage of bottlenecks of width
16, 64 channels, ``depth = 3 * blocks + 2`` layers), so depth is the only thing
that changes and 1000+ layers train in minutes on a CPU. Data: the generated
shapes of ``rescalenet.data`` (``--size`` pixels, 8 classes). SGD, momentum 0.9,
constant ``--lr`` after a ``--warmup``-step linear warm-up, no weight decay.
Verdict: ``explodes`` (a non-finite loss, or above 10x the first), ``falls`` (mean
of the last 5 losses below 0.9x the first), else ``stalls``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import append_result, table  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rescalenet import param_groups  # noqa: E402
from rescalenet.baselines import create_baseline  # noqa: E402
from rescalenet.data import tensor_dataset  # noqa: E402


def run_one(kind: str, depth: int, x, y, args):
    torch.manual_seed(args.seed)
    model = create_baseline(f"narrow_{kind}_d{depth}", num_classes=8)
    groups = param_groups(model, 0.0) if kind == "rescale" else [dict(params=list(model.parameters()))]
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    losses = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        for grp in opt.param_groups:
            grp["lr"] = args.lr * min(1.0, (step + 1) / max(args.warmup, 1))
        idx = torch.randint(0, x.shape[0], (args.batch,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        losses.append(loss.item())
        if not math.isfinite(losses[-1]) or losses[-1] > 10 * losses[0]:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    elapsed = (time.perf_counter() - t0) / len(losses)
    first, last = losses[0], sum(losses[-5:]) / len(losses[-5:])
    if not all(math.isfinite(v) for v in losses) or max(losses) > 10 * first:
        verdict = f"explodes (step {len(losses) - 1})"
    elif last < 0.9 * first:
        verdict = "falls"
    else:
        verdict = "stalls"
    return first, last, verdict, elapsed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[50, 200, 1001])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=12)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = tensor_dataset(1024, args.size, num_classes=8, seed=args.seed, hard=False)
    rows = []
    for depth in args.depths:
        for kind in ("plain", "rescale"):
            first, last, verdict, sec = run_one(kind, depth, x, y, args)
            name = "plain residual" if kind == "plain" else "RescaleNet"
            rows.append([depth, name, f"{first:.3g}", f"{last:.3g}", verdict, f"{sec:.2f}"])
            print(rows[-1], flush=True)
    body = (f"Trainability vs depth, no normalization: narrow bottleneck nets (64 channels), generated shapes "
            f"{args.size}x{args.size}, 8 classes (chance loss 2.08), batch {args.batch}, SGD lr {args.lr} "
            f"(warm-up {args.warmup} steps), {args.steps} steps, seed {args.seed}:\n\n"
            + table(["layers", "network", "first loss", "last-5 mean loss", "verdict", "s/step"], rows))
    print(body)
    if not args.no_append:
        append_result("Trainability with depth", body)


if __name__ == "__main__":
    main()
