"""rescalenet.fashion_mnist on tiny IDX files the tests write: reading, refusals, the
stratified split and the ImageFolder writer (never the real data)."""
import gzip
import json
import os

import numpy as np
import pytest

from rescalenet import fashion_mnist as fm

SIZES = {"train": 40, "test": 20}


def write_idx(path, array, magic, compress=True):
    """An IDX file: magic, one big-endian uint32 per dimension, the uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(data)
    return path


def fake_split(n, offset=0):
    """``n`` items on black, each a block whose grey level encodes its index
    (``40 + offset + i``, opaque when pasted), labels cycling 0-9."""
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        images[i, 4:24, 6:22] = 40 + offset + i
    return images, np.arange(n) % 10


def write_fake(root, sizes=SIZES, compress=True):
    os.makedirs(root, exist_ok=True)
    ext = ".gz" if compress else ""
    data = {}
    for split, (images_stem, labels_stem) in fm.FILES.items():
        # train items 40..79, test items 100..119: a pasted item shows which file it came from
        images, labels = fake_split(sizes[split], offset=0 if split == "train" else 60)
        write_idx(os.path.join(root, images_stem + ext), images, fm.IMAGES_MAGIC, compress)
        write_idx(os.path.join(root, labels_stem + ext), labels, fm.LABELS_MAGIC, compress)
        data[split] = (images, labels)
    return data


@pytest.fixture
def idx_root(tmp_path):
    root = str(tmp_path / "idx")
    return root, write_fake(root)


@pytest.mark.parametrize("compress", [True, False])
def test_load_reads_gzipped_and_plain_files(tmp_path, compress):
    expected = write_fake(str(tmp_path), compress=compress)
    data = fm.load(str(tmp_path), sizes=SIZES)
    for split in ("train", "test"):
        images, labels = data[split]
        assert images.dtype == np.uint8 and images.shape == (SIZES[split], 28, 28)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, expected[split][0])
        np.testing.assert_array_equal(labels, expected[split][1])


def test_classes_are_the_ten_in_label_order():
    assert len(fm.CLASSES) == 10 and fm.CLASSES[0] == "T-shirt/top" and fm.CLASSES[9] == "Ankle boot"
    folders = [fm.class_folder(i) for i in range(10)]
    assert folders == sorted(folders) and folders[0] == "0_t_shirt_top" and "/" not in "".join(folders)


def test_real_sizes_are_enforced(idx_root):
    root, _ = idx_root
    with pytest.raises(fm.FashionMNISTError, match=r"train-images-idx3-ubyte\.gz holds 40 items, expected 60000"):
        fm.load(root)


def _refusal(root, match):
    with pytest.raises(fm.FashionMNISTError, match=match):
        fm.load(root, sizes=SIZES)


def test_missing_folder_and_file_are_named(tmp_path, idx_root):
    _refusal(str(tmp_path / "nowhere"), r"folder .*nowhere.* does not exist: install Debian's dataset-fashion-mnist")
    root, _ = idx_root
    os.remove(os.path.join(root, "t10k-labels-idx1-ubyte.gz"))
    _refusal(root, r"t10k-labels-idx1-ubyte\[\.gz\] is missing")


def test_truncated_gzip_is_refused(idx_root):
    root, _ = idx_root
    path = os.path.join(root, "train-images-idx3-ubyte.gz")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    _refusal(root, r"train-images-idx3-ubyte\.gz is truncated")


def test_truncated_plain_file_is_refused(tmp_path):
    write_fake(str(tmp_path), compress=False)
    path = str(tmp_path / "t10k-images-idx3-ubyte")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-100])
    _refusal(str(tmp_path), r"t10k-images-idx3-ubyte is truncated: .* needs")
    with open(path, "wb") as f:
        f.write(data + b"\0")
    _refusal(str(tmp_path), r"t10k-images-idx3-ubyte has trailing bytes")


def test_swapped_files_fail_on_the_magic_number(idx_root):
    root, _ = idx_root
    images, labels = (os.path.join(root, f"train-{k}.gz") for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))
    os.rename(images, images + ".tmp")
    os.rename(labels, images)
    os.rename(images + ".tmp", labels)
    _refusal(root, r"train-images-idx3-ubyte\.gz is not an images file: magic number 0x00000801")


def test_wrong_image_size_is_refused(idx_root):
    root, _ = idx_root
    write_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz"), np.zeros((20, 32, 32), np.uint8), fm.IMAGES_MAGIC)
    _refusal(root, r"t10k-images-idx3-ubyte\.gz holds items of shape \(32, 32\), expected \(28, 28\)")


def test_label_count_and_range_are_checked(idx_root):
    root, _ = idx_root
    write_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz"), np.zeros(19, np.uint8), fm.LABELS_MAGIC)
    with pytest.raises(fm.FashionMNISTError, match=r"holds 19 labels but .*t10k-images-idx3-ubyte\.gz holds 20"):
        fm.load(root, sizes=None)
    labels = np.arange(20) % 10
    labels[7] = 12
    write_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz"), labels, fm.LABELS_MAGIC)
    _refusal(root, r"t10k-labels-idx1-ubyte\.gz: label 12 at index 7 is outside 0\.\.9")


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), [100, 100, 100, 100, 100, 100, 100, 100, 50, 150])
    train, val = fm.split_train_val(labels, val_size=100, seed=0)
    assert len(val) == 100 and len(train) == len(labels) - 100
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    # each class gives its share: 10 each, 5 for the small class, 15 for the large one
    assert np.bincount(labels[val], minlength=10).tolist() == [10] * 8 + [5, 15]
    again, _ = fm.split_train_val(labels, val_size=100, seed=0)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(val, fm.split_train_val(labels, val_size=100, seed=1)[1])
    # uneven shares: the largest remainders get the rounding
    assert len(fm.split_train_val(np.arange(33) % 10, val_size=7)[1]) == 7
    with pytest.raises(ValueError, match="val_size must be in 1..999"):
        fm.split_train_val(labels, val_size=1000)


def test_load_splits_keeps_the_test_set_whole(idx_root):
    root, expected = idx_root
    splits = fm.load_splits(root, val_size=10, sizes=SIZES)
    assert [len(splits[s].labels) for s in ("train", "val", "test")] == [30, 10, 20]
    np.testing.assert_array_equal(splits["test"].images, expected["test"][0])
    np.testing.assert_array_equal(splits["val"].images, expected["train"][0][splits["val"].index])
    assert np.intersect1d(splits["train"].index, splits["val"].index).size == 0


def test_write_imagefolder_layout_manifest_and_skip(idx_root, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    root, expected = idx_root
    out = str(tmp_path / "folder")
    logs = []
    manifest = fm.write_imagefolder(root, out, val_size=10, sizes=SIZES, log=logs.append)
    assert manifest["counts"] == {"train": 30, "val": 10, "test": 20}
    assert manifest["per_class"]["val"] == [1] * 10
    assert set(manifest["sources"]) == {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f) == manifest
    for split, n in manifest["counts"].items():
        dataset = torchvision.datasets.ImageFolder(os.path.join(out, split))
        assert len(dataset) == n and dataset.classes == [fm.class_folder(i) for i in range(10)]
        for path, label in dataset.samples:  # ImageFolder's class index is the Fashion-MNIST label
            index = int(os.path.basename(path)[:-4])
            source = expected["test" if split == "test" else "train"]
            assert label == source[1][index]
            np.testing.assert_array_equal(np.asarray(dataset.loader(path).convert("L")), source[0][index])
    # the same sources and options: nothing written
    stamp = os.path.getmtime(os.path.join(out, "manifest.json"))
    logs.clear()
    fm.write_imagefolder(root, out, val_size=10, sizes=SIZES, log=logs.append)
    assert "already written" in logs[0] and os.path.getmtime(os.path.join(out, "manifest.json")) == stamp
    # another seed: rewritten, and no image of the old split is left behind
    fm.write_imagefolder(root, out, val_size=10, seed=1, sizes=SIZES, log=logs.append)
    assert sum(len(files) for _, _, files in os.walk(os.path.join(out, "val"))) == 10


def test_interrupted_write_is_redone(idx_root, tmp_path):
    root, _ = idx_root
    out = str(tmp_path / "folder")
    fm.write_imagefolder(root, out, val_size=10, sizes=SIZES, log=lambda m: None)
    os.remove(os.path.join(out, "manifest.json"))  # as if killed before the manifest
    logs = []
    fm.write_imagefolder(root, out, val_size=10, sizes=SIZES, log=logs.append)
    assert not any("already written" in m for m in logs)
    assert os.path.exists(os.path.join(out, "manifest.json"))


def test_command_line_error_names_the_folder(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"rescalenet.fashion_mnist: error: Fashion-MNIST folder .*nowhere"):
        fm.main(["--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")])
