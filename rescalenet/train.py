"""Train RescaleNet (or a baseline) on an ImageFolder dataset with the official recipe.

    python -m rescalenet.train --data /path/to/imagenet --arch rescalenet50
    torchrun --nproc_per_node 8 -m rescalenet.train --data /path/to/imagenet --arch rescalenet50 \\
        --batch-size 128 --amp --channels-last

``--data`` holds ``train/`` and ``val/`` in the ImageFolder layout (one folder per
class). The recipe (``docs/method.md`` section 1.8): SGD with momentum 0.9, lr
0.1 x global batch / 256, a 5-epoch linear warm-up, then ``--epochs`` (100) epochs
of step decay (x0.1 at 30/60/90 epochs counted after the warm-up) or cosine;
weight decay 1e-4 except on AddBias biases and branch multipliers; Dropout2d 0.03
in stages 3-4 and dropout 0.3 before the classifier, or ``--mixup ALPHA`` with no
dropout. The first training batches calibrate the AddBias means (8 steps), as in
the official code; a resumed run never recalibrates.

Checkpoints (``OUTPUT/last.pth`` every epoch, ``OUTPUT/best.pth`` at the best
validation top-1) are dicts loadable with ``torch.load(path, weights_only=True)``::

    {'state_dict': model.state_dict(),     # no 'module.' prefix; AddBias buffers included
     'arch': 'rescalenet50', 'model_kwargs': {...}, 'epoch': epochs done (warm-up included),
     'optimizer': ..., 'scheduler': {'step': n}, 'scaler': ... or None,
     'best_acc1': float, 'classes': [...], 'args': {...}}

``state_dict`` loads into ``rescalenet.create_model(arch, **model_kwargs)`` and, with
``strict=False`` (no head), into the detection and video backbones.

Logs: ``OUTPUT/log.csv`` (one row per epoch) and TensorBoard events in ``OUTPUT/tb``.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import MODEL_BUILDERS, create_model, is_calibrated, param_groups
from .baselines import baseline_param_groups, create_baseline, is_baseline, list_baselines
from .layers import AddBias

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- arguments --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rescalenet.train",
        description="Train RescaleNet or a baseline on an ImageFolder dataset (official recipe).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset root holding train/ and val/ (ImageFolder layout)")
    p.add_argument("--train-dir", default="train")
    p.add_argument("--val-dir", default="val", help="'' to skip validation")
    p.add_argument("--arch", default="rescalenet50",
                   help="a RescaleNet (%s) or a baseline (see rescalenet.baselines)" % ", ".join(sorted(MODEL_BUILDERS)))
    p.add_argument("--multiplier", default="scalar", choices=["scalar", "vector", "none"],
                   help="RescaleNet branch multiplier")
    p.add_argument("--output", default="runs/train", help="checkpoints and logs")
    p.add_argument("--epochs", type=int, default=100, help="epochs AFTER the warm-up (official: 100)")
    p.add_argument("--warmup-epochs", type=int, default=5, help="linear warm-up epochs")
    p.add_argument("--schedule", default="step", choices=["step", "cosine"])
    p.add_argument("--milestones", type=int, nargs="*", default=[30, 60, 90],
                   help="step decay epochs, counted after the warm-up")
    p.add_argument("--gamma", type=float, default=0.1, help="step decay factor")
    p.add_argument("-b", "--batch-size", type=int, default=256, help="images per process and step")
    p.add_argument("--lr", type=float, default=None, help="peak lr (default: --base-lr x global batch / 256)")
    p.add_argument("--base-lr", type=float, default=0.1, help="lr per 256 images")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=1e-4)
    p.add_argument("--drop-conv", type=float, default=None, help="Dropout2d in stages 3-4 (default 0.03, 0 with mixup)")
    p.add_argument("--drop-fc", type=float, default=None, help="dropout before the classifier (default 0.3, 0 with mixup)")
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="mixup alpha (0: off)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--val-resize", type=int, default=None, help="validation resize (default img-size / 0.875)")
    p.add_argument("-j", "--workers", type=int, default=8, help="data loading workers per process")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 autocast; fp16 + loss scaling with --amp-dtype fp16)")
    p.add_argument("--amp-dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm for BN baselines under torchrun")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default="", help="checkpoint to resume from; 'auto' = OUTPUT/last.pth if it exists")
    p.add_argument("--evaluate", action="store_true", help="only evaluate (with --resume or --weights)")
    p.add_argument("--weights", default="", help="initial model weights (a checkpoint written by this script)")
    p.add_argument("--limit-train-batches", type=int, default=0, help="cap the steps per epoch (0: all)")
    p.add_argument("--print-freq", type=int, default=50)
    p.add_argument("--progress", choices=["auto", "tqdm", "plain"], default="auto",
                   help="progress display: tqdm bar (auto when installed and on a terminal) or plain lines")
    p.add_argument("--no-tensorboard", action="store_true")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Clear errors for bad arguments, before anything expensive happens."""
    errors = []
    if not (args.arch in MODEL_BUILDERS or is_baseline(args.arch)):
        errors.append(f"--arch {args.arch!r} is unknown; choose from {sorted(MODEL_BUILDERS) + list_baselines()}")
    if not os.path.isdir(args.data):
        errors.append(f"--data {args.data!r} is not a directory")
    else:
        for sub in [args.train_dir] + ([args.val_dir] if args.val_dir else []):
            if not os.path.isdir(os.path.join(args.data, sub)):
                errors.append(f"--data {args.data!r} has no {sub}/ folder (ImageFolder layout: DATA/{sub}/CLASS/IMAGE)")
    if args.epochs < 1:
        errors.append(f"--epochs must be >= 1, got {args.epochs}")
    if args.warmup_epochs < 0:
        errors.append(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    if args.batch_size < 1:
        errors.append(f"--batch-size must be >= 1, got {args.batch_size}")
    if list(args.milestones) != sorted(args.milestones) or any(m <= 0 for m in args.milestones):
        errors.append(f"--milestones must be increasing positive epochs, got {args.milestones}")
    for name in ("drop_conv", "drop_fc"):
        v = getattr(args, name)
        if v is not None and not 0.0 <= v < 1.0:
            errors.append(f"--{name.replace('_', '-')} must be in [0, 1), got {v}")
    if args.mixup < 0:
        errors.append(f"--mixup alpha must be >= 0, got {args.mixup}")
    if args.lr is not None and args.lr <= 0:
        errors.append(f"--lr must be > 0, got {args.lr}")
    if args.img_size < 8:
        errors.append(f"--img-size must be >= 8, got {args.img_size}")
    if args.evaluate and not (args.resume or args.weights):
        errors.append("--evaluate needs --resume or --weights")
    if args.evaluate and not args.val_dir:
        errors.append("--evaluate needs a validation folder (--val-dir)")
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        errors.append(f"--device {args.device}: CUDA is not available")
    if errors:
        raise SystemExit("rescalenet.train: error: " + "\n  ".join(errors))
    # mixup replaces dropout in the official recipes
    default_drop = 0.0 if args.mixup > 0 else None
    if args.drop_conv is None:
        args.drop_conv = default_drop if default_drop is not None else 0.03
    if args.drop_fc is None:
        args.drop_fc = default_drop if default_drop is not None else 0.3


# -- distributed ------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Use an existing process group, or start one under torchrun (WORLD_SIZE > 1):
    NCCL on GPUs, gloo on the CPU."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local, owns_group=True)


# -- data -------------------------------------------------------------------------
def build_datasets(args):
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(args.img_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        normalize,
    ])
    resize = args.val_resize or int(round(args.img_size / 0.875))
    val_tf = transforms.Compose([
        transforms.Resize(resize),
        transforms.CenterCrop(args.img_size),
        transforms.ToTensor(),
        normalize,
    ])
    train = datasets.ImageFolder(os.path.join(args.data, args.train_dir), train_tf)
    val = datasets.ImageFolder(os.path.join(args.data, args.val_dir), val_tf) if args.val_dir else None
    if val is not None and val.classes != train.classes:
        raise SystemExit(f"rescalenet.train: error: train/ and val/ have different classes "
                         f"({len(train.classes)} vs {len(val.classes)})")
    return train, val


def build_loaders(args, train_set, val_set, d: Dist, pin: bool):
    from torch.utils.data import DataLoader, Subset
    from torch.utils.data.distributed import DistributedSampler

    if len(train_set) < args.batch_size * d.world_size:
        raise SystemExit(f"rescalenet.train: error: {len(train_set)} training images are fewer than one "
                         f"global batch ({args.batch_size} x {d.world_size} processes)")
    sampler = DistributedSampler(train_set, d.world_size, d.rank, shuffle=True, seed=args.seed,
                                 drop_last=True) if d.enabled else None
    g = torch.Generator().manual_seed(args.seed)
    train = DataLoader(train_set, args.batch_size, shuffle=sampler is None, sampler=sampler,
                       num_workers=args.workers, pin_memory=pin, drop_last=True, generator=g,
                       persistent_workers=args.workers > 0)
    val = None
    if val_set is not None:
        # every rank scores a disjoint slice; counts are summed (no padded duplicates)
        part = Subset(val_set, range(d.rank, len(val_set), d.world_size)) if d.enabled else val_set
        val = DataLoader(part, args.batch_size * 3, shuffle=False, num_workers=args.workers, pin_memory=pin)
    return train, val, sampler


# -- model / optimizer / schedule ---------------------------------------------------
def build_model(arch: str, num_classes: int, drop_conv: float, drop_fc: float,
                multiplier: str = "scalar") -> nn.Module:
    if arch in MODEL_BUILDERS:
        return create_model(arch, num_classes=num_classes, drop_conv=drop_conv, drop_fc=drop_fc,
                            multiplier=multiplier)
    return create_baseline(arch, num_classes=num_classes, drop_fc=drop_fc)


def model_kwargs(args, num_classes: int) -> Dict:
    kw = dict(num_classes=num_classes, drop_conv=args.drop_conv, drop_fc=args.drop_fc)
    if args.arch in MODEL_BUILDERS:
        kw["multiplier"] = args.multiplier
    return kw


def build_param_groups(model: nn.Module, arch: str, lr: float, weight_decay: float) -> List[dict]:
    if arch in MODEL_BUILDERS:
        return param_groups(model, weight_decay, lr=lr)
    return baseline_param_groups(model, arch, lr, weight_decay)


class WarmupSchedule:
    """Per-iteration lr ratio of the official code: linear warm-up ``it / warmup``,
    then step decay at ``milestones`` or cosine (floor 1e-5) over ``epochs`` epochs
    counted after the warm-up. ``step()`` sets every group's lr to ratio x its
    initial lr; call it before ``optimizer.step()``."""

    def __init__(self, optimizer, iters_per_epoch: int, epochs: int, warmup_epochs: int,
                 schedule: str = "step", milestones: Sequence[int] = (30, 60, 90), gamma: float = 0.1):
        self.optimizer = optimizer
        self.iters = iters_per_epoch
        self.epochs = epochs
        self.warmup = warmup_epochs * iters_per_epoch
        self.schedule = schedule
        self.milestones = list(milestones)
        self.gamma = gamma
        self.last_step = 0
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])

    def ratio(self, it: int) -> float:
        if it < self.warmup:
            return it / self.warmup
        e = (it - self.warmup) / self.iters
        if self.schedule == "cosine":
            return max(0.5 * (1 + math.cos(math.pi * min(e, self.epochs) / self.epochs)), 1e-5)
        return self.gamma ** sum(1 for m in self.milestones if e >= m)

    def step(self) -> float:
        r = self.ratio(self.last_step)
        for g in self.optimizer.param_groups:
            g["lr"] = r * g["initial_lr"]
        self.last_step += 1
        return r

    def state_dict(self) -> Dict:
        return {"step": self.last_step}

    def load_state_dict(self, state: Dict) -> None:
        self.last_step = int(state["step"])


# -- logging --------------------------------------------------------------------
class Progress:
    """tqdm bar when available (and wanted), plain lines every ``freq`` steps otherwise."""

    def __init__(self, total: int, desc: str, mode: str, freq: int, enabled: bool):
        self.total, self.desc, self.freq, self.enabled = total, desc, max(1, freq), enabled
        self.bar = None
        self.n = 0
        if enabled and mode in ("auto", "tqdm"):
            try:
                from tqdm import tqdm
            except ImportError:
                if mode == "tqdm":
                    print("tqdm is not installed: plain progress lines", flush=True)
            else:
                if mode == "tqdm" or sys.stderr.isatty():
                    self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True)

    def update(self, **metrics) -> None:
        self.n += 1
        if not self.enabled:
            return
        text = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.n % self.freq == 0 or self.n == self.total:
            print(f"{self.desc} [{self.n}/{self.total}] {text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Logger:
    """CSV rows (``log.csv``) and TensorBoard scalars (``tb/``, when installed)."""

    FIELDS = ["epoch", "lr", "train_loss", "train_acc1", "val_loss", "val_acc1", "val_acc5",
              "epoch_time_s", "train_images_per_s"]

    def __init__(self, output: str, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = os.path.join(output, "log.csv")
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard is not installed: logging to log.csv only", flush=True)
            else:
                self.tb = SummaryWriter(os.path.join(output, "tb"))

    def log(self, row: Dict) -> None:
        if not self.enabled:
            return
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, self.FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in self.FIELDS})
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# -- train / evaluate -------------------------------------------------------------
def mixup_batch(x, y, alpha: float):
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], y[perm], lam


def all_reduce_sum(values: List[float], d: Dist, device) -> List[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if d.enabled:
        dist.all_reduce(t)
    return t.tolist()


def train_one_epoch(model, loader, optimizer, schedule, scaler, args, d: Dist, device, epoch, autocast):
    model.train()
    steps = len(loader) if not args.limit_train_batches else min(len(loader), args.limit_train_batches)
    prog = Progress(steps, f"epoch {epoch + 1}", args.progress, args.print_freq, d.main)
    loss_sum, correct, seen = 0.0, 0.0, 0
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lr_ratio = schedule.step()
        with autocast():
            if args.mixup > 0:
                xm, y2, lam = mixup_batch(x, y, args.mixup)
                out = model(xm)
                loss = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y2)
            else:
                out = model(x)
                loss = F.cross_entropy(out, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = x.shape[0]
        loss_sum += loss.item() * n
        correct += (out.argmax(1) == y).sum().item()
        seen += n
        prog.update(loss=loss.item(), lr=optimizer.param_groups[0]["lr"])
    prog.close()
    elapsed = time.perf_counter() - t0
    loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], d, device)
    return dict(train_loss=loss_sum / seen, train_acc1=100.0 * correct / seen, epoch_time_s=elapsed,
                train_images_per_s=seen / elapsed, lr=optimizer.param_groups[0]["lr"], lr_ratio=lr_ratio)


@torch.no_grad()
def evaluate(model, loader, args, d: Dist, device, autocast) -> Dict[str, float]:
    model.eval()
    loss_sum, c1, c5, seen = 0.0, 0.0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = model(x)
        out = out.float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        c1 += (top[:, 0] == y).sum().item()
        c5 += (top == y[:, None]).any(1).sum().item()
        seen += y.shape[0]
    loss_sum, c1, c5, seen = all_reduce_sum([loss_sum, c1, c5, seen], d, device)
    return dict(val_loss=loss_sum / seen, val_acc1=100.0 * c1 / seen, val_acc5=100.0 * c5 / seen)


def addbias_means(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: m.init_mean.detach().clone() for n, m in model.named_modules() if isinstance(m, AddBias)}


def save_checkpoint(path: str, state: Dict) -> None:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> Dict:
    if not os.path.isfile(path):
        raise SystemExit(f"rescalenet.train: error: checkpoint {path!r} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise SystemExit(f"rescalenet.train: error: {path!r} is not a checkpoint written by rescalenet.train")
    return ckpt


@dataclass
class Result:
    model: nn.Module
    best_acc1: float
    last: Dict
    start_epoch: int


def main(argv: Optional[Sequence[str]] = None) -> Result:
    args = build_parser().parse_args(argv)
    check_args(args)
    device_type = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]
    d = init_distributed(device_type)
    device = torch.device(f"cuda:{d.local_rank}" if device_type == "cuda" else "cpu")
    try:
        return _run(args, d, device)
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _run(args, d: Dist, device) -> Result:
    torch.manual_seed(args.seed)  # identical init on every rank
    random.seed(args.seed)
    if d.main:
        os.makedirs(args.output, exist_ok=True)
    resume = args.resume
    if resume == "auto":
        auto = os.path.join(args.output, "last.pth")
        resume = auto if os.path.isfile(auto) else ""
    ckpt = load_checkpoint(resume) if resume else None
    if ckpt is not None and ckpt.get("arch") != args.arch:
        raise SystemExit(f"rescalenet.train: error: {resume!r} holds a {ckpt.get('arch')!r} model, "
                         f"not --arch {args.arch!r}")

    train_set, val_set = build_datasets(args)
    num_classes = len(train_set.classes)
    kwargs = model_kwargs(args, num_classes)
    if args.arch not in MODEL_BUILDERS and args.drop_conv > 0 and d.main:
        print(f"note: --drop-conv applies to RescaleNet only; {args.arch} gets drop-fc {args.drop_fc} only",
              flush=True)
    model = build_model(args.arch, **kwargs)
    if args.weights:
        w = load_checkpoint(args.weights)
        model.load_state_dict(w["state_dict"])
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])  # AddBias buffers: calibrated, never redone
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    global_batch = args.batch_size * d.world_size
    lr = args.lr if args.lr is not None else args.base_lr * global_batch / 256
    optimizer = torch.optim.SGD(build_param_groups(model, args.arch, lr, args.weight_decay),
                                lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    loader, val_loader, sampler = build_loaders(args, train_set, val_set, d, pin=device.type == "cuda")
    steps = len(loader) if not args.limit_train_batches else min(len(loader), args.limit_train_batches)
    schedule = WarmupSchedule(optimizer, steps, args.epochs, args.warmup_epochs, args.schedule,
                              args.milestones, args.gamma)
    use_fp16 = args.amp and args.amp_dtype == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
    amp_dtype = torch.float16 if use_fp16 else torch.bfloat16

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp)

    start_epoch, best = 0, 0.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best = int(ckpt["epoch"]), float(ckpt.get("best_acc1", 0.0))

    net = model
    if d.enabled:
        if args.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # AddBias all-reduces its own statistics, so RescaleNet needs no buffer broadcast
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.local_rank] if device.type == "cuda" else None, broadcast_buffers=has_bn)
    torch.manual_seed(args.seed + d.rank)  # different dropout / mixup draws per rank

    total_epochs = args.warmup_epochs + args.epochs
    if d.main:
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{args.arch}: {n_params:.2f} M parameters, {num_classes} classes, {len(train_set)} training images; "
              f"{d.world_size} process(es) x batch {args.batch_size}, lr {lr:g}, "
              f"{args.warmup_epochs} warm-up + {args.epochs} epochs ({args.schedule}), "
              f"drop_conv {args.drop_conv}, drop_fc {args.drop_fc}, mixup {args.mixup}, device {device}"
              + (f"; resumed from {resume} at epoch {start_epoch}" if ckpt is not None else ""), flush=True)

    if args.evaluate:
        metrics = evaluate(net, val_loader, args, d, device, autocast)
        if d.main:
            print(" ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
        return Result(model, metrics["val_acc1"], metrics, start_epoch)

    logger = Logger(args.output, d.main, not args.no_tensorboard)
    has_addbias = any(isinstance(m, AddBias) for m in model.modules())
    was_calibrated = is_calibrated(model) if has_addbias else True
    last: Dict = {}
    try:
        for epoch in range(start_epoch, total_epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            metrics = train_one_epoch(net, loader, optimizer, schedule, scaler, args, d, device, epoch, autocast)
            if has_addbias and not was_calibrated and is_calibrated(model):
                was_calibrated = True
                if d.main:
                    print("AddBias means calibrated on the first training batches", flush=True)
            if val_loader is not None:
                metrics.update(evaluate(net, val_loader, args, d, device, autocast))
            metrics["epoch"] = epoch + 1
            last = metrics
            acc = metrics.get("val_acc1", metrics["train_acc1"])
            is_best = acc > best
            best = max(best, acc)
            if d.main:
                logger.log(metrics)
                print(f"epoch {epoch + 1}/{total_epochs}: " + " ".join(
                    f"{k} {metrics[k]:.4g}" for k in Logger.FIELDS[1:] if k in metrics), flush=True)
                state = {
                    "state_dict": model.state_dict(),
                    "arch": args.arch,
                    "model_kwargs": kwargs,
                    "epoch": epoch + 1,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": schedule.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "best_acc1": best,
                    "classes": list(train_set.classes),
                    "args": {k: v for k, v in vars(args).items()},
                }
                save_checkpoint(os.path.join(args.output, "last.pth"), state)
                if is_best:
                    save_checkpoint(os.path.join(args.output, "best.pth"), state)
            if d.enabled:
                dist.barrier()
    finally:
        logger.close()
    if d.main:
        print(f"done: best top-1 {best:.3f}; checkpoints in {args.output}", flush=True)
    return Result(model, best, last, start_epoch)


if __name__ == "__main__":
    main()
