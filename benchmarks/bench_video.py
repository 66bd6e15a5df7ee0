"""Training-step cost of the 3D RescaleNet-50 (SlowOnly layout) against MMAction2's
``ResNet3dSlowOnly`` R-50 with BatchNorm, same clip size, same process.

One step = forward + cross-entropy on a linear head over the pooled features +
backward + SGD (momentum 0.9, weight decay) step. Both backbones get the same head.
The RescaleNet is calibrated first (its first 8 training passes also estimate the
AddBias means; the steady state is what a training run spends its time in). The two
models are timed alternately, ``--repeats`` times each after ``--warmup`` steps, and the
median is reported.

Memory: on CUDA the peak of ``torch.cuda.max_memory_allocated`` over one step. On the
CPU no allocator statistics exist, so the script reports the bytes of the tensors
autograd keeps for the backward pass (unique storages, measured with
``torch.autograd.graph.saved_tensors_hooks``), which is what dominates a step's peak
beyond the (equal-sized) parameters, gradients and momentum buffers.

    python benchmarks/bench_video.py                       # batch 2, 8x112x112, CPU
    python benchmarks/bench_video.py --batch 8 --size 224  # on a GPU
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rescalenet import calibrate  # noqa: E402
from rescalenet.resnet3d import slowonly_rescalenet50  # noqa: E402


def build_bn_slowonly() -> nn.Module:
    from projects.video.mmaction_compat import patch_missing_drn

    patch_missing_drn()
    from mmaction.models.backbones.resnet3d_slowonly import ResNet3dSlowOnly

    model = ResNet3dSlowOnly(depth=50, pretrained=None, lateral=False)  # the SlowOnly R-50 base
    model.init_weights()
    return model


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, channels: int = 2048, classes: int = 400) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if isinstance(feats, (tuple, list)):
            feats = feats[-1]
        return self.fc(feats.mean((2, 3, 4)))


def saved_bytes(step: Callable[[], torch.Tensor]) -> int:
    """Bytes of the unique storages autograd saves for backward during ``step()``."""
    storages: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    clip = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
    target = torch.randint(0, 400, (args.batch,), device=device)

    rescale = slowonly_rescalenet50().to(device)
    calibrate(rescale, [clip] * 8)
    models = {"RescaleNet3d-50 SlowOnly": Classifier(rescale).to(device),
              "ResNet3dSlowOnly-50 (BN)": Classifier(build_bn_slowonly()).to(device)}
    for model in models.values():
        model.train()
    optims = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
              for name, m in models.items()}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(name: str) -> None:
        optims[name].zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(models[name](clip), target)
        loss.backward()
        optims[name].step()

    times = {name: [] for name in models}
    for i in range(args.warmup + args.repeats):
        for name in models:  # alternate, so load drift hits both alike
            sync()
            start = time.perf_counter()
            train_step(name)
            sync()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)

    memory = {}
    for name, model in models.items():
        optims[name].zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            train_step(name)
            sync()
            memory[name] = torch.cuda.max_memory_allocated(device)
        else:
            memory[name] = saved_bytes(lambda: nn.functional.cross_entropy(model(clip), target))
    mem_label = "peak CUDA memory" if device.type == "cuda" else "saved for backward"

    print(f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
          f"clip {args.batch}x3x{args.frames}x{args.size}x{args.size}; "
          f"{args.repeats} timed steps after {args.warmup} warm-up, median")
    print(f"{'model':28s} {'step (s)':>10s} {mem_label + ' (MiB)':>26s}")
    for name in models:
        print(f"{name:28s} {statistics.median(times[name]):10.3f} {memory[name] / 2**20:26.1f}")
    names = list(models)
    t_ratio = statistics.median(times[names[0]]) / statistics.median(times[names[1]])
    m_ratio = memory[names[0]] / memory[names[1]]
    print(f"ratio RescaleNet / BN: time {t_ratio:.3f}, memory ({mem_label}) {m_ratio:.3f}  (target <= 1.0)")


if __name__ == "__main__":
    main()
