"""Average the weights of the last fairseq checkpoints, with ``weights_only`` loading kept on.

The WMT recipes average the last checkpoints before translating. fairseq's
``scripts/average_checkpoints.py`` is not in the pip package, and under torch >= 2.6 it
cannot read ``fairseq-train`` checkpoints (``torch.load`` refuses their
``argparse.Namespace``; see :mod:`.safe_globals`). This command does the same averaging
with the plugin's allowlist:

    python -m projects.translation.rescale_fairseq.average_checkpoints \\
        --inputs checkpoints/rescale_wmt_en_de --num-update-checkpoints 10 \\
        --output checkpoints/rescale_wmt_en_de/averaged.pt

* floating-point tensors (weights, AddBias biases and frozen means, multipliers): the
  mean, stored in the dtype they came in;
* integer tensors (the AddBias calibration counters): must be equal in every input,
  otherwise an input was saved before its calibration ended and the command stops;
* everything else (config, optimizer state, ...) comes from the first input, as in
  fairseq's script.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections import OrderedDict
from typing import List, Optional, Sequence

import torch

from .safe_globals import register_fairseq_safe_globals

__all__ = ["average_checkpoints", "last_checkpoints", "main"]


def last_checkpoints(directory: str, n: int, by_update: bool) -> List[str]:
    """The ``n`` newest ``checkpoint_<epoch>_<update>.pt`` (``by_update``) or
    ``checkpoint<epoch>.pt`` files in ``directory``, newest first."""
    pattern = re.compile(r"checkpoint_\d+_(\d+)\.pt" if by_update else r"checkpoint(\d+)\.pt")
    found = sorted(
        ((int(m.group(1)), name) for name in os.listdir(directory) if (m := pattern.fullmatch(name))),
        reverse=True,
    )
    if len(found) < n:
        kind = ("checkpoint_<epoch>_<update>.pt files (written with --save-interval-updates)" if by_update
                else "checkpoint<epoch>.pt files")
        raise ValueError(f"{directory} holds {len(found)} {kind}, {n} requested")
    return [os.path.join(directory, name) for _, name in found[:n]]


def average_checkpoints(paths: Sequence[str]) -> dict:
    """The first checkpoint of ``paths`` with its ``model`` weights averaged over all."""
    if not paths:
        raise ValueError("no checkpoint to average")
    register_fairseq_safe_globals()
    first, sums = None, OrderedDict()
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "model" not in state:
            raise ValueError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
        model = state["model"]
        if first is None:
            first = state
            for key, value in model.items():
                sums[key] = value.double() if value.is_floating_point() else value.clone()
            continue
        if list(model) != list(sums):
            raise ValueError(f"{path} holds other parameters than {paths[0]}")
        for key, value in model.items():
            if value.is_floating_point():
                sums[key] += value.double()
            elif not torch.equal(value, sums[key]):
                raise ValueError(
                    f"{key} differs between {paths[0]} and {path} ({sums[key].tolist()} vs "
                    f"{value.tolist()}): an integer state such as an AddBias calibration counter "
                    "cannot be averaged; average only checkpoints saved after calibration"
                )
    first["model"] = OrderedDict(
        (key, (total / len(paths)).to(first["model"][key].dtype) if total.is_floating_point() else total)
        for key, total in sums.items()
    )
    return first


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", nargs="+", required=True,
                   help="checkpoint files, or one checkpoint directory with --num-*-checkpoints")
    p.add_argument("--output", required=True, help="where to write the averaged checkpoint")
    last = p.add_mutually_exclusive_group()
    last.add_argument("--num-update-checkpoints", type=int, metavar="N",
                      help="average the N newest checkpoint_<epoch>_<update>.pt in the directory")
    last.add_argument("--num-epoch-checkpoints", type=int, metavar="N",
                      help="average the N newest checkpoint<epoch>.pt in the directory")
    args = p.parse_args(argv)
    n = args.num_update_checkpoints or args.num_epoch_checkpoints
    paths = args.inputs
    if n is not None:
        if len(paths) != 1 or not os.path.isdir(paths[0]):
            p.error("--num-update-checkpoints/--num-epoch-checkpoints take one directory as --inputs")
        paths = last_checkpoints(paths[0], n, by_update=args.num_update_checkpoints is not None)
    for path in paths:
        print(f"averaging {path}", file=sys.stderr)
    torch.save(average_checkpoints(paths), args.output)
    print(f"wrote {args.output} (mean of {len(paths)} checkpoints)", file=sys.stderr)


if __name__ == "__main__":
    main()
