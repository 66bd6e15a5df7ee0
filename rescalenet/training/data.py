"""Image-folder datasets and loaders of the training harness (torchvision)."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TRAIN_AUGMENTATIONS", "image_transform", "image_folder",
           "build_loaders"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# 'rrc': the official ImageNet recipe (RandomResizedCrop + flip); 'crop-flip': the CIFAR
# recipe for small images (a random crop after padding by size/8, and a flip); 'none'
TRAIN_AUGMENTATIONS = ("rrc", "crop-flip", "none")


def image_transform(train: bool, img_size: int, augmentation: str = "rrc", val_resize: Optional[int] = None,
                    in_chans: int = 3, mean: Optional[Sequence[float]] = None,
                    std: Optional[Sequence[float]] = None):
    """The train or eval transform: augmentation (train) or resize + centre crop (eval,
    ``val_resize`` default ``img_size / 0.875``), to ``in_chans`` channels (1: greyscale),
    normalised by ``mean`` / ``std`` (default: ImageNet's, or 0.5 / 0.25 for one channel)."""
    from torchvision import transforms

    if augmentation not in TRAIN_AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {TRAIN_AUGMENTATIONS}, got {augmentation!r}")
    mean = tuple(mean) if mean else (IMAGENET_MEAN if in_chans == 3 else (0.5,) * in_chans)
    std = tuple(std) if std else (IMAGENET_STD if in_chans == 3 else (0.25,) * in_chans)
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(f"--mean and --std need {in_chans} values (one per input channel), got {mean}, {std}")
    steps = [transforms.Grayscale(1)] if in_chans == 1 else []
    if train and augmentation == "rrc":
        steps += [transforms.RandomResizedCrop(img_size), transforms.RandomHorizontalFlip()]
    elif train and augmentation == "crop-flip":
        steps += [transforms.Resize(img_size), transforms.RandomCrop(img_size, padding=max(1, img_size // 8)),
                  transforms.RandomHorizontalFlip()]
    else:
        resize = img_size if train else (val_resize or int(round(img_size / 0.875)))
        steps += [transforms.Resize(resize), transforms.CenterCrop(img_size)]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])


def image_folder(root: str, transform, what: str = "dataset"):
    """torchvision's ImageFolder with one clear error for a folder it cannot use."""
    from torchvision import datasets

    if not os.path.isdir(root):
        raise SystemExit(f"rescalenet.train: error: the {what} folder {root!r} does not exist")
    try:
        ds = datasets.ImageFolder(root, transform)
    except (FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"rescalenet.train: error: the {what} folder {root!r} is not an ImageFolder "
                         f"(ROOT/CLASS/IMAGE): {e}") from None
    return ds


def build_loaders(train_set, val_set, batch_size: int, workers: int, seed: int, rank: int, world_size: int,
                  pin: bool) -> Tuple:
    """Shuffled, drop-last training batches (a DistributedSampler under torchrun) and
    validation batches of 3x the size (every rank scores a disjoint slice)."""
    from torch.utils.data import DataLoader, Subset
    from torch.utils.data.distributed import DistributedSampler

    if len(train_set) < batch_size * world_size:
        raise SystemExit(f"rescalenet.train: error: {len(train_set)} training images are fewer than one "
                         f"global batch ({batch_size} x {world_size} processes)")
    sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=seed,
                                 drop_last=True) if world_size > 1 else None
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(train_set, batch_size, shuffle=sampler is None, sampler=sampler,
                       num_workers=workers, pin_memory=pin, drop_last=True, generator=g,
                       persistent_workers=workers > 0)
    val = None
    if val_set is not None:
        part = Subset(val_set, range(rank, len(val_set), world_size)) if world_size > 1 else val_set
        val = DataLoader(part, batch_size * 3, shuffle=False, num_workers=workers, pin_memory=pin)
    return train, val, sampler
