"""Fashion-COCO: a COCO-format instance-segmentation set of real Fashion-MNIST items
pasted onto larger canvases.

Each canvas (grey, ``size`` x ``size``, a dark noisy background) shows ``min_items`` to
``max_items`` Fashion-MNIST items, each resized to a random side in
``min_side..max_side`` pixels (28 px originals: about 0.9x to 2x) at a random position,
boxes never overlapping. An item's instance mask is its own pixels above
``MASK_LEVEL`` (the originals lie on a black background); its box is the mask's
bounding box; its category is its Fashion-MNIST class (10 categories, ids 1-10 in label
order). Masks are stored as uncompressed COCO RLE, exact to the pixel. Canvases of the
``train`` split use items of the Fashion-MNIST training split, ``val`` items of the
validation split carved out of it (:func:`rescalenet.fashion_mnist.split_train_val`, the
same split as the classification ImageFolder), ``test`` items of the test set: no item
image appears in two splits. Everything is drawn from ``seed``.

Layout (the standard COCO one, so the stock ``CocoDataset`` and ``CocoMetric`` read it)::

    ROOT/annotations/instances_{train,val,test}2017.json
    ROOT/{train,val,test}2017/000000.png ...
    ROOT/manifest.json          # options and source checksums; a matching one skips the write

Command (part of ``make data``)::

    python -m projects.detection.fashion_coco --data /usr/share/datasets/fashion-mnist --output data/fashion_coco
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from rescalenet import fashion_mnist as fm

__all__ = ["CLASSES", "SPLITS", "MASK_LEVEL", "DEFAULTS", "rle_encode", "draw_canvas", "build", "data_cfg_options"]

CLASSES = fm.CLASSES
SPLITS = ("train", "val", "test")
# Item pixels at or above this grey level (of 255) belong to the item's mask; the
# originals are drawn on black, so this separates item from background.
MASK_LEVEL = 16
# Item pixels at ALPHA_LEVEL and above are opaque; fainter ones blend into the background.
ALPHA_LEVEL = 2 * MASK_LEVEL
MIN_MASK_PIXELS = 16  # an item whose mask is smaller than this (a faint, tiny item) is drawn again
# The set the benchmarks train on (configs/mask_rcnn_*_fashion.py count their schedule in
# iterations of it): 2,000 training canvases of 128 px with 2-4 items each.
DEFAULTS = dict(num_train=2000, num_val=300, num_test=500, size=128, min_items=2, max_items=4,
                min_side=24, max_side=56)


def rle_encode(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a boolean ``[H, W]`` mask: run lengths in column-major
    order, starting with a run of zeros (pycocotools' ``frPyObjects`` format)."""
    flat = np.asarray(mask, bool).T.reshape(-1)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    if flat.size and flat[0]:
        runs = np.concatenate([[0], runs])
    return dict(size=[int(mask.shape[0]), int(mask.shape[1])], counts=[int(r) for r in runs])


def _resize(item: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))


def draw_canvas(rng: np.random.Generator, items: np.ndarray, labels: np.ndarray, size: int,
                min_items: int, max_items: int, min_side: int, max_side: int
                ) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]:
    """One canvas: uint8 ``[size, size]`` and ``[(label, full-canvas boolean mask)]`` per item.

    Items are drawn with replacement from ``items`` / ``labels``; an item that finds no
    free place in 20 tries is left out, so a crowded canvas can hold fewer than
    ``min_items`` (never none: the first always fits an empty canvas)."""
    background = rng.uniform(0, 48)
    canvas = np.clip(rng.normal(background, 8, (size, size)), 0, 255)
    taken: List[Tuple[int, int, int, int]] = []
    objects: List[Tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(min_items, max_items + 1))):
        for _attempt in range(20):
            i = int(rng.integers(len(labels)))
            side = int(rng.integers(min_side, max_side + 1))
            item = _resize(items[i], side)
            ys, xs = np.nonzero(item >= MASK_LEVEL)
            if len(ys) < MIN_MASK_PIXELS:
                continue
            top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
            box = (left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1)
            if any(box[0] < b[2] + 2 and b[0] < box[2] + 2 and box[1] < b[3] + 2 and b[1] < box[3] + 2
                   for b in taken):
                continue
            alpha = np.clip(item / ALPHA_LEVEL, 0, 1)
            region = canvas[top:top + side, left:left + side]
            canvas[top:top + side, left:left + side] = alpha * item + (1 - alpha) * region
            mask = np.zeros((size, size), bool)
            mask[top:top + side, left:left + side] = item >= MASK_LEVEL
            taken.append(box)
            objects.append((int(labels[i]), mask))
            break
    return np.round(canvas).astype(np.uint8), objects


def _annotation(ann_id: int, image_id: int, label: int, mask: np.ndarray) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return dict(id=ann_id, image_id=image_id, category_id=label + 1, segmentation=rle_encode(mask),
                area=int(mask.sum()), bbox=[x0, y0, x1 - x0, y1 - y0], iscrowd=0)


def _write_split(root: str, split: str, num: int, rng: np.random.Generator, items: fm.Split,
                 options: Mapping[str, int], log: Callable[[str], None]) -> Dict[str, int]:
    from PIL import Image

    img_dir = os.path.join(root, f"{split}2017")
    shutil.rmtree(img_dir, ignore_errors=True)  # no stale canvases from other options
    os.makedirs(img_dir)
    images, annotations = [], []
    step = max(1, num // 5)
    for n in range(num):
        canvas, objects = draw_canvas(rng, items.images, items.labels, **options)
        name = f"{n:06d}.png"
        Image.fromarray(canvas).save(os.path.join(img_dir, name))
        images.append(dict(id=n + 1, file_name=name, width=canvas.shape[1], height=canvas.shape[0]))
        for label, mask in objects:
            annotations.append(_annotation(len(annotations) + 1, n + 1, label, mask))
        if (n + 1) % step == 0 or n + 1 == num:
            log(f"  {split}: {n + 1}/{num} canvases, {len(annotations)} items")
    ann_file = os.path.join(root, "annotations", f"instances_{split}2017.json")
    os.makedirs(os.path.dirname(ann_file), exist_ok=True)
    with open(ann_file, "w") as f:
        json.dump(dict(images=images, annotations=annotations,
                       categories=[dict(id=i + 1, name=n, supercategory="fashion") for i, n in enumerate(CLASSES)]), f)
    return dict(images=num, items=len(annotations))


def build(data: str, output: str, num_train: int = DEFAULTS["num_train"], num_val: int = DEFAULTS["num_val"],
          num_test: int = DEFAULTS["num_test"], size: int = DEFAULTS["size"],
          min_items: int = DEFAULTS["min_items"], max_items: int = DEFAULTS["max_items"],
          min_side: int = DEFAULTS["min_side"], max_side: int = DEFAULTS["max_side"], seed: int = 0,
          val_size: int = 6000, sizes: Optional[Mapping[str, int]] = fm.SIZES,
          log: Callable[[str], None] = print) -> dict:
    """Write the set from the Fashion-MNIST IDX files in ``data`` to ``output``; returns the
    manifest. Skipped when ``output``'s manifest records the same sources and options.
    ``val_size`` and ``sizes`` are passed to :func:`rescalenet.fashion_mnist.load_splits`."""
    counts = dict(train=num_train, val=num_val, test=num_test)
    if min(counts.values()) < 1:
        raise ValueError(f"every split needs at least one canvas, got {counts}")
    if not 1 <= min_items <= max_items:
        raise ValueError(f"need 1 <= min_items <= max_items, got {min_items}, {max_items}")
    if not 8 <= min_side <= max_side <= size:
        raise ValueError(f"item sides {min_side}..{max_side} px must lie in 8..{size} (the canvas side)")
    options = dict(size=size, min_items=min_items, max_items=max_items, min_side=min_side, max_side=max_side)
    wanted = dict(format=fm.MANIFEST_FORMAT, sources=fm.source_files(data), seed=seed, val_size=val_size,
                  counts=counts, mask_level=MASK_LEVEL, **options)
    if fm.manifest_matches(output, wanted):
        log(f"{output}: already written ({fm.MANIFEST} matches the sources and options); nothing to do")
        return fm.read_manifest(output)
    splits = fm.load_splits(data, val_size, sizes=sizes)
    log(f"writing Fashion-COCO to {output}: " + ", ".join(f"{s} {n}" for s, n in counts.items()) +
        f" canvases of {size} px, {min_items}-{max_items} items of {min_side}-{max_side} px")
    fm.clear_manifest(output)
    # one generator per split, so a split's canvases do not depend on the others' sizes
    written = {split: _write_split(output, split, counts[split], np.random.default_rng([seed, i]),
                                   splits[split], options, log)
               for i, split in enumerate(SPLITS)}
    manifest = dict(wanted, classes=list(CLASSES), written=written)
    log(f"wrote {fm.write_manifest(output, manifest)}")
    return manifest


def data_cfg_options(root: str, test_split: str = "test") -> Dict[str, str]:
    """``--cfg-options`` pointing a Fashion-COCO config at ``root``: training on
    ``train``, validation on ``val``, ``mim test`` on ``test_split``."""
    root = root.rstrip("/") + "/"
    opts = {}
    for loader, split in (("train", "train"), ("val", "val"), ("test", test_split)):
        opts[f"{loader}_dataloader.dataset.data_root"] = root
        opts[f"{loader}_dataloader.dataset.ann_file"] = f"annotations/instances_{split}2017.json"
        opts[f"{loader}_dataloader.dataset.data_prefix.img"] = f"{split}2017/"
    for evaluator, split in (("val", "val"), ("test", test_split)):
        opts[f"{evaluator}_evaluator.ann_file"] = f"{root}annotations/instances_{split}2017.json"
    return opts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m projects.detection.fashion_coco",
                                     description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1])
    parser.add_argument("--data", default=fm.DEFAULT_ROOT,
                        help="folder with the Fashion-MNIST IDX files (default: %(default)s)")
    parser.add_argument("--output", default="data/fashion_coco", help="COCO root to write (default: %(default)s)")
    for key, value in DEFAULTS.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=value, help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        build(args.data, args.output, **{k: getattr(args, k) for k in DEFAULTS}, seed=args.seed,
              log=lambda m: print(m, flush=True))
    except (fm.FashionMNISTError, ValueError) as e:
        sys.exit(f"projects.detection.fashion_coco: error: {e}")


if __name__ == "__main__":
    main()
