"""Image-folder datasets and loaders of the training harness (torchvision)."""
from __future__ import annotations

import itertools
import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch.utils.data import Sampler

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TRAIN_AUGMENTATIONS", "image_transform", "image_folder",
           "build_loaders", "eval_loader", "ResumableSampler", "UnreadableImageError", "read_image"]

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


class UnreadableImageError(ValueError):
    """An image file of the dataset that PIL cannot decode."""


def read_image(path: str):
    """torchvision's default image loader, with one error naming a corrupt file (raised
    when the loader reaches it: a dataset is not decoded before training)."""
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError, "image file is truncated"
        detail = type(e).__name__ + ("" if path in str(e) else f": {e}")  # (PIL's message may repeat the path)
        raise UnreadableImageError(
            f"cannot read the image {path!r} ({detail}): the file is corrupt or not an image; "
            "delete or replace it, then run the same command with --resume auto") from None


def image_folder(root: str, transform, what: str = "dataset"):
    """torchvision's ImageFolder with one clear error for a folder it cannot use."""
    from torchvision import datasets

    if not os.path.isdir(root):
        raise SystemExit(f"rescalenet.train: error: the {what} folder {root!r} does not exist")
    try:
        ds = datasets.ImageFolder(root, transform, loader=read_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"rescalenet.train: error: the {what} folder {root!r} is not an ImageFolder "
                         f"(ROOT/CLASS/IMAGE): {e}") from None
    return ds


class ResumableSampler(Sampler):
    """A training sampler that a run resumed in the middle of an epoch can replay from
    where it stopped, without loading the samples it skips.

    Wraps a ``RandomSampler`` (whose order depends on its ``generator``: the state it had
    when the epoch's permutation was drawn is :meth:`state_dict`) or a
    ``DistributedSampler`` (whose order depends on ``set_epoch`` alone). After
    :meth:`resume`, the next epoch draws the saved order and starts at sample ``skip``;
    the epochs that follow are those of the uninterrupted run.
    """

    def __init__(self, sampler: Sampler, generator: Optional[torch.Generator] = None):
        self.sampler, self.generator = sampler, generator
        self._epoch_state: Optional[torch.Tensor] = None
        self._pending: Optional[torch.Tensor] = None
        self._skip = 0

    def __iter__(self) -> Iterator[int]:
        if self.generator is not None:
            if self._pending is not None:
                self.generator.set_state(self._pending)
            self._epoch_state = self.generator.get_state()
        skip, self._pending, self._skip = self._skip, None, 0
        return itertools.islice(iter(self.sampler), skip, None)

    def __len__(self) -> int:  # a whole epoch, also while a resumed one is replayed
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def state_dict(self) -> Dict[str, Optional[torch.Tensor]]:
        """What the current epoch's order depends on (saved in mid-epoch checkpoints)."""
        return {"generator": self._epoch_state}

    def next_epoch_state(self, draws_before: int) -> Dict[str, Optional[torch.Tensor]]:
        """What the next epoch's order will depend on (saved at an epoch end): the
        generator's state after ``draws_before`` more draws (the DataLoader draws its
        workers' base seed from it when it starts an epoch, unless its workers persist)."""
        if self.generator is None:
            return {"generator": None}
        ahead = torch.Generator()
        ahead.set_state(self.generator.get_state())
        for _ in range(draws_before):
            torch.empty((), dtype=torch.int64).random_(generator=ahead)
        return {"generator": ahead.get_state()}

    def resume(self, state: Dict[str, Optional[torch.Tensor]], skip: int) -> None:
        """Make the next epoch replay the order of ``state`` from its sample ``skip``."""
        self._pending = state.get("generator")
        self._skip = skip


def build_loaders(train_set, val_set, batch_size: int, workers: int, seed: int, rank: int, world_size: int,
                  pin: bool, limit_eval_batches: int = 0) -> Tuple:
    """Shuffled, drop-last training batches (a :class:`ResumableSampler` over a
    ``RandomSampler``, or a ``DistributedSampler`` under torchrun) and validation batches
    of 3x the size (:func:`eval_loader`). Returns ``(train, val, sampler)``."""
    from torch.utils.data import DataLoader, RandomSampler, Subset
    from torch.utils.data.distributed import DistributedSampler

    if len(train_set) < batch_size * world_size:
        raise SystemExit(f"rescalenet.train: error: {len(train_set)} training images are fewer than one "
                         f"global batch ({batch_size} x {world_size} processes)")
    g = torch.Generator().manual_seed(seed)
    if world_size > 1:
        sampler = ResumableSampler(DistributedSampler(train_set, world_size, rank, shuffle=True, seed=seed,
                                                      drop_last=True))
    else:  # what DataLoader(shuffle=True, generator=g) builds: the same order as before
        sampler = ResumableSampler(RandomSampler(train_set, generator=g), g)
    train = DataLoader(train_set, batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
                       drop_last=True, generator=g, persistent_workers=workers > 0)
    val = None if val_set is None else eval_loader(val_set, batch_size * 3, workers, rank, world_size, pin,
                                                   limit_eval_batches)
    return train, val, sampler


def eval_loader(dataset, batch_size: int, workers: int, rank: int = 0, world_size: int = 1, pin: bool = False,
                limit_batches: int = 0):
    """Evaluation batches, in order; every rank scores a disjoint slice. ``limit_batches``
    caps them by scoring every k-th image of the whole set, not its first batches: an
    ImageFolder is sorted by class, so its first batches would hold one class only."""
    from torch.utils.data import DataLoader, Subset

    indices = range(len(dataset))
    if limit_batches and limit_batches * batch_size < len(dataset):
        indices = indices[::-(-len(dataset) // (limit_batches * batch_size))]
    indices = indices[rank::world_size]
    part = dataset if len(indices) == len(dataset) else Subset(dataset, indices)
    return DataLoader(part, batch_size, shuffle=False, num_workers=workers, pin_memory=pin)
