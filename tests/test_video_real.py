"""Fashion-Clips (projects/video/fashion_clips.py) on tiny IDX files the test writes, the
Fashion-Clips configs, and the video benchmark's data check; one slow mim train/test
round trip of the benchmark."""
import os
import sys

import numpy as np
import pytest

pytest.importorskip("mmaction")

from projects.video import fashion_clips  # noqa: E402 (applies the mmaction2 wheel fix first)
from rescalenet import fashion_mnist as fm  # noqa: E402

from test_fashion_mnist import SIZES, write_fake  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_detection_real as protocol  # noqa: E402
import bench_video_real as bench  # noqa: E402

TINY = dict(num_train=20, num_val=10, num_test=10, frames=6, size=32, min_side=12, max_side=20, max_speed=3,
            val_size=10, sizes=SIZES)


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("idx"))
    write_fake(root)
    return root


@pytest.fixture(scope="module")
def clips_root(idx_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fashion_clips"))
    fashion_clips.build(idx_root, out, seed=5, log=lambda m: None, **TINY)
    return out


def _read_list(root, split):
    with open(os.path.join(root, f"{split}_list.txt")) as f:
        return [line.split() for line in f if line.strip()]


def _frames(root, split, frame_dir):
    from PIL import Image

    names = sorted(os.listdir(os.path.join(root, split, frame_dir)))
    return np.stack([np.asarray(Image.open(os.path.join(root, split, frame_dir, n))) for n in names]), names


def test_make_clip_moves_the_item_and_keeps_it_inside():
    rng = np.random.default_rng(0)
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 6:22] = 200
    clip = fashion_clips.make_clip(rng, item, frames=12, size=40, min_side=20, max_side=20, max_speed=3)
    assert clip.shape == (12, 40, 40) and clip.dtype == np.uint8
    centres = []
    for frame in clip:
        ys, xs = np.nonzero(frame > 150)  # the item (the background stays darker)
        assert len(ys) > 50  # whole item inside the frame every time
        centres.append((ys.mean(), xs.mean()))
    assert np.abs(np.diff(np.array(centres), axis=0)).sum() > 3  # it moves


def test_rawframe_layout_and_balanced_labels(clips_root):
    for split, n in (("train", 20), ("val", 10), ("test", 10)):
        rows = _read_list(clips_root, split)
        assert len(rows) == n
        assert np.bincount([int(label) for _, _, label in rows], minlength=10).tolist() == [n // 10] * 10
        for frame_dir, total, _ in rows:
            clip, names = _frames(clips_root, split, frame_dir)
            assert clip.shape == (6, 32, 32) and int(total) == 6
            assert names == [f"img_{t:05d}.jpg" for t in range(1, 7)]


def test_each_split_shows_its_own_items_with_their_labels(idx_root, tmp_path, monkeypatch):
    """The fake items' grey levels encode their index in the IDX files: record the item of
    every clip and check it belongs to the clip's split and has the clip's label."""
    shown = []
    make_clip = fashion_clips.make_clip

    def recording(rng, item, **kwargs):
        shown.append(int(item.max()))
        return make_clip(rng, item, **kwargs)

    monkeypatch.setattr(fashion_clips, "make_clip", recording)
    out = str(tmp_path / "clips")
    fashion_clips.build(idx_root, out, seed=5, log=lambda m: None, **TINY)
    splits = fm.load_splits(idx_root, val_size=10, sizes=SIZES)
    start = 0
    for split in ("train", "val", "test"):
        levels = {int(v): int(lab) for v, lab in zip(splits[split].images.max(axis=(1, 2)), splits[split].labels)}
        rows = _read_list(out, split)
        for level, (_, _, label) in zip(shown[start:start + len(rows)], rows):
            assert levels.get(level) == int(label), (split, level)
        start += len(rows)
    assert start == len(shown) == 40


def test_build_is_deterministic_skips_and_refuses_bad_options(idx_root, clips_root, tmp_path):
    again = str(tmp_path / "again")
    fashion_clips.build(idx_root, again, seed=5, log=lambda m: None, **TINY)
    assert _read_list(again, "test") == _read_list(clips_root, "test")
    np.testing.assert_array_equal(_frames(again, "val", "clip_00003")[0], _frames(clips_root, "val", "clip_00003")[0])
    logs = []
    fashion_clips.build(idx_root, again, seed=5, log=logs.append, **TINY)
    assert "already written" in logs[0]
    with pytest.raises(ValueError, match="item sides 12..40 px must lie in 8..32"):
        fashion_clips.build(idx_root, str(tmp_path / "x"), **dict(TINY, max_side=40))
    with pytest.raises(ValueError, match="at least one clip"):
        fashion_clips.build(idx_root, str(tmp_path / "x"), **dict(TINY, num_test=0))


def test_configs_build_rescalenet_and_bn_slowonly_with_the_same_head():
    from mmengine.config import Config
    from torch import nn

    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules

    register_all_modules()
    built = {}
    for name in ("rescale18", "r18_bn"):
        cfg = Config.fromfile(os.path.join(ROOT, "configs", f"slowonly_{name}_fashion.py"))
        assert cfg.test_dataloader.dataset.ann_file.endswith("test_list.txt")
        assert cfg.val_dataloader.dataset.ann_file.endswith("val_list.txt")
        model = MODELS.build(cfg.model)
        assert model.cls_head.num_classes == 10 and model.cls_head.in_channels == 512
        built[name] = model
    assert type(built["rescale18"].backbone).__name__ == "RescaleResNet3dSlowOnly"
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in built["rescale18"].backbone.modules())
    bn = built["r18_bn"].backbone
    assert type(bn).__name__ == "ResNet3dSlowOnly" and bn.depth == 18 and bn.norm_eval is False
    # the same layout (SlowOnly stem and inflation): the same conv kernels, in any module order
    convs = {name: sorted(tuple(m.weight.shape) for m in model.backbone.modules() if isinstance(m, nn.Conv3d))
             for name, model in built.items()}
    assert convs["rescale18"] == convs["r18_bn"]


def test_bench_check_data_refuses_missing_and_mismatched_lists(clips_root, tmp_path):
    with pytest.raises(SystemExit, match=r"train_list\.txt .* not found: .*python -m projects.video.fashion_clips"):
        bench._check_clips(str(tmp_path))
    bench._check_clips(clips_root)
    wrong = str(tmp_path / "wrong")
    for split in ("train", "val", "test"):
        os.makedirs(os.path.join(wrong, split))
        with open(os.path.join(wrong, f"{split}_list.txt"), "w") as f:
            f.write("clip_00000 6 3\nclip_00001 6 12\n")
    with pytest.raises(SystemExit, match=r"labels \[12\] outside 0\.\.9: the configs have a 10-class head"):
        bench._check_clips(wrong)


def test_data_cfg_options_point_every_split_at_the_root():
    opts = fashion_clips.data_cfg_options("/d")
    assert opts["train_dataloader.dataset.ann_file"] == "/d/train_list.txt"
    assert opts["test_dataloader.dataset.data_prefix.img"] == "/d/test"
    assert fashion_clips.data_cfg_options("/d", "val")["test_dataloader.dataset.ann_file"] == "/d/val_list.txt"


@pytest.mark.slow
def test_benchmark_round_trip_through_mim(clips_root, tmp_path, monkeypatch):
    """One tiny run of the benchmark: mim train mmaction2 (2 iterations) on Fashion-Clips,
    mim test on val and test, result.json written."""
    monkeypatch.setattr(protocol, "RUNS", str(tmp_path / "runs"))
    task = bench._video_task()
    protocol.main(task, ["--data", clips_root, "--quick", "--models", "r18_bn", "--tag", "t"])
    result = protocol.load_result(task, "t", "r18_bn", 0.05, 0)
    assert result["status"] == "done" and result["iterations"] == 2
    for split in ("val", "test"):
        assert 0.0 <= result[split]["acc/top1"] <= result[split]["acc/top5"] <= 1.0
