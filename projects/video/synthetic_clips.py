"""A generated rawframe video dataset for smoke tests and demos: a bright square moving
across a noisy background in one of eight compass directions.

A single frame shows only where the square is, not where it goes, so the label needs
temporal information: a network that collapses time cannot do better than chance.

Layout (MMAction2's ``RawframeDataset``, ``filename_tmpl='img_{:05}.jpg'``, ``start_index=1``)::

    ROOT/
      train/clip_0000/img_00001.jpg ...
      val/clip_0000/img_00001.jpg ...
      train_list.txt   # "<frame_dir> <total_frames> <label>" per line, frame_dir relative to ROOT/train
      val_list.txt

Command line::

    python -m projects.video.synthetic_clips data/synthetic_clips --train 64 --val 32
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Dict, Tuple

import numpy as np

__all__ = ["DIRECTIONS", "make_clip", "write_split", "generate", "data_cfg_options"]

# (dy, dx) unit steps: E, NE, N, NW, W, SW, S, SE
DIRECTIONS = tuple(
    (-round(math.sin(a), 6), round(math.cos(a), 6)) for a in (i * math.pi / 4 for i in range(8))
)


def make_clip(label: int, rng: np.random.Generator, num_frames: int = 16, size: int = 32,
              square: int = 8, speed: float = 1.5) -> np.ndarray:
    """One clip, uint8 ``(T, H, W, 3)``: the square starts at a random point from which
    it stays inside the frame for ``num_frames`` steps along ``DIRECTIONS[label]``."""
    if not 0 <= label < len(DIRECTIONS):
        raise ValueError(f"label must be in 0..{len(DIRECTIONS) - 1}, got {label}")
    travel = speed * (num_frames - 1)
    if square + travel > size:
        raise ValueError(f"a {square}px square moving {travel:.0f}px does not fit a {size}px frame")
    dy, dx = DIRECTIONS[label]

    def start(d: float) -> float:  # a start from which the whole path stays inside
        lo = max(0.0, -d * travel)
        hi = size - square - max(0.0, d * travel)
        return float(rng.uniform(lo, hi))

    y0, x0 = start(dy), start(dx)
    colour = rng.integers(160, 256, size=3)
    frames = rng.integers(0, 64, size=(num_frames, size, size, 3)).astype(np.uint8)
    for t in range(num_frames):
        y, x = int(round(y0 + dy * speed * t)), int(round(x0 + dx * speed * t))
        frames[t, y:y + square, x:x + square] = colour
    return frames


def write_split(root: str, split: str, num_clips: int, seed: int, **clip_kwargs) -> str:
    """Writes ``num_clips`` balanced clips as JPEG frames and the annotation file;
    returns the annotation file's path."""
    import cv2

    rng = np.random.default_rng(seed)
    lines = []
    for i in range(num_clips):
        label = i % len(DIRECTIONS)
        frames = make_clip(label, rng, **clip_kwargs)
        frame_dir = f"clip_{i:04d}"
        out = os.path.join(root, split, frame_dir)
        os.makedirs(out, exist_ok=True)
        for t, frame in enumerate(frames, start=1):
            cv2.imwrite(os.path.join(out, f"img_{t:05d}.jpg"), frame[:, :, ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
        lines.append(f"{frame_dir} {len(frames)} {label}")
    ann = os.path.join(root, f"{split}_list.txt")
    with open(ann, "w") as f:
        f.write("\n".join(lines) + "\n")
    return ann


def generate(root: str, num_train: int = 64, num_val: int = 32, seed: int = 0,
             **clip_kwargs) -> Tuple[str, str]:
    """Both splits under ``root``; returns the two annotation files."""
    return (write_split(root, "train", num_train, seed, **clip_kwargs),
            write_split(root, "val", num_val, seed + 1, **clip_kwargs))


def data_cfg_options(root: str) -> Dict[str, str]:
    """``--cfg-options`` pointing ``configs/slowonly_rescale18_synthetic_demo.py`` at ``root``."""
    opts = {}
    for loader, split in (("train", "train"), ("val", "val"), ("test", "val")):
        opts[f"{loader}_dataloader.dataset.ann_file"] = os.path.join(root, f"{split}_list.txt")
        opts[f"{loader}_dataloader.dataset.data_prefix.img"] = os.path.join(root, split)
    return opts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=64, help="training clips")
    parser.add_argument("--val", type=int, default=32, help="validation clips")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, val = generate(args.root, args.train, args.val, args.seed,
                          num_frames=args.frames, size=args.size)
    print(f"wrote {train} and {val}")


if __name__ == "__main__":
    main()
