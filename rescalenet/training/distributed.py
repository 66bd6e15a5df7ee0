"""Process groups for training: torchrun (NCCL on GPUs, gloo on the CPU) or none."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist

__all__ = ["Dist", "init_distributed", "all_reduce_sum", "all_gather"]


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


def all_reduce_sum(values: List[float], d: Dist, device) -> List[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if d.enabled:
        dist.all_reduce(t)
    return t.tolist()


def all_gather(obj, d: Dist) -> List:
    """``obj`` of every process, in rank order (``[obj]`` without a process group)."""
    if not d.enabled:
        return [obj]
    out: List = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out
