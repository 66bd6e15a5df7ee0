"""The reusable pieces of ``python -m rescalenet.train``: the official schedule, the
image-folder data, the epoch loop, the process group and checkpoint I/O."""
from .checkpoint_io import load_training_checkpoint, remove_partial_writes, rng_state, save_checkpoint, set_rng_state
from .data import (IMAGENET_MEAN, IMAGENET_STD, TRAIN_AUGMENTATIONS, ResumableSampler, UnreadableImageError,
                   build_loaders, eval_loader, image_folder, image_transform, read_image)
from .distributed import Dist, all_gather, all_reduce_sum, init_distributed
from .loop import CurveLog, EpochProgress, Logger, Progress, evaluate, mixup_batch, train_one_epoch
from .schedule import WarmupSchedule

__all__ = [
    "WarmupSchedule", "Dist", "init_distributed", "all_reduce_sum", "all_gather", "image_transform", "image_folder",
    "build_loaders", "eval_loader", "IMAGENET_MEAN", "IMAGENET_STD", "TRAIN_AUGMENTATIONS", "Progress", "Logger", "CurveLog",
    "mixup_batch", "train_one_epoch", "evaluate", "save_checkpoint", "load_training_checkpoint",
    "remove_partial_writes", "rng_state", "set_rng_state", "EpochProgress", "ResumableSampler",
    "UnreadableImageError", "read_image",
]
