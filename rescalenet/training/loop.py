"""One training epoch and one evaluation pass of the harness, with their progress
display and logs (``log.csv``, TensorBoard)."""
from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from .distributed import Dist, all_reduce_sum

__all__ = ["Progress", "Logger", "CurveLog", "EpochProgress", "mixup_batch", "train_one_epoch", "evaluate"]


class Progress:
    """tqdm bar when available (and wanted), plain lines every ``freq`` steps otherwise."""

    def __init__(self, total: int, desc: str, mode: str, freq: int, enabled: bool, start: int = 0):
        self.total, self.desc, self.freq, self.enabled = total, desc, max(1, freq), enabled
        self.bar = None
        self.n = start
        if enabled and mode in ("auto", "tqdm"):
            try:
                from tqdm import tqdm
            except ImportError:
                if mode == "tqdm":
                    print("tqdm is not installed: plain progress lines", flush=True)
            else:
                if mode == "tqdm" or sys.stderr.isatty():
                    self.bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True)

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


def append_csv_row(path: str, fields: List[str], row: Dict) -> None:
    """Append ``row`` (the ``fields`` of it) to the CSV file ``path``, header first if new."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fields)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in fields})


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
        append_csv_row(self.path, self.FIELDS, row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class CurveLog:
    """``curve.csv``: validation metrics against the training step, for learning curves."""

    FIELDS = ["epoch", "step", "val_loss", "val_acc1"]

    def __init__(self, path: str, steps_per_epoch: int, enabled: bool):
        self.path, self.steps, self.enabled = path, steps_per_epoch, enabled

    def log(self, epoch: int, step: int, metrics: Dict) -> None:
        if self.enabled:
            append_csv_row(self.path, self.FIELDS, dict(epoch=epoch + 1, step=epoch * self.steps + step,
                                                        val_loss=metrics["val_loss"], val_acc1=metrics["val_acc1"]))


# -- train / evaluate -------------------------------------------------------------
def mixup_batch(x, y, alpha: float):
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], y[perm], lam


@dataclass
class EpochProgress:
    """The running sums of a training epoch: a mid-epoch checkpoint saves them, so that a
    resumed epoch reports the loss, accuracy and speed the uninterrupted one would."""

    step: int = 0  # optimizer steps done in this epoch
    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    elapsed: float = 0.0  # training seconds, evaluation pauses excluded

    def state_dict(self) -> Dict:
        return asdict(self)


def train_one_epoch(model, loader, optimizer, schedule, scaler, args, d: Dist, device, epoch, autocast,
                    after_step: Optional[Callable[[int], None]] = None,
                    progress: Optional[EpochProgress] = None):
    """One epoch, or what is left of it after ``progress.step`` steps (a resumed run:
    the loader's sampler then starts at that step). ``after_step(i)`` is called after the
    ``i``-th optimizer step (0-based), with ``progress`` up to date (it may evaluate and
    checkpoint; the time it takes is not counted in the epoch's images/s)."""
    model.train()
    progress = progress if progress is not None else EpochProgress()
    steps = len(loader) if not args.limit_train_batches else min(len(loader), args.limit_train_batches)
    prog = Progress(steps, f"epoch {epoch + 1}", args.progress, args.print_freq, d.main, start=progress.step)
    t0, elapsed0 = time.perf_counter(), progress.elapsed
    paused = 0.0
    for i, (x, y) in enumerate(loader, start=progress.step):
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
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1} "
                                     f"(training step {schedule.last_step})")
        optimizer.zero_grad(set_to_none=True)
        clip = getattr(args, "clip_grad", 0.0)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
        n = x.shape[0]
        progress.step = i + 1
        progress.loss_sum += loss.item() * n
        progress.correct += (out.argmax(1) == y).sum().item()
        progress.seen += n
        progress.elapsed = elapsed0 + time.perf_counter() - t0 - paused
        prog.update(loss=loss.item(), lr=optimizer.param_groups[0]["lr"])
        if after_step is not None:
            t = time.perf_counter()
            after_step(i)
            model.train()
            paused += time.perf_counter() - t
    prog.close()
    loss_sum, correct, seen = all_reduce_sum([progress.loss_sum, progress.correct, progress.seen], d, device)
    elapsed = progress.elapsed
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


