"""A small COCO-format instance-segmentation set of coloured shapes, for the demo and tests.

Every image shows 1 to ``max_objects`` non-overlapping squares (rotated),
disks and triangles on a noisy background; each object is annotated with its
polygon (the exact polygon it was drawn from), its box and its area, in the
standard COCO layout, so the stock ``CocoDataset`` and ``CocoMetric`` read it::

    root/annotations/instances_train2017.json   root/train2017/000000.png ...
    root/annotations/instances_val2017.json     root/val2017/000000.png ...

Usage: ``python -m projects.detection.synthetic_coco OUT_DIR [--train N --val N --size S]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Dict, List, Tuple

import cv2
import numpy as np

__all__ = ["CLASSES", "make_synthetic_coco", "data_cfg_options"]

CLASSES = ("square", "disk", "triangle")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "square":
        thetas = angle + np.arange(4) * math.pi / 2 + math.pi / 4
    elif kind == "triangle":
        thetas = angle + np.arange(3) * 2 * math.pi / 3
    else:  # disk
        thetas = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    return np.stack([cx + r * np.cos(thetas), cy + r * np.sin(thetas)], 1)


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _draw_image(rng: np.random.Generator, size: int, max_objects: int, min_radius: int, max_radius: int):
    bg = rng.integers(0, 256, 3)
    img = np.clip(bg + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    objects: List[Tuple[int, np.ndarray]] = []
    boxes: List[Tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = float(rng.uniform(min_radius, max_radius))
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            label = int(rng.integers(len(CLASSES)))
            poly = np.clip(_polygon(CLASSES[label], cx, cy, r, float(rng.uniform(0, 2 * math.pi))), 0, size - 1)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            if all(x1 < bx0 - 2 or x0 > bx1 + 2 or y1 < by0 - 2 or y0 > by1 + 2 for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue
        color = rng.integers(0, 256, 3)
        while np.abs(color.astype(int) - bg).sum() < 180:  # keep objects visible
            color = rng.integers(0, 256, 3)
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], tuple(int(c) for c in color))
        objects.append((label, poly))
        boxes.append((x0, y0, x1, y1))
    return img, objects


def _write_split(root: str, split: str, num: int, rng: np.random.Generator, size: int,
                 max_objects: int, min_radius: int, max_radius: int) -> str:
    img_dir = os.path.join(root, f"{split}2017")
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        img, objects = _draw_image(rng, size, max_objects, min_radius, max_radius)
        name = f"{i:06d}.png"
        cv2.imwrite(os.path.join(img_dir, name), img)
        images.append(dict(id=i + 1, file_name=name, width=size, height=size))
        for label, poly in objects:
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            annotations.append(dict(
                id=len(annotations) + 1,
                image_id=i + 1,
                category_id=label + 1,
                segmentation=[[round(float(v), 2) for v in poly.reshape(-1)]],
                area=round(_area(poly), 2),
                bbox=[round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
                iscrowd=0,
            ))
    ann_file = os.path.join(root, "annotations", f"instances_{split}2017.json")
    os.makedirs(os.path.dirname(ann_file), exist_ok=True)
    with open(ann_file, "w") as f:
        json.dump(dict(
            images=images,
            annotations=annotations,
            categories=[dict(id=i + 1, name=n, supercategory="shape") for i, n in enumerate(CLASSES)],
        ), f)
    return ann_file


def make_synthetic_coco(root: str, num_train: int = 64, num_val: int = 16, size: int = 128,
                        max_objects: int = 3, min_radius: int = 12, max_radius: int = 28,
                        seed: int = 0) -> Dict[str, str]:
    """Write the set under ``root``; returns the annotation file of each split.

    ``min_radius``/``max_radius`` bound the shapes' circumradius in pixels.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError("need at least one training and one validation image")
    if not 0 < min_radius <= max_radius or 2 * max_radius + 2 >= size:
        raise ValueError(f"radii {min_radius}..{max_radius} do not fit {size}x{size} images")
    rng = np.random.default_rng(seed)
    return {split: _write_split(root, split, n, rng, size, max_objects, min_radius, max_radius)
            for split, n in (("train", num_train), ("val", num_val))}


def data_cfg_options(root: str) -> Dict[str, str]:
    """``--cfg-options`` entries that point a COCO config at ``root`` (standard layout)."""
    root = root.rstrip("/") + "/"
    opts = {}
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        opts[f"{loader}.dataset.data_root"] = root
    for evaluator in ("val_evaluator", "test_evaluator"):
        opts[f"{evaluator}.ann_file"] = root + "annotations/instances_val2017.json"
    return opts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for split, path in make_synthetic_coco(args.root, args.train, args.val, args.size, seed=args.seed).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
