"""Multi-process MMEngine training without the GPU-only parts of its ``pytorch`` launcher.

``mim train PKG CFG --gpus N --launcher pytorch`` is the multi-GPU command. On a
machine without CUDA it fails, because MMEngine's launcher always calls
``torch.cuda.set_device``. :func:`main` initialises the process group itself
(``gloo`` on CPU, ``nccl`` on GPU) and then runs the same ``Runner``, which skips its
own initialisation when a group exists. The detection and video plugins expose it as
``torchrun --nproc_per_node 2 -m projects.{detection,video}.dist_train CONFIG``.

Every AddBias all-reduces its calibration statistics, so the means are the same on
all ranks even though MMEngine's DDP wrapper does not broadcast buffers.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.runner import Runner


def build_dist_runner(cfg: Config) -> Runner:
    """A ``Runner`` for the already initialised process group (CPU or GPU)."""
    if not dist.is_initialized():
        raise RuntimeError("initialise torch.distributed first (run under torchrun)")
    cfg.launcher = "pytorch"
    os.environ.setdefault("LOCAL_RANK", str(dist.get_rank()))  # set by torchrun, not by mp.spawn
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        # device_ids=None: replicate on the CPU. broadcast_buffers=False as MMEngine's
        # default GPU wrapper: buffers are not copied from rank 0 at every step.
        cfg.model_wrapper_cfg = dict(
            type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)
    cfg.env_cfg = dict(cfg.get("env_cfg", {}), dist_cfg=dict(backend=dist.get_backend()))
    return Runner.from_cfg(cfg)


def main(argv: Optional[Sequence[str]] = None, description: str = "multi-process MMEngine training (CPU or GPU)") -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config")
    parser.add_argument("--work-dir")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    args = parser.parse_args(argv)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        cfg.work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
            "./work_dirs", osp.splitext(osp.basename(args.config))[0])
        build_dist_runner(cfg).train()
    finally:
        dist.destroy_process_group()

