"""Fashion-Clips: rawframe clips of one real Fashion-MNIST item moving across the frame,
labelled with the item's class (10 classes), in MMAction2's ``RawframeDataset`` layout.

Each clip shows one item, resized to a random side in ``min_side..max_side`` pixels, on
a dark noisy background (a new noise draw every frame). The item enters at a random
point and moves in a straight line at a random speed (up to ``max_speed`` pixels per
frame) in a random direction, bouncing off the frame's borders, so where it is and how
it moves carry no information about the label: the class is in the item's appearance,
seen at a different place in every frame. Clips of the ``train`` split show items of the
Fashion-MNIST training split, ``val`` items of the validation split carved out of it
(:func:`rescalenet.fashion_mnist.split_train_val`, the classification ImageFolder's
split), ``test`` items of the test set; the classes are balanced in every split.

Layout (``filename_tmpl='img_{:05}.jpg'``, ``start_index=1``)::

    ROOT/{train,val,test}/clip_00000/img_00001.jpg ...
    ROOT/{train,val,test}_list.txt   # "<frame_dir> <total_frames> <label>", frame_dir relative to ROOT/<split>
    ROOT/manifest.json               # options and source checksums; a matching one skips the write

Command (part of ``make data``)::

    python -m projects.video.fashion_clips --data /usr/share/datasets/fashion-mnist --output data/fashion_clips
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Callable, Dict, Mapping, Optional

import numpy as np

from rescalenet import fashion_mnist as fm

__all__ = ["CLASSES", "SPLITS", "DEFAULTS", "make_clip", "build", "data_cfg_options"]

CLASSES = fm.CLASSES
SPLITS = ("train", "val", "test")
# Item pixels at ALPHA_LEVEL (of 255) and above are opaque; fainter ones blend into the background.
ALPHA_LEVEL = 32
# The set the benchmarks train on (see benchmarks/bench_video_real.py for the measured cost).
DEFAULTS = dict(num_train=4000, num_val=1000, num_test=1000, frames=8, size=40, min_side=16, max_side=28,
                max_speed=3)


def _resize(item: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR)).astype(np.float64)


def _bounce(start: float, step: float, length: int, limit: float) -> np.ndarray:
    """Positions ``start + t * step`` for ``t < length`` reflected into ``[0, limit]``."""
    if limit <= 0:
        return np.zeros(length)
    pos = np.mod(start + step * np.arange(length), 2 * limit)
    return np.where(pos > limit, 2 * limit - pos, pos)


def make_clip(rng: np.random.Generator, item: np.ndarray, frames: int, size: int, min_side: int,
              max_side: int, max_speed: float) -> np.ndarray:
    """uint8 ``[frames, size, size]``: ``item`` (uint8 ``[28, 28]``) moving across a noisy frame."""
    side = int(rng.integers(min_side, max_side + 1))
    sprite = _resize(item, side)
    alpha = np.clip(sprite / ALPHA_LEVEL, 0, 1)
    limit = size - side
    angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(max_speed / 4, max_speed)
    ys = _bounce(rng.uniform(0, limit), speed * np.sin(angle), frames, limit)
    xs = _bounce(rng.uniform(0, limit), speed * np.cos(angle), frames, limit)
    background = rng.uniform(0, 48)
    clip = np.clip(rng.normal(background, 8, (frames, size, size)), 0, 255)
    for t in range(frames):
        y, x = int(round(ys[t])), int(round(xs[t]))
        region = clip[t, y:y + side, x:x + side]
        clip[t, y:y + side, x:x + side] = alpha * sprite + (1 - alpha) * region
    return np.round(clip).astype(np.uint8)


def _write_split(root: str, split: str, num: int, rng: np.random.Generator, items: fm.Split,
                 options: Mapping[str, int], log: Callable[[str], None]) -> str:
    from PIL import Image

    folder = os.path.join(root, split)
    shutil.rmtree(folder, ignore_errors=True)  # no stale clips from other options
    # balanced classes: clip i has label i % 10 and a random item of that class
    by_class = [np.flatnonzero(items.labels == c) for c in range(len(CLASSES))]
    missing = [CLASSES[c] for c, idx in enumerate(by_class) if len(idx) == 0]
    if missing:
        raise ValueError(f"the {split} split has no item of class(es) {missing}: cannot balance the clips")
    lines = []
    step = max(1, num // 5)
    for n in range(num):
        label = n % len(CLASSES)
        item = items.images[by_class[label][rng.integers(len(by_class[label]))]]
        clip = make_clip(rng, item, **options)
        frame_dir = f"clip_{n:05d}"
        os.makedirs(os.path.join(folder, frame_dir))
        for t, frame in enumerate(clip, start=1):
            Image.fromarray(frame).save(os.path.join(folder, frame_dir, f"img_{t:05d}.jpg"), quality=95)
        lines.append(f"{frame_dir} {len(clip)} {label}")
        if (n + 1) % step == 0 or n + 1 == num:
            log(f"  {split}: {n + 1}/{num} clips")
    ann = os.path.join(root, f"{split}_list.txt")
    with open(ann, "w") as f:
        f.write("\n".join(lines) + "\n")
    return ann


def build(data: str, output: str, num_train: int = DEFAULTS["num_train"], num_val: int = DEFAULTS["num_val"],
          num_test: int = DEFAULTS["num_test"], frames: int = DEFAULTS["frames"], size: int = DEFAULTS["size"],
          min_side: int = DEFAULTS["min_side"], max_side: int = DEFAULTS["max_side"],
          max_speed: int = DEFAULTS["max_speed"], seed: int = 0, val_size: int = 6000,
          sizes: Optional[Mapping[str, int]] = fm.SIZES, log: Callable[[str], None] = print) -> dict:
    """Write the clips from the Fashion-MNIST IDX files in ``data`` to ``output``; returns
    the manifest. Skipped when ``output``'s manifest records the same sources and options.
    ``val_size`` and ``sizes`` are passed to :func:`rescalenet.fashion_mnist.load_splits`."""
    counts = dict(train=num_train, val=num_val, test=num_test)
    if min(counts.values()) < 1:
        raise ValueError(f"every split needs at least one clip, got {counts}")
    if frames < 1:
        raise ValueError(f"need at least one frame per clip, got {frames}")
    if not 8 <= min_side <= max_side <= size:
        raise ValueError(f"item sides {min_side}..{max_side} px must lie in 8..{size} (the frame side)")
    if max_speed < 0:
        raise ValueError(f"max_speed must be >= 0, got {max_speed}")
    options = dict(frames=frames, size=size, min_side=min_side, max_side=max_side, max_speed=max_speed)
    wanted = dict(format=fm.MANIFEST_FORMAT, sources=fm.source_files(data), seed=seed, val_size=val_size,
                  counts=counts, **options)
    if fm.manifest_matches(output, wanted):
        log(f"{output}: already written ({fm.MANIFEST} matches the sources and options); nothing to do")
        return fm.read_manifest(output)
    splits = fm.load_splits(data, val_size, sizes=sizes)
    log(f"writing Fashion-Clips to {output}: " + ", ".join(f"{s} {n}" for s, n in counts.items()) +
        f" clips of {frames} x {size} x {size} px, items of {min_side}-{max_side} px")
    fm.clear_manifest(output)
    # one generator per split, so a split's clips do not depend on the others' sizes
    lists = {split: os.path.basename(_write_split(output, split, counts[split], np.random.default_rng([seed, i]),
                                                  splits[split], options, log))
             for i, split in enumerate(SPLITS)}
    manifest = dict(wanted, classes=list(CLASSES), lists=lists)
    log(f"wrote {fm.write_manifest(output, manifest)}")
    return manifest


def data_cfg_options(root: str, test_split: str = "test") -> Dict[str, str]:
    """``--cfg-options`` pointing a Fashion-Clips config at ``root``: training on ``train``,
    validation on ``val``, ``mim test`` on ``test_split``."""
    opts = {}
    for loader, split in (("train", "train"), ("val", "val"), ("test", test_split)):
        opts[f"{loader}_dataloader.dataset.ann_file"] = os.path.join(root, f"{split}_list.txt")
        opts[f"{loader}_dataloader.dataset.data_prefix.img"] = os.path.join(root, split)
    return opts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m projects.video.fashion_clips",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", default=fm.DEFAULT_ROOT,
                        help="folder with the Fashion-MNIST IDX files (default: %(default)s)")
    parser.add_argument("--output", default="data/fashion_clips", help="rawframe root to write (default: %(default)s)")
    for key, value in DEFAULTS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=value, help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        build(args.data, args.output, **{k: getattr(args, k) for k in DEFAULTS}, seed=args.seed,
              log=lambda m: print(m, flush=True))
    except (fm.FashionMNISTError, ValueError) as e:
        sys.exit(f"projects.video.fashion_clips: error: {e}")


if __name__ == "__main__":
    main()
