"""Run a function in 2 CPU processes with the gloo backend (tests of multi-GPU paths)."""
import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world_size, port, fn, out_dir, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, out_dir, *args)
    finally:
        dist.destroy_process_group()


def run_distributed(fn, out_dir, world_size=2, args=()):
    """Calls ``fn(rank, world_size, out_dir, *args)`` in each process; returns out_dir,
    where ``fn`` leaves what the test compares. ``fn`` must be importable (module level).
    ``out_dir`` is the test's own folder (its ``tmp_path``), so pytest cleans it up."""
    out_dir = str(out_dir)
    mp.spawn(_entry, args=(world_size, _free_port(), fn, out_dir, args), nprocs=world_size, join=True)
    return out_dir
