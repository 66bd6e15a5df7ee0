"""A generated image-classification task: coloured shapes (for tests, examples and
the small-scale quality benchmark, where no real dataset is at hand).

Each image shows one shape whose *kind* is the label: circle, square, triangle,
cross, ring, diamond, hexagon, star (the first ``num_classes`` of them). Colour,
size, position and rotation are random and carry no label information; with
``hard=True`` the background is a random colour gradient with Gaussian noise and
two distractor strokes are drawn over it, so a model must learn shape, not
colour or position.

``render(label, size, rng, hard)`` draws one image (a PIL image);
``tensor_dataset(n, size, num_classes, seed, hard)`` returns normalised
``(x, y)`` tensors; ``write_imagefolder(root, ...)`` writes PNGs in the
ImageFolder layout (``root/train/CLASS/*.png``, ``root/val/CLASS/*.png``).
"""
from __future__ import annotations

import math
import os
from typing import Tuple

import numpy as np
import torch

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "hexagon", "star")


def _polygon(cx: float, cy: float, r: float, n: int, rot: float, inner: float = 0.0):
    pts = []
    for i in range(n * (2 if inner else 1)):
        rr = r if not inner or i % 2 == 0 else r * inner
        a = rot + 2 * math.pi * i / (n * (2 if inner else 1))
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def render(label: int, size: int, rng: np.random.Generator, hard: bool = False):
    """One image of shape ``SHAPES[label]`` (a ``size`` x ``size`` RGB PIL image)."""
    from PIL import Image, ImageDraw

    if not 0 <= label < len(SHAPES):
        raise ValueError(f"label must be in 0..{len(SHAPES) - 1}, got {label}")
    s = 4  # draw at 4x and downsample: anti-aliased edges
    big = size * s
    if hard:
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, big)[None, :, None]
        bg = (c0 * (1 - t) + c1 * t).repeat(big, 0).astype(np.uint8)
        img = Image.fromarray(bg)
    else:
        img = Image.new("RGB", (big, big), tuple(int(v) for v in rng.integers(0, 80, 3)))
    d = ImageDraw.Draw(img)
    colour = tuple(int(v) for v in rng.integers(60, 256, 3))
    r = big * rng.uniform(0.18, 0.32)
    cx, cy = rng.uniform(r + 2, big - r - 2, 2)
    rot = rng.uniform(0, 2 * math.pi)
    kind = SHAPES[label]
    width = max(2, int(r * 0.3))
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=width)
    elif kind == "square":
        d.polygon(_polygon(cx, cy, r, 4, rot), fill=colour)
    elif kind == "diamond":  # a thin rhombus
        a, b = r, r * 0.45
        pts = [(cx + a * math.cos(rot), cy + a * math.sin(rot)), (cx - b * math.sin(rot), cy + b * math.cos(rot)),
               (cx - a * math.cos(rot), cy - a * math.sin(rot)), (cx + b * math.sin(rot), cy - b * math.cos(rot))]
        d.polygon(pts, fill=colour)
    elif kind == "triangle":
        d.polygon(_polygon(cx, cy, r, 3, rot), fill=colour)
    elif kind == "hexagon":
        d.polygon(_polygon(cx, cy, r, 6, rot), fill=colour)
    elif kind == "star":
        d.polygon(_polygon(cx, cy, r, 5, rot, inner=0.45), fill=colour)
    elif kind == "cross":
        for a in (rot, rot + math.pi / 2):
            dx, dy = r * math.cos(a), r * math.sin(a)
            d.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=colour, width=width)
    if hard:
        for _ in range(2):
            p = rng.uniform(0, big, 4)
            d.line(list(p), fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=max(1, big // 40))
    img = img.resize((size, size), Image.BILINEAR)
    if hard:
        arr = np.asarray(img).astype(np.float32) + rng.normal(0, 20, (size, size, 3))
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    return img


def tensor_dataset(n: int, size: int = 32, num_classes: int = 8, seed: int = 0,
                   hard: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (balanced classes, shuffled) as a float tensor normalised per
    channel to zero mean / unit std over the set, and their labels."""
    if not 2 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 2..{len(SHAPES)}, got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    x = np.stack([np.asarray(render(int(c), size, rng, hard)) for c in labels])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return x, torch.from_numpy(labels).long()


def write_imagefolder(root: str, num_classes: int = 3, train_per_class: int = 8, val_per_class: int = 4,
                      size: int = 32, seed: int = 0, hard: bool = False) -> str:
    """Write ``root/{train,val}/<shape>/<i>.png``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(num_classes):
            folder = os.path.join(root, split, SHAPES[c])
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                render(c, size, rng, hard).save(os.path.join(folder, f"{i:04d}.png"))
    return root
