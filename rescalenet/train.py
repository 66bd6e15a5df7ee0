"""Train RescaleNet (or a baseline) on an ImageFolder dataset with the official recipe.

    python -m rescalenet.train --data /path/to/imagenet --arch rescalenet50
    torchrun --nproc_per_node 8 -m rescalenet.train --data /path/to/imagenet --arch rescalenet50 \\
        --batch-size 128 --amp --channels-last
    # small greyscale images (Fashion-MNIST written by `make data`), CIFAR-layout network
    python -m rescalenet.train --data data/fashion_mnist --arch rescalenet_cifar20 --in-chans 1 \\
        --img-size 28 --val-resize 28 --train-aug crop-flip --test-dir test

``--data`` holds ``train/`` and ``val/`` (and, with ``--test-dir``, a test split scored once
after training) in the ImageFolder layout (one folder per class). The recipe
(``docs/method.md`` section 1.8): SGD with momentum 0.9, lr 0.1 x global batch / 256, a
5-epoch linear warm-up, then ``--epochs`` (100) epochs of step decay (x0.1 at 30/60/90
epochs counted after the warm-up) or cosine; weight decay 1e-4 except on AddBias biases
and branch multipliers; Dropout2d 0.03 in stages 3-4 and dropout 0.3 before the
classifier (RescaleNets and the basic-block baselines, as the official BN baseline), or
``--mixup ALPHA`` with no dropout. The first training batches calibrate the AddBias means
(8 steps), as in the official code; a resumed run never recalibrates.

Checkpoints (``OUTPUT/last.pth`` every epoch, and every ``--save-every-steps`` steps;
``OUTPUT/best.pth`` at the best validation top-1) are written atomically and are loadable
with ``torch.load(path, weights_only=True)``; their layout is in
:mod:`rescalenet.training.checkpoint_io`. A run killed at any moment and restarted with
``--resume auto`` goes on from the last checkpoint, in the middle of an epoch too, with
the batches and random draws of the uninterrupted run (bitwise the same model with
``--workers 0``; worker processes keep random states that are not saved, see
``docs/reliability.md``), and an AddBias calibration that was under way goes on
where it stopped. A non-finite loss stops the run with the step and the loss, before
anything of that step is saved. ``state_dict`` loads into
``rescalenet.create_model(arch, **model_kwargs)`` and, with ``strict=False`` (no head),
into the detection and video backbones.

Logs: ``OUTPUT/log.csv`` (one row per epoch), ``OUTPUT/curve.csv`` (validation against
training steps: every epoch, and every ``--val-every-steps``), TensorBoard events in
``OUTPUT/tb`` and, at the end, ``OUTPUT/result.json`` (final validation and test metrics, images/s).
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from . import is_calibrated, list_models, param_groups
from .baselines import accepts, baseline_param_groups, create_baseline, is_baseline, list_baselines
from .blocks import BLOCK_MULTIPLIERS
from .layers import AddBias
from .registry import create_model
from .resnet import SHORTCUT_POOLS
from .checkpoint import CheckpointError, extract_state_dict, read_checkpoint
from .training import (
    TRAIN_AUGMENTATIONS,
    CurveLog,
    Dist,
    EpochProgress,
    Logger,
    UnreadableImageError,
    WarmupSchedule,
    all_gather,
    build_loaders,
    eval_loader,
    evaluate,
    image_folder,
    image_transform,
    init_distributed,
    load_training_checkpoint,
    remove_partial_writes,
    rng_state,
    save_checkpoint,
    set_rng_state,
    train_one_epoch,
)

__all__ = ["main", "build_parser", "WarmupSchedule", "Result"]

RESCALENETS = list_models(kind="2d")


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
    p.add_argument("--test-dir", default="", help="a split scored once, after the last epoch (e.g. 'test')")
    p.add_argument("--arch", default="rescalenet50",
                   help="a RescaleNet (%s) or a baseline (see rescalenet.baselines)" % ", ".join(RESCALENETS))
    p.add_argument("--multiplier", default="scalar", choices=BLOCK_MULTIPLIERS, help="RescaleNet branch multiplier")
    p.add_argument("--rescale-c", type=int, default=None, help="RescaleNet block-index offset c (default L - 1)")
    p.add_argument("--calibration-steps", type=int, default=8,
                   help="RescaleNet: training batches averaged into each AddBias mean (0: no mean subtraction)")
    p.add_argument("--no-depth-init", action="store_true",
                   help="RescaleNet: plain He init of the branches (no (L/(k+1))^(1/2n) factor; ablation)")
    p.add_argument("--shortcut-pool", default="avg", choices=SHORTCUT_POOLS,
                   help="RescaleNet downsample shortcut: 'avg' (official) or 'avg-vp' (variance-preserving)")
    p.add_argument("--output", default="runs/train", help="checkpoints and logs")
    p.add_argument("--epochs", type=int, default=100, help="epochs AFTER the warm-up (official: 100)")
    p.add_argument("--warmup-epochs", type=int, default=5, help="linear warm-up epochs")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="a linear warm-up of that many steps inside --epochs instead (with --warmup-epochs 0; "
                        "for short runs)")
    p.add_argument("--schedule", default="step", choices=["step", "cosine"])
    p.add_argument("--milestones", type=int, nargs="*", default=[30, 60, 90],
                   help="step decay epochs, counted after the warm-up")
    p.add_argument("--gamma", type=float, default=0.1, help="step decay factor")
    p.add_argument("-b", "--batch-size", type=int, default=256, help="images per process and step")
    p.add_argument("--lr", type=float, default=None, help="peak lr (default: --base-lr x global batch / 256)")
    p.add_argument("--base-lr", type=float, default=0.1, help="lr per 256 images")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=1e-4)
    p.add_argument("--clip-grad", type=float, default=0.0, metavar="NORM",
                   help="clip the gradients' global norm to NORM before each step (0: off, the official recipe)")
    p.add_argument("--drop-conv", type=float, default=None, help="Dropout2d in stages 3-4 (default 0.03, 0 with mixup)")
    p.add_argument("--drop-fc", type=float, default=None, help="dropout before the classifier (default 0.3, 0 with mixup)")
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA", help="mixup alpha (0: off)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--val-resize", type=int, default=None, help="validation resize (default img-size / 0.875)")
    p.add_argument("--train-aug", default="rrc", choices=TRAIN_AUGMENTATIONS,
                   help="'rrc': RandomResizedCrop + flip (ImageNet); 'crop-flip': padded random crop + flip (CIFAR)")
    p.add_argument("--in-chans", type=int, default=3, choices=[1, 3], help="input channels (1: greyscale)")
    p.add_argument("--mean", type=float, nargs="+", default=None, help="per-channel mean (default ImageNet's)")
    p.add_argument("--std", type=float, nargs="+", default=None, help="per-channel std (default ImageNet's)")
    p.add_argument("-j", "--workers", type=int, default=8, help="data loading workers per process")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 autocast; fp16 + loss scaling with --amp-dtype fp16)")
    p.add_argument("--amp-dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm for BN baselines under torchrun")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default="", help="checkpoint to resume from; 'auto' = OUTPUT/last.pth if it exists")
    p.add_argument("--save-every-steps", type=int, default=0, metavar="K",
                   help="also save OUTPUT/last.pth every K training steps, for an exact resume in the "
                        "middle of an epoch (0: at epoch ends only)")
    p.add_argument("--evaluate", action="store_true", help="only evaluate (with --resume or --weights)")
    p.add_argument("--weights", default="",
                   help="initial model weights: a checkpoint of this script, a RescaleNet state_dict or the "
                        "official code's ckpt.t7 (same architecture)")
    p.add_argument("--limit-train-batches", type=int, default=0, help="cap the steps per epoch (0: all)")
    p.add_argument("--limit-eval-batches", type=int, default=0, help="cap the validation / test batches by scoring every k-th image (0: all)")
    p.add_argument("--val-every-steps", type=int, default=0,
                   help="also validate every N training steps (a learning curve in OUTPUT/curve.csv; 0: per epoch only)")
    p.add_argument("--print-freq", type=int, default=50)
    p.add_argument("--progress", choices=["auto", "tqdm", "plain"], default="auto",
                   help="progress display: tqdm bar (auto when installed and on a terminal) or plain lines")
    p.add_argument("--no-tensorboard", action="store_true")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Clear errors for bad arguments, before anything expensive happens."""
    errors = []
    rescalenet = args.arch in RESCALENETS
    if not (rescalenet or is_baseline(args.arch)):
        close = difflib.get_close_matches(args.arch, RESCALENETS + list_baselines(), n=3)
        errors.append(f"--arch {args.arch!r} is unknown" + (f"; did you mean {', '.join(close)}?" if close else "")
                      + " (all: rescalenet.list_models(kind='2d') and rescalenet.baselines.list_baselines())")
    if not os.path.isdir(args.data):
        errors.append(f"--data {args.data!r} is not a directory")
    else:
        for sub in [args.train_dir] + [d for d in (args.val_dir, args.test_dir) if d]:
            if not os.path.isdir(os.path.join(args.data, sub)):
                errors.append(f"--data {args.data!r} has no {sub}/ folder (ImageFolder layout: DATA/{sub}/CLASS/IMAGE)")
    if args.epochs < 1:
        errors.append(f"--epochs must be >= 1, got {args.epochs}")
    if args.warmup_epochs < 0:
        errors.append(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    if args.warmup_steps < 0:
        errors.append(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if args.warmup_steps and args.warmup_epochs:
        errors.append("--warmup-steps needs --warmup-epochs 0 (give the warm-up in epochs or in steps)")
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
    if args.clip_grad < 0:
        errors.append(f"--clip-grad must be >= 0 (0: off), got {args.clip_grad}")
    if args.lr is not None and args.lr <= 0:
        errors.append(f"--lr must be > 0, got {args.lr}")
    if args.img_size < 8:
        errors.append(f"--img-size must be >= 8, got {args.img_size}")
    if args.calibration_steps < 0:
        errors.append(f"--calibration-steps must be >= 0, got {args.calibration_steps}")
    if args.rescale_c is not None and args.rescale_c < 0:
        errors.append(f"--rescale-c must be >= 0, got {args.rescale_c}")
    if args.save_every_steps < 0:
        errors.append(f"--save-every-steps must be >= 0, got {args.save_every_steps}")
    rescale_options = [flag for flag, used in (
        ("--multiplier", args.multiplier != "scalar"), ("--rescale-c", args.rescale_c is not None),
        ("--calibration-steps", args.calibration_steps != 8), ("--no-depth-init", args.no_depth_init),
        ("--shortcut-pool", args.shortcut_pool != "avg")) if used]
    if rescale_options and not rescalenet:
        errors.append(f"{', '.join(rescale_options)} apply to RescaleNets only, not to the baseline {args.arch!r}")
    if args.in_chans != 3 and not rescalenet and not accepts(args.arch, "in_chans"):
        errors.append(f"--in-chans {args.in_chans}: the baseline {args.arch!r} takes 3-channel input only")
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


# -- model ------------------------------------------------------------------------
def model_kwargs(args, num_classes: int) -> Dict:
    """The builder's arguments: what ``rescalenet.create_model(arch, **kwargs)`` (or
    ``create_baseline``) needs to rebuild the trained model (saved in checkpoints)."""
    kw: Dict = dict(num_classes=num_classes, drop_fc=args.drop_fc)
    if args.arch in RESCALENETS:
        kw.update(in_chans=args.in_chans, drop_conv=args.drop_conv, multiplier=args.multiplier, c=args.rescale_c,
                  calibration_steps=args.calibration_steps, depth_scaled_init=not args.no_depth_init,
                  shortcut_pool=args.shortcut_pool)
    else:
        for option, value in (("in_chans", args.in_chans), ("drop_conv", args.drop_conv)):
            if accepts(args.arch, option):
                kw[option] = value
    return kw


def build_model(arch: str, **kwargs) -> nn.Module:
    return create_model(arch, **kwargs) if arch in RESCALENETS else create_baseline(arch, **kwargs)


def build_param_groups(model: nn.Module, arch: str, lr: float, weight_decay: float) -> List[dict]:
    if arch in RESCALENETS:
        return param_groups(model, weight_decay, lr=lr)
    return baseline_param_groups(model, arch, lr, weight_decay)


def build_datasets(args):
    tf = dict(img_size=args.img_size, augmentation=args.train_aug, val_resize=args.val_resize,
              in_chans=args.in_chans, mean=args.mean, std=args.std)
    train = image_folder(os.path.join(args.data, args.train_dir), image_transform(True, **tf), "training")
    evaluation = image_transform(False, **tf)
    splits = {}
    for name, sub in (("val", args.val_dir), ("test", args.test_dir)):
        if sub:
            ds = image_folder(os.path.join(args.data, sub), evaluation, name)
            if ds.classes != train.classes:
                only_train = sorted(set(train.classes) - set(ds.classes))[:5]
                only_other = sorted(set(ds.classes) - set(train.classes))[:5]
                raise SystemExit(
                    f"rescalenet.train: error: {os.path.join(args.data, args.train_dir)!r} and "
                    f"{os.path.join(args.data, sub)!r} have different class folders ({len(train.classes)} vs "
                    f"{len(ds.classes)}; only in {args.train_dir}/: {only_train}, only in {sub}/: {only_other}): "
                    f"a class index would mean another class in {name}; give both splits the same class folders")
            splits[name] = ds
    return train, splits.get("val"), splits.get("test")


def load_weights(model: nn.Module, path: str, arch: str, state: Optional[Dict] = None) -> None:
    """Load ``path`` (already read: ``state``) into ``model``, or stop with one error naming
    the file: a BatchNorm network's weights, another architecture or depth."""
    try:
        if state is None:
            state = extract_state_dict(read_checkpoint(path), source=repr(path))
        model.load_state_dict(state)
    except CheckpointError as e:
        raise SystemExit(f"rescalenet.train: error: {e}") from None
    except RuntimeError:  # missing / unexpected keys, shape mismatches
        own = model.state_dict()
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        shapes = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
        raise SystemExit(f"rescalenet.train: error: {path!r} does not fit --arch {arch} with these options: "
                         f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. "
                         f"{unexpected[:2]}) and {len(shapes)} differently shaped (e.g. {sorted(shapes)[:2]}) "
                         "entries: a checkpoint of another architecture, depth or width; pass the --arch (and "
                         "options) it was trained with") from None


def check_mid_epoch_resume(ckpt: Dict, path: str, num_images: int, world_size: int, steps: int) -> None:
    """A checkpoint from the middle of an epoch resumes exactly only on the same data,
    processes and steps per epoch: refuse anything else clearly."""
    where = f"{path!r} was saved in the middle of epoch {int(ckpt['epoch']) + 1} (step {ckpt['step_in_epoch']})"
    if ckpt.get("num_train_images", num_images) != num_images:
        raise SystemExit(f"rescalenet.train: error: {where} with {ckpt['num_train_images']} training images; "
                         f"the training folder now has {num_images}: restore the data it was trained on")
    if len(ckpt.get("ranks", [None] * world_size)) != world_size:
        raise SystemExit(f"rescalenet.train: error: {where} by {len(ckpt['ranks'])} process(es): resume it "
                         f"with as many (now {world_size})")
    if int(ckpt["step_in_epoch"]) >= steps:
        raise SystemExit(f"rescalenet.train: error: {where}, but an epoch now has {steps} steps "
                         "(--batch-size or --limit-train-batches changed): resume with the same options")


@dataclass
class Result:
    model: nn.Module
    best_acc1: float
    last: Dict
    start_epoch: int


def main(argv: Optional[Sequence[str]] = None) -> Result:
    args = build_parser().parse_args(argv)
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device_type = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]
    d = init_distributed(device_type)
    device = torch.device(f"cuda:{d.local_rank}" if device_type == "cuda" else "cpu")
    try:
        return _run(args, d, device)
    except FloatingPointError as e:
        last, best = (os.path.join(args.output, name) for name in ("last.pth", "best.pth"))
        saved = (f"{last} holds the last checkpoint before it" if os.path.isfile(last)
                 else "no checkpoint had been saved yet")
        if os.path.isfile(best):
            saved += f", {best} the best validation top-1"
        raise SystemExit(
            f"rescalenet.train: error: training diverged: {e}. Nothing of that step was saved; {saved}. "
            "Lower --lr (or --base-lr) or lengthen the warm-up and start again (--resume keeps the "
            "checkpoint's learning rate)") from None
    except UnreadableImageError as e:
        # (raised in a loader worker, the message ends with the worker's traceback's last line)
        message = str(e).strip().splitlines()[-1].split("UnreadableImageError: ")[-1]
        raise SystemExit(f"rescalenet.train: error: {message}") from None
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
        if d.main:
            for stale in remove_partial_writes(args.output):
                print(f"note: removed {stale}, a checkpoint whose writing was interrupted", flush=True)
    ckpt = load_training_checkpoint(resume) if resume else None
    if ckpt is not None and ckpt.get("arch") != args.arch:
        raise SystemExit(f"rescalenet.train: error: {resume!r} holds a {ckpt.get('arch')!r} model, "
                         f"not --arch {args.arch!r}")

    train_set, val_set, test_set = build_datasets(args)
    num_classes = len(train_set.classes)
    kwargs = model_kwargs(args, num_classes)
    if "drop_conv" not in kwargs and args.drop_conv > 0 and d.main:
        print(f"note: --drop-conv does not apply to {args.arch}; it gets drop-fc {args.drop_fc} only", flush=True)
    model = build_model(args.arch, **kwargs)
    if args.weights:
        load_weights(model, args.weights, args.arch)
    if ckpt is not None:
        load_weights(model, resume, args.arch, ckpt["state_dict"])  # AddBias buffers: calibration goes on, never redone
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    global_batch = args.batch_size * d.world_size
    lr = args.lr if args.lr is not None else args.base_lr * global_batch / 256
    optimizer = torch.optim.SGD(build_param_groups(model, args.arch, lr, args.weight_decay),
                                lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    loader, val_loader, sampler = build_loaders(train_set, val_set, args.batch_size, args.workers, args.seed,
                                                d.rank, d.world_size, pin=device.type == "cuda",
                                                limit_eval_batches=args.limit_eval_batches)
    steps = len(loader) if not args.limit_train_batches else min(len(loader), args.limit_train_batches)
    schedule = WarmupSchedule(optimizer, steps, args.epochs, args.warmup_epochs, args.schedule,
                              args.milestones, args.gamma, warmup_steps=args.warmup_steps)
    use_fp16 = args.amp and args.amp_dtype == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
    amp_dtype = torch.float16 if use_fp16 else torch.bfloat16

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp)

    start_epoch, start_step, best = 0, 0, 0.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best = int(ckpt["epoch"]), float(ckpt.get("best_acc1", 0.0))
        start_step = int(ckpt.get("step_in_epoch", 0))
        if start_step:
            check_mid_epoch_resume(ckpt, resume, len(train_set), d.world_size, steps)

    net = model
    if d.enabled:
        if args.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # AddBias all-reduces its own statistics, so RescaleNet needs no buffer broadcast
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.local_rank] if device.type == "cuda" else None, broadcast_buffers=has_bn)
    torch.manual_seed(args.seed + d.rank)  # different dropout / mixup draws per rank
    progress = None  # the running sums of an epoch resumed in its middle
    ranks = ckpt.get("ranks") if ckpt is not None else None
    if ranks and len(ranks) == d.world_size:  # the batches and random draws of the uninterrupted run
        mine = ranks[d.rank]
        set_rng_state(mine["rng"])
        sampler.resume(mine["sampler"], start_step * args.batch_size)
        if start_step:
            progress = EpochProgress(**mine["progress"])

    total_epochs = args.warmup_epochs + args.epochs
    if d.main:
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        warmup = f"{args.warmup_steps} warm-up steps in" if args.warmup_steps else f"{args.warmup_epochs} warm-up +"
        print(f"{args.arch}: {n_params:.2f} M parameters, {num_classes} classes, {len(train_set)} training images; "
              f"{d.world_size} process(es) x batch {args.batch_size}, lr {lr:g}, "
              f"{warmup} {args.epochs} epochs ({args.schedule}), "
              f"drop_conv {args.drop_conv}, drop_fc {args.drop_fc}, mixup {args.mixup}, device {device}"
              + (f"; resumed from {resume} at epoch {start_epoch}"
                 + (f", step {start_step}" if start_step else "") if ckpt is not None else ""), flush=True)

    if args.evaluate:
        metrics = evaluate(net, val_loader, args, d, device, autocast)
        if d.main:
            print(" ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
        return Result(model, metrics["val_acc1"], metrics, start_epoch)

    logger = Logger(args.output, d.main, not args.no_tensorboard)
    curve = CurveLog(os.path.join(args.output, "curve.csv"), steps, d.main)

    def checkpoint(epoch_done: int, step_in_epoch: int, progress: Optional[EpochProgress]) -> Dict:
        """The state to save (every rank takes part: each one's random states are kept)."""
        # at an epoch end, the order of the next epoch (drawn after the loader's base-seed draw)
        order = sampler.state_dict() if step_in_epoch else sampler.next_epoch_state(
            0 if loader.persistent_workers else 1)
        own = dict(rng=rng_state(), sampler=order, progress=(progress or EpochProgress()).state_dict())
        return {
            "state_dict": model.state_dict(),
            "arch": args.arch,
            "model_kwargs": kwargs,
            "epoch": epoch_done,
            "step_in_epoch": step_in_epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "best_acc1": best,
            "classes": list(train_set.classes),
            "num_train_images": len(train_set),
            "ranks": all_gather(own, d),
            "args": {k: v for k, v in vars(args).items()},
        }

    def after_step_of(epoch: int, progress: EpochProgress):
        def after_step(i: int) -> None:
            if val_loader is not None and args.val_every_steps and (i + 1) % args.val_every_steps == 0 \
                    and i + 1 < steps:
                curve.log(epoch, i + 1, evaluate(net, val_loader, args, d, device, autocast))
            if args.save_every_steps and schedule.last_step % args.save_every_steps == 0 and i + 1 < steps:
                state = checkpoint(epoch, i + 1, progress)
                if d.main:
                    save_checkpoint(os.path.join(args.output, "last.pth"), state)
        return after_step

    has_addbias = any(isinstance(m, AddBias) for m in model.modules())
    was_calibrated = is_calibrated(model) if has_addbias else True
    last: Dict = {}
    try:
        for epoch in range(start_epoch, total_epochs):
            sampler.set_epoch(epoch)
            progress = progress if epoch == start_epoch and progress is not None else EpochProgress()
            metrics = train_one_epoch(net, loader, optimizer, schedule, scaler, args, d, device, epoch, autocast,
                                      after_step_of(epoch, progress), progress)
            if has_addbias and not was_calibrated and is_calibrated(model):
                was_calibrated = True
                if d.main:
                    print("AddBias means calibrated on the first training batches", flush=True)
            if val_loader is not None:
                metrics.update(evaluate(net, val_loader, args, d, device, autocast))
                curve.log(epoch, steps, metrics)
            metrics["epoch"] = epoch + 1
            last = metrics
            acc = metrics.get("val_acc1", metrics["train_acc1"])
            is_best = acc > best
            best = max(best, acc)
            state = checkpoint(epoch + 1, 0, None)
            if d.main:
                logger.log(metrics)
                print(f"epoch {epoch + 1}/{total_epochs}: " + " ".join(
                    f"{k} {metrics[k]:.4g}" for k in Logger.FIELDS[1:] if k in metrics), flush=True)
                save_checkpoint(os.path.join(args.output, "last.pth"), state)
                if is_best:
                    save_checkpoint(os.path.join(args.output, "best.pth"), state)
            if d.enabled:
                dist.barrier()
    finally:
        logger.close()
    if test_set is not None:
        test_loader = eval_loader(test_set, args.batch_size * 3, args.workers, d.rank, d.world_size,
                                  limit_batches=args.limit_eval_batches)
        last.update({k.replace("val_", "test_"): v
                     for k, v in evaluate(net, test_loader, args, d, device, autocast).items()})
    if d.main:
        with open(os.path.join(args.output, "result.json"), "w") as f:
            json.dump(dict(arch=args.arch, best_val_acc1=best, **{k: v for k, v in last.items()
                                                                  if isinstance(v, (int, float))}), f, indent=1)
        test = f", test top-1 {last['test_acc1']:.3f}" if "test_acc1" in last else ""
        print(f"done: best top-1 {best:.3f}{test}; checkpoints in {args.output}", flush=True)
    return Result(model, best, last, start_epoch)


if __name__ == "__main__":
    main()
