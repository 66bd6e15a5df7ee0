"""Diagnostics of a RescaleNet, as the paper's reviewers asked, as PNG plots.

    python -m rescalenet.diagnostics --arch rescalenet50 --output diag/          # fresh model
    python -m rescalenet.diagnostics --checkpoint runs/train/last.pth --data /path/imagenet --output diag/

Writes, in ``--output``:

* ``variance.png``: variance of every residual block's output, at init, for
  RescaleNet, the same network as a plain residual net without normalization and
  as a BatchNorm ResNet (torchvision), plus the trained RescaleNet when a
  checkpoint is given;
* ``contribution.png``: each block's share of the variance of its stage's output,
  ``Var(m_k/sqrt(L) F_k) * prod_{later j in the stage} alpha_j^2 / Var(stage output)``
  (the method's condition 2, equal contributions, measured stage by stage);
* ``dead_relu.png``: fraction of dead ReLU channels (zero for every image and
  position of an evaluation batch) against the number of batches and the batch
  size used to calibrate the AddBias means (0 batches: no mean subtraction);
* ``multipliers.png``: the learned branch multipliers ``m_k`` per block;
* ``diagnostics.json``: the numbers behind the plots.

Images: the validation split of ``--data`` (ImageFolder), else the generated
shapes of :mod:`rescalenet.data`. matplotlib is imported only here.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from . import MODEL_BUILDERS, calibrate, create_model, reset_calibration
from .baselines import accepts, create_baseline, is_baseline
from .layers import AddBias
from .blocks import RescaleBlock
from .resnet import RescaleNet
from .training import load_training_checkpoint


def _stages(model: nn.Module) -> List[nn.Sequential]:
    return [getattr(model, f"layer{i}") for i in range(1, 9) if hasattr(model, f"layer{i}")]


def _blocks(model: nn.Module) -> List[nn.Module]:
    return [b for s in _stages(model) for b in s]


@torch.no_grad()
def block_variances(model: nn.Module, x: Tensor) -> List[float]:
    """Variance of every residual block's output on ``x`` (hooks on the blocks)."""
    out: List[float] = []
    hooks = [b.register_forward_hook(lambda m, i, o: out.append(o.double().var().item())) for b in _blocks(model)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return out


@torch.no_grad()
def block_shares(model: RescaleNet, x: Tensor) -> List[float]:
    """Each block's share of the variance of its stage's output:
    ``Var(m_k / sqrt(L) * F_k) * prod_{later j in the stage} alpha_j**2 / Var(stage output)``
    (the method's equal-contribution condition, measured stage by stage, since the
    pooled downsample shortcuts between stages change the variance)."""
    branch_var: List[float] = []
    stage_var: List[float] = []

    def on_rescale(m, inp, o):
        w = torch.as_tensor(m.branch_weight()).to(inp[1].device)
        w = w.view(-1, 1, 1) if w.numel() > 1 else w
        branch_var.append((inp[1] * w).double().var().item())

    def on_stage(m, i, o):  # returns None: a returned value would replace the output
        stage_var.append(o.double().var().item())

    stages = _stages(model)
    hooks = [b.rescale.register_forward_hook(on_rescale) for s in stages for b in s]
    hooks += [s[-1].register_forward_hook(on_stage) for s in stages]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    shares, k = [], 0
    for s, v_out in zip(stages, stage_var):
        alphas = [b.rescale.shortcut_scale for b in s]
        for j in range(len(s)):
            later = 1.0
            for a in alphas[j + 1:]:
                later *= a * a
            shares.append(branch_var[k] * later / v_out)
            k += 1
    return shares


@torch.no_grad()
def dead_relu_fraction(model: nn.Module, x: Tensor) -> float:
    """Fraction of ReLU output channels (over all blocks' ReLU calls) that are zero
    for every image and position of ``x``."""
    dead, total = [0], [0]

    def hook(m, i, o):
        alive = o.detach().amax(dim=(0, 2, 3)) > 0
        dead[0] += int((~alive).sum())
        total[0] += alive.numel()

    hooks = [m.register_forward_hook(hook) for b in _blocks(model) for m in b.modules() if isinstance(m, nn.ReLU)]
    try:
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return dead[0] / max(total[0], 1)


def _baseline_name(arch: str) -> Optional[str]:
    """The BN baseline of the same layout (``rescalenet18`` -> ``resnet18``,
    ``rescalenet_cifar20`` -> ``resnet_cifar20``), if one is registered."""
    name = arch.replace("rescalenet", "resnet", 1)
    return name if is_baseline(name) and is_baseline("plain_" + name) else None


def load_images(data: Optional[str], n: int, size: int, seed: int = 0,
                train_args: Optional[Dict] = None) -> Tensor:
    """``n`` images of ``data``'s ``val/`` split (the whole folder if it has none), with the
    eval transform of the run that wrote the checkpoint (``train_args``: its ``args``:
    image size, channels, mean and std), else an ImageNet-style one at ``size``; without
    ``data``, the generated shapes of :mod:`rescalenet.data`."""
    if data:
        from .training import image_folder, image_transform

        a = train_args or {}
        tf = image_transform(False, a.get("img_size", size), val_resize=a.get("val_resize"),
                             in_chans=a.get("in_chans", 3), mean=a.get("mean"), std=a.get("std"))
        folder = os.path.join(data, "val") if os.path.isdir(os.path.join(data, "val")) else data
        ds = image_folder(folder, tf, "--data")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(ds), generator=g)[:n].tolist()
        return torch.stack([ds[i][0] for i in idx])
    from .data import tensor_dataset

    return tensor_dataset(n, size, seed=seed, hard=True)[0]


def run(args) -> Dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(args.output, exist_ok=True)
    torch.manual_seed(args.seed)
    ckpt = load_training_checkpoint(args.checkpoint) if args.checkpoint else None
    arch = ckpt["arch"] if ckpt else args.arch
    if arch not in MODEL_BUILDERS:
        raise SystemExit(f"rescalenet.diagnostics: error: {arch!r} is not a RescaleNet ({sorted(MODEL_BUILDERS)})")
    kwargs = dict(ckpt.get("model_kwargs", {})) if ckpt else {}
    kwargs.setdefault("num_classes", 10)
    train_args = ckpt.get("args", {}) if ckpt else {}
    in_chans = kwargs.get("in_chans", 3)
    n_calib = max(args.calib_batches)
    # an evaluation batch, then a pool for the calibrations (8 batches for the fresh model)
    pool_size = max(8 * args.batch, max(args.calib_sizes) * n_calib)
    x_all = load_images(args.data, args.batch + pool_size, args.size, args.seed, train_args)
    x = x_all[: args.batch]  # evaluation batch
    pool = x_all[args.batch:]

    fresh = create_model(arch, **kwargs)
    calibrate(fresh, [pool[i * args.batch:(i + 1) * args.batch] for i in range(8)])
    fresh.eval()
    results: Dict = {"arch": arch, "checkpoint": args.checkpoint, "images": args.data or "generated shapes",
                     "size": args.size, "batch": args.batch}
    curves = {"RescaleNet (init)": block_variances(fresh, x)}
    base = _baseline_name(arch)
    if base:
        extra = dict(in_chans=in_chans) if accepts(base, "in_chans") else {}
        if in_chans == 3 or extra:
            plain = create_baseline("plain_" + base, num_classes=kwargs["num_classes"], **extra).eval()
            curves["plain residual, no norm (init)"] = block_variances(plain, x)
            bn = create_baseline(base, num_classes=kwargs["num_classes"], **extra).train()  # batch statistics
            curves["BatchNorm ResNet (init)"] = block_variances(bn, x)
    trained = None
    if ckpt:
        trained = create_model(arch, **kwargs)
        trained.load_state_dict(ckpt["state_dict"])
        trained.eval()
        curves["RescaleNet (trained)"] = block_variances(trained, x)
    results["block_variance"] = curves

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, v in curves.items():
        ax.semilogy(range(1, len(v) + 1), v, marker="o", ms=3, label=name)
    ax.set_xlabel("residual block")
    ax.set_ylabel("output variance")
    ax.set_title(f"{arch}: per-block output variance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.output, "variance.png"), dpi=120)
    plt.close(fig)

    shares = {"init": block_shares(fresh, x)}
    if trained is not None:
        shares["trained"] = block_shares(trained, x)
    results["block_share"] = shares
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(shares)
    for j, (name, v) in enumerate(shares.items()):
        ax.bar([i + 1 + (j - (len(shares) - 1) / 2) * width for i in range(len(v))], v, width, label=name)
    L = len(shares["init"])
    ax.axhline(1 / (2 * L - 1), color="k", ls="--", lw=1, label="1/(2L-1) (equal shares over the whole net)")
    ax.set_xlabel("residual block")
    ax.set_ylabel("share of its stage's output variance")
    ax.set_title(f"{arch}: each block's contribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.output, "contribution.png"), dpi=120)
    plt.close(fig)

    dead: Dict[str, List[float]] = {}
    model = create_model(arch, **kwargs)
    for bs in args.calib_sizes:
        row = []
        for nb in [0] + list(args.calib_batches):
            reset_calibration(model)
            for m in model.modules():
                if isinstance(m, AddBias):
                    m.calibration_steps = nb  # 0: no mean subtraction
            if nb:
                calibrate(model, [pool[i * bs:(i + 1) * bs] for i in range(nb)])
            row.append(dead_relu_fraction(model, x))
        dead[f"batch {bs}"] = row
    results["dead_relu"] = {"calibration_batches": [0] + list(args.calib_batches), "fraction": dead}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, v in dead.items():
        ax.plot([0] + list(args.calib_batches), v, marker="o", label=f"calibration {name}")
    if trained is not None:
        results["dead_relu"]["trained"] = dead_relu_fraction(trained, x)
        ax.axhline(results["dead_relu"]["trained"], color="k", ls="--", lw=1, label="the trained model")
    ax.set_xlabel("calibration batches (0: no mean subtraction)")
    ax.set_ylabel("dead ReLU channels (fraction)")
    ax.set_title(f"{arch}: dead ReLUs at init vs AddBias calibration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.output, "dead_relu.png"), dpi=120)
    plt.close(fig)

    src = trained if trained is not None else fresh
    # per block: m_k (scalar), or the mean and range over channels (vector)
    stats = []
    for b in _blocks(src):
        v = b.rescale._scale.detach().float() if b.rescale._scale is not None else torch.ones(1)
        stats.append((v.mean().item(), v.min().item(), v.max().item()))
    results["multipliers"] = [m for m, _, _ in stats]
    results["multiplier_range"] = [[lo, hi] for _, lo, hi in stats]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    blocks_x = range(1, len(stats) + 1)
    ax.bar(blocks_x, [m for m, _, _ in stats])
    if src.multiplier == "vector":
        ax.errorbar(blocks_x, [m for m, _, _ in stats], yerr=[[m - lo for m, lo, _ in stats],
                    [hi - m for m, _, hi in stats]], fmt="none", ecolor="k", lw=1, label="min-max over channels")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="init")
    ax.set_xlabel("residual block")
    ax.set_ylabel("m_k" + (" (mean over channels)" if src.multiplier == "vector" else ""))
    ax.set_title(f"{arch}: learned branch multipliers" + ("" if trained is not None else " (fresh model)"))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.output, "multipliers.png"), dpi=120)
    plt.close(fig)

    with open(os.path.join(args.output, "diagnostics.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(prog="python -m rescalenet.diagnostics", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="", help="a checkpoint written by rescalenet.train")
    p.add_argument("--arch", default="rescalenet50", help="for a fresh model (ignored with --checkpoint)")
    p.add_argument("--data", default="", help="ImageFolder root (its val/ split; with --checkpoint read with the "
                   "checkpoint's image size, channels, mean and std); default: generated shapes")
    p.add_argument("--output", default="diagnostics")
    p.add_argument("--size", type=int, default=64, help="image resolution")
    p.add_argument("--batch", type=int, default=16, help="evaluation batch size")
    p.add_argument("--calib-batches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--calib-sizes", type=int, nargs="+", default=[2, 8, 32])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.checkpoint and not os.path.isfile(args.checkpoint):
        p.error(f"--checkpoint {args.checkpoint!r} does not exist")
    if min(args.calib_batches) < 1 or min(args.calib_sizes) < 1:
        p.error("--calib-batches and --calib-sizes must be >= 1")
    res = run(args)
    print(f"wrote variance.png, contribution.png, dead_relu.png, multipliers.png, diagnostics.json to {args.output}")
    return res


if __name__ == "__main__":
    main()
