"""Multi-process MMDetection training that also runs on CPU-only machines (gloo)::

    torchrun --nproc_per_node 2 -m projects.detection.dist_train CONFIG [--work-dir DIR] [--cfg-options k=v ...]

On GPUs the standard command is ``mim train mmdet CONFIG --gpus N --launcher pytorch``;
see :mod:`projects.mmengine_dist` for why this entry point exists.
"""
from typing import Optional, Sequence

from projects.mmengine_dist import build_dist_runner
from projects.mmengine_dist import main as _run

__all__ = ["build_dist_runner", "main"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    _run(argv, description="multi-process MMDetection training (CPU or GPU)")


if __name__ == "__main__":
    main()
