"""Fashion-MNIST from its four original IDX files, checked, split and written as an ImageFolder.

Fashion-MNIST (Zalando Research; 60,000 training and 10,000 test images, grey 28x28,
10 classes) ships as four IDX files; Debian's ``dataset-fashion-mnist`` package puts
them, gzipped, under ``/usr/share/datasets/fashion-mnist/``::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz

(uncompressed copies without ``.gz`` are read too). Every file is checked before use:
magic number, dimensions (28x28), count (60,000 / 10,000), labels in 0-9, as many labels
as images, and no truncation; a file that fails gets one error naming it and what is wrong.

The validation split is carved out of the training set (stratified, fixed seed), never
out of the test set, so a learning rate can be chosen without looking at the test images.

Command line (what ``make data`` runs first)::

    python -m rescalenet.fashion_mnist --data /usr/share/datasets/fashion-mnist --output data/fashion_mnist

writes ``OUTPUT/{train,val,test}/{label}_{name}/NNNNN.png`` (54,000 / 6,000 / 10,000 images;
``NNNNN`` is the image's index in its IDX file; the folder names sort in label order, so
torchvision's ``ImageFolder`` assigns class index = Fashion-MNIST label) and
``OUTPUT/manifest.json`` (counts, seed, sha256 of the source files). A second run with the
same sources and options finds the manifest and writes nothing.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import zlib
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["CLASSES", "DEFAULT_ROOT", "FILES", "SIZES", "FashionMNISTError", "find_file", "read_idx", "load",
           "split_train_val", "Split", "load_splits", "source_files", "manifest_matches", "clear_manifest",
           "write_manifest", "class_folder", "write_imagefolder"]

# Label order of the dataset's own README.
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
# split -> (images file, labels file), names without the .gz suffix
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIZES = {"train": 60000, "test": 10000}
IMAGE_SHAPE = (28, 28)
# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte), the number of dimensions
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
HOW_TO_GET = ("install Debian's dataset-fashion-mnist package (`apt-get install dataset-fashion-mnist`, "
              f"files in {DEFAULT_ROOT}) or download the four IDX files from "
              "https://github.com/zalandoresearch/fashion-mnist and pass their folder")

# mean and std of the 60,000 training images (grey, scaled to [0, 1]): every reader normalizes with these
MEAN, STD = 0.286, 0.353


class FashionMNISTError(ValueError):
    """A missing, truncated or malformed Fashion-MNIST file (the message names it)."""


def find_file(root: str, stem: str) -> str:
    """``root/stem.gz`` or ``root/stem``, whichever exists (the gzipped one first)."""
    for name in (stem + ".gz", stem):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    if not os.path.isdir(root):
        raise FashionMNISTError(f"Fashion-MNIST folder {root!r} does not exist: {HOW_TO_GET}")
    raise FashionMNISTError(f"{os.path.join(root, stem)}[.gz] is missing from {root!r}: {HOW_TO_GET}")


def _read_bytes(path: str) -> bytes:
    if not path.endswith(".gz"):
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError as e:  # the gzip stream ends early
        raise FashionMNISTError(f"{path} is truncated (the gzip stream ends early: {e}); copy it again") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise FashionMNISTError(f"{path} is not a valid gzip file ({e})") from None


def read_idx(path: str, magic: int, count: Optional[int] = None,
             item_shape: Tuple[int, ...] = ()) -> np.ndarray:
    """The array stored in one IDX file, after checking its header against ``magic``, the
    number of items (``count``, or any when None) and the shape of one item."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FashionMNISTError(f"{path} is truncated: {len(data)} bytes, shorter than its IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = {IMAGES_MAGIC: "an images", LABELS_MAGIC: "a labels"}.get(magic, "an IDX")
        raise FashionMNISTError(f"{path} is not {kind} file: magic number 0x{found:08x}, expected 0x{magic:08x} "
                                "(a wrong or swapped file?)")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != tuple(item_shape):
        raise FashionMNISTError(f"{path} holds items of shape {dims[1:]}, expected {tuple(item_shape)}")
    if count is not None and dims[0] != count:
        raise FashionMNISTError(f"{path} holds {dims[0]} items, expected {count}")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = "is truncated" if len(data) < expected else "has trailing bytes"
        raise FashionMNISTError(f"{path} {what}: {len(data)} bytes, its header {dims} needs {expected}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def load(root: str = DEFAULT_ROOT,
         sizes: Optional[Mapping[str, int]] = SIZES) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{'train': (images, labels), 'test': (images, labels)}``: images uint8 ``[N, 28, 28]``,
    labels int64 ``[N]`` in 0-9. ``sizes`` is the expected image count of each split (the
    real dataset's by default; ``None`` accepts any count, for small test files)."""
    out = {}
    for split, (images_stem, labels_stem) in FILES.items():
        count = None if sizes is None else sizes[split]
        images_path, labels_path = find_file(root, images_stem), find_file(root, labels_stem)
        images = read_idx(images_path, IMAGES_MAGIC, count, IMAGE_SHAPE)
        labels = read_idx(labels_path, LABELS_MAGIC, count)
        if len(labels) != len(images):
            raise FashionMNISTError(f"{labels_path} holds {len(labels)} labels but {images_path} holds "
                                    f"{len(images)} images: the two files do not belong together")
        if labels.size and labels.max() >= len(CLASSES):
            bad = int(np.argmax(labels >= len(CLASSES)))
            raise FashionMNISTError(f"{labels_path}: label {int(labels[bad])} at index {bad} is outside "
                                    f"0..{len(CLASSES) - 1} (Fashion-MNIST has {len(CLASSES)} classes)")
        out[split] = (images, labels.astype(np.int64))
    return out


def split_train_val(labels: np.ndarray, val_size: int = 6000, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` into the training set, stratified by class: each class gives
    ``val_size`` x its share of the set (largest remainders round), drawn with ``seed``.
    Both index arrays are sorted; the test set is never involved."""
    labels = np.asarray(labels)
    if not 0 < val_size < len(labels):
        raise ValueError(f"val_size must be in 1..{len(labels) - 1} for {len(labels)} training images, got {val_size}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = val_size * counts / len(labels)
    take = np.floor(exact).astype(int)
    # hand the remaining images to the classes with the largest fractional parts (ties: lower label)
    for i in np.argsort(-(exact - take), kind="stable")[: val_size - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    val = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


def class_folder(label: int) -> str:
    """``'0_t_shirt_top'`` ... ``'9_ankle_boot'``: the label first, so the names sort in label order."""
    return f"{label:d}_" + re.sub(r"[^a-z0-9]+", "_", CLASSES[label].lower()).strip("_")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_files(root: str) -> Dict[str, str]:
    """``{file name: sha256}`` of the four source files (raises if one is missing)."""
    return {os.path.basename(p): _sha256(p)
            for p in (find_file(root, stem) for stems in FILES.values() for stem in stems)}


def read_manifest(output: str) -> Optional[dict]:
    """``output/manifest.json``, or None when it is absent or unreadable."""
    try:
        with open(os.path.join(output, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def manifest_matches(output: str, wanted: Mapping[str, object]) -> bool:
    """Whether ``output`` was completely written from the same inputs: its manifest
    records every key of ``wanted`` with the same value."""
    old = read_manifest(output)
    return old is not None and all(old.get(k) == v for k, v in json.loads(json.dumps(wanted)).items())


def clear_manifest(output: str) -> None:
    """Remove ``output``'s manifest before rewriting what it describes, so that an
    interrupted write is redone by the next run instead of trusted."""
    path = os.path.join(output, MANIFEST)
    if os.path.exists(path):
        os.remove(path)


def write_manifest(output: str, manifest: Mapping[str, object]) -> str:
    """Write ``output/manifest.json`` atomically (last, once everything else is written)."""
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, MANIFEST)
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


class Split(NamedTuple):
    """One split: uint8 images ``[N, 28, 28]``, int64 labels ``[N]``, and each image's
    index in the IDX file it comes from."""
    images: np.ndarray
    labels: np.ndarray
    index: np.ndarray


def load_splits(root: str, val_size: int = 6000, seed: int = 0,
                sizes: Optional[Mapping[str, int]] = SIZES) -> Dict[str, Split]:
    """``{'train', 'val', 'test'}`` -> :class:`Split`: :func:`load` with the training set
    split by :func:`split_train_val`. Every set built from Fashion-MNIST in this project
    (the ImageFolder, the detection canvases, the video clips) draws from these splits."""
    data = load(root, sizes)
    (images, labels), (test_images, test_labels) = data["train"], data["test"]
    train_idx, val_idx = split_train_val(labels, val_size, seed)
    return {"train": Split(images[train_idx], labels[train_idx], train_idx),
            "val": Split(images[val_idx], labels[val_idx], val_idx),
            "test": Split(test_images, test_labels, np.arange(len(test_labels)))}


def _write_split(folder: str, split: Split, log: Callable[[str], None], name: str) -> None:
    from PIL import Image

    for label in range(len(CLASSES)):
        os.makedirs(os.path.join(folder, class_folder(label)), exist_ok=True)
    total = len(split.labels)
    step = max(1, total // 5)
    for n, (image, label, index) in enumerate(zip(*split), 1):
        Image.fromarray(image).save(os.path.join(folder, class_folder(int(label)), f"{index:05d}.png"))
        if n % step == 0 or n == total:
            log(f"  {name}: {n}/{total} images")


def write_imagefolder(root: str, output: str, val_size: int = 6000, seed: int = 0,
                      sizes: Optional[Mapping[str, int]] = SIZES,
                      log: Callable[[str], None] = print) -> dict:
    """Write ``output/{train,val,test}/{label}_{name}/NNNNN.png`` and ``output/manifest.json``
    from the IDX files in ``root``; returns the manifest. Nothing is written when
    ``output``'s manifest already records the same sources, seed and split sizes (the
    manifest is written last, so an interrupted run is redone, not trusted)."""
    wanted = dict(format=MANIFEST_FORMAT, sources=source_files(root), seed=seed, val_size=val_size)
    if manifest_matches(output, wanted):
        log(f"{output}: already written ({MANIFEST} matches the sources and options); nothing to do")
        return read_manifest(output)
    splits = load_splits(root, val_size, seed, sizes)
    log(f"writing Fashion-MNIST from {root} to {output}: " +
        ", ".join(f"{name} {len(split.labels)}" for name, split in splits.items()))
    clear_manifest(output)
    for name, split in splits.items():
        folder = os.path.join(output, name)
        shutil.rmtree(folder, ignore_errors=True)  # no stale images from another split or seed
        _write_split(folder, split, log, name)
    manifest = dict(wanted, classes=[class_folder(i) for i in range(len(CLASSES))],
                    counts={name: int(len(split.labels)) for name, split in splits.items()},
                    per_class={name: np.bincount(split.labels, minlength=len(CLASSES)).tolist()
                               for name, split in splits.items()})
    log(f"wrote {write_manifest(output, manifest)}")
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rescalenet.fashion_mnist",
        description="Check the Fashion-MNIST IDX files and write them as an ImageFolder "
                    "(train / stratified val carved from train / test) for `python -m rescalenet.train`.")
    parser.add_argument("--data", default=DEFAULT_ROOT,
                        help=f"folder with the four IDX files, gzipped or not (default: {DEFAULT_ROOT})")
    parser.add_argument("--output", default="data/fashion_mnist",
                        help="ImageFolder root to write (default: %(default)s)")
    parser.add_argument("--val-size", type=int, default=6000,
                        help="validation images taken from train (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        write_imagefolder(args.data, args.output, args.val_size, args.seed, log=lambda m: print(m, flush=True))
    except FashionMNISTError as e:
        sys.exit(f"rescalenet.fashion_mnist: error: {e}")


if __name__ == "__main__":
    main()
