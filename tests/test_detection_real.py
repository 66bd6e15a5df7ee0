"""Fashion-COCO (projects/detection/fashion_coco.py) on tiny IDX files the test writes, the
Fashion-COCO configs, and the detection benchmark's protocol; one slow mim train/test
round trip of the benchmark."""
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmcv.ops")

from pycocotools import mask as mask_utils  # noqa: E402 (an mmdet dependency)

from projects.detection import fashion_coco  # noqa: E402
from rescalenet import fashion_mnist as fm  # noqa: E402

from test_fashion_mnist import SIZES, write_fake  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_detection_real as bench  # noqa: E402

# config name -> the normalization layers its backbone has
CONFIGS = {"rescale18": set(), "rescale50": set(), "r18_bn": {"BatchNorm2d"}, "r18_gn": {"GroupNorm"},
           "r50_bn": {"BatchNorm2d"}, "r50_gn": {"GroupNorm"}}
TINY = dict(num_train=6, num_val=3, num_test=3, size=64, min_items=2, max_items=3, min_side=12, max_side=24,
            val_size=10, sizes=SIZES)


@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("idx"))
    write_fake(root)
    return root


@pytest.fixture(scope="module")
def coco_root(idx_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fashion_coco"))
    fashion_coco.build(idx_root, out, seed=3, log=lambda m: None, **TINY)
    return out


def _decode(rle):
    return mask_utils.decode(mask_utils.frPyObjects(rle, *rle["size"])).astype(bool)


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (64, 64)])
def test_rle_round_trips_through_pycocotools(shape):
    rng = np.random.default_rng(0)
    for mask in (rng.random(shape) > 0.5, np.ones(shape, bool), np.zeros(shape, bool)):
        rle = fashion_coco.rle_encode(mask)
        assert sum(rle["counts"]) == mask.size
        np.testing.assert_array_equal(_decode(rle), mask)


def _item_level(canvas, mask):
    """The grey level most of an item's mask shows: its interior, exact when opaque."""
    values, counts = np.unique(canvas[mask], return_counts=True)
    return int(values[counts.argmax()])


def _load(root, split):
    with open(os.path.join(root, "annotations", f"instances_{split}2017.json")) as f:
        return json.load(f)


def test_annotations_match_the_canvases(coco_root):
    from PIL import Image

    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        coco = _load(coco_root, split)
        assert [c["name"] for c in coco["categories"]] == list(fm.CLASSES)
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
        assert len(coco["images"]) == n
        per_image = {}
        for ann in coco["annotations"]:
            mask = _decode(ann["segmentation"])
            ys, xs = np.nonzero(mask)
            x0, y0 = xs.min(), ys.min()
            assert ann["bbox"] == [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]  # the mask's box
            assert ann["area"] == mask.sum() and 1 <= ann["category_id"] <= 10 and ann["iscrowd"] == 0
            per_image.setdefault(ann["image_id"], []).append(mask)
        for image in coco["images"]:
            canvas = np.asarray(Image.open(os.path.join(coco_root, f"{split}2017", image["file_name"])))
            assert canvas.shape == (64, 64)
            masks = per_image[image["id"]]
            assert 1 <= len(masks) <= 3
            assert np.sum(masks, axis=0).max() == 1  # items never overlap
            for mask in masks:  # the fake items are blocks of grey level >= 40 on black
                assert _item_level(canvas, mask) >= 40


def test_splits_draw_from_disjoint_items(idx_root, coco_root):
    """The fake items' grey levels encode their index in the IDX files: every pasted item
    of a split must come from that split's items."""
    from PIL import Image

    splits = fm.load_splits(idx_root, val_size=10, sizes=SIZES)
    for split in ("train", "val", "test"):
        allowed = {int(v) for v in splits[split].images.max(axis=(1, 2))}
        coco = _load(coco_root, split)
        files = {im["id"]: im["file_name"] for im in coco["images"]}
        for ann in coco["annotations"]:
            canvas = np.asarray(Image.open(os.path.join(coco_root, f"{split}2017", files[ann["image_id"]])))
            level = _item_level(canvas, _decode(ann["segmentation"]))
            assert level in allowed, (split, level)
            label = ann["category_id"] - 1
            assert label == int(splits[split].labels[list(splits[split].images.max(axis=(1, 2))).index(level)])


def test_build_is_deterministic_and_skips_a_finished_set(idx_root, coco_root, tmp_path):
    again = str(tmp_path / "again")
    fashion_coco.build(idx_root, again, seed=3, log=lambda m: None, **TINY)
    for split in ("train", "val", "test"):
        assert _load(again, split) == _load(coco_root, split)
    logs = []
    fashion_coco.build(idx_root, again, seed=3, log=logs.append, **TINY)
    assert logs and "already written" in logs[0]
    fashion_coco.build(idx_root, again, seed=4, log=logs.append, **TINY)
    assert _load(again, "train") != _load(coco_root, "train")


def test_build_refuses_bad_options(idx_root, tmp_path):
    with pytest.raises(ValueError, match="item sides 12..80 px must lie in 8..64"):
        fashion_coco.build(idx_root, str(tmp_path), **dict(TINY, max_side=80))
    with pytest.raises(ValueError, match="at least one canvas"):
        fashion_coco.build(idx_root, str(tmp_path), **dict(TINY, num_val=0))
    with pytest.raises(fm.FashionMNISTError, match="does not exist"):
        fashion_coco.build(str(tmp_path / "nowhere"), str(tmp_path))


def test_data_cfg_options_point_every_split_at_the_root():
    opts = fashion_coco.data_cfg_options("/d")
    assert opts["train_dataloader.dataset.ann_file"] == "annotations/instances_train2017.json"
    assert opts["val_dataloader.dataset.data_prefix.img"] == "val2017/"
    assert opts["test_evaluator.ann_file"] == "/d/annotations/instances_test2017.json"
    assert fashion_coco.data_cfg_options("/d", "val")["test_evaluator.ann_file"] == "/d/annotations/instances_val2017.json"


def test_configs_build_the_same_detector_with_another_backbone():
    from mmengine.config import Config
    from torch import nn

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    import projects.detection  # noqa: F401 (registers RescaleNetBackbone)

    heads = {}
    for name, expected in CONFIGS.items():
        cfg = Config.fromfile(os.path.join(ROOT, "configs", f"mask_rcnn_{name}_fashion.py"))
        assert cfg.train_dataloader.dataset.metainfo["classes"] == fm.CLASSES
        assert cfg.test_evaluator.ann_file.endswith("instances_test2017.json")
        model = MODELS.build(cfg.model)
        backbone = model.backbone
        norms = {type(m).__name__ for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))}
        assert norms == expected, name
        assert model.roi_head.bbox_head.num_classes == 10
        if "_" in name:
            assert backbone.depth == int(name[1:3]) and backbone.norm_eval is False and backbone.frozen_stages == -1
        # everything but the backbone is the same detector
        rest = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        assert heads.setdefault(backbone.depth, rest) == rest, name


def test_bench_check_data_refuses_missing_and_mismatched_sets(coco_root, tmp_path):
    with pytest.raises(SystemExit, match=r"instances_train2017\.json not found: .*python -m projects.detection.fashion_coco"):
        bench._check_coco(str(tmp_path))
    bench._check_coco(coco_root)
    wrong = str(tmp_path / "wrong")
    os.makedirs(os.path.join(wrong, "annotations"))
    for split in ("train", "val", "test"):
        coco = _load(coco_root, split)
        coco["categories"] = coco["categories"][:3]
        with open(os.path.join(wrong, "annotations", f"instances_{split}2017.json"), "w") as f:
            json.dump(coco, f)
    with pytest.raises(SystemExit, match="has 3 categories .* expect the 10 Fashion-MNIST classes"):
        bench._check_coco(wrong)


def test_train_curve_reads_every_sitting(tmp_path):
    for stamp, lines in (("20260101_000000", ["Epoch(train) [1][ 50/100]  lr: 1e-3  eta: 0:01:00  time: 1.5000  "
                                              "data_time: 0.01  loss: 2.5000  loss_cls: 1.0",
                                              "Epoch(train) [1][100/100]  time: 1.2000  loss: 2.0000"]),
                         ("20260101_010000", ["Epoch(train) [2][ 50/100]  time: 1.1000  loss: nan"])):
        os.makedirs(tmp_path / stamp)
        (tmp_path / stamp / f"{stamp}.log").write_text("\n".join(f"2026/01/01 - mmengine - INFO - {line}" for line in lines))
    assert bench.train_curve(str(tmp_path))[:2] == [[50, 1.5, 2.5], [100, 1.2, 2.0]]
    last = bench.train_curve(str(tmp_path))[2]
    assert last[:2] == [150, 1.1] and last[2] != last[2]  # nan


def test_protocol_sweeps_depth_18_and_shares_the_lr_with_depth_50(tmp_path, monkeypatch):
    task = bench._detection_task()
    budget = bench.Budget(lrs=[0.01, 0.02], seeds=[0, 1])
    todo = bench.pending(task, budget, list(task.models), "all")
    assert todo[:6] == [(m, lr, 0) for lr in (0.01, 0.02) for m in ("rescale18", "r18_bn", "r18_gn")]
    assert todo[6:9] == [(m, None, 1) for m in ("rescale18", "r18_bn", "r18_gn")]
    assert {m for m, _, _ in todo[9:]} == {"rescale50", "r50_bn", "r50_gn"} and len(todo) == 15

    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    assert bench.chosen_lr(task, "t", budget, "bn") is None  # sweep not done
    for lr, score in ((0.01, 0.30), (0.02, 0.25)):
        out = bench.run_dir(task, "t", "r18_bn", lr, 0)
        os.makedirs(out)
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"lr": lr, "status": "done", "val": {"coco/bbox_mAP": score}}, f)
    assert bench.chosen_lr(task, "t", budget, "bn") == 0.01


def _write_sweep_result(task, model, lr, score, status="done"):
    out = bench.run_dir(task, "t", model, lr, 0)
    os.makedirs(out)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"lr": lr, "status": status, "val": {"coco/bbox_mAP": score}}, f)


def test_the_sweep_goes_past_a_winning_edge_before_an_lr_is_chosen(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    task = bench._detection_task()
    budget = bench.Budget(lrs=[0.01, 0.02], seeds=[0, 1], max_extensions=2)
    _write_sweep_result(task, "r18_bn", 0.01, 0.30)
    _write_sweep_result(task, "r18_bn", 0.02, 0.25)
    assert bench.next_sweep_lr(task, "t", budget, "bn") == 0.005  # the low edge won
    assert bench.chosen_lr(task, "t", budget, "bn") is None
    _write_sweep_result(task, "r18_bn", 0.005, 0.28)
    assert bench.next_sweep_lr(task, "t", budget, "bn") is None  # the best is inside now
    assert bench.chosen_lr(task, "t", budget, "bn") == 0.01
    # a top edge that wins goes up, at most max_extensions times; a diverged run loses
    _write_sweep_result(task, "rescale18", 0.01, 0.30)
    _write_sweep_result(task, "rescale18", 0.02, 0.40)
    assert bench.next_sweep_lr(task, "t", budget, "rescale") == 0.04
    _write_sweep_result(task, "rescale18", 0.04, 0.45)
    assert bench.next_sweep_lr(task, "t", budget, "rescale") == 0.08
    _write_sweep_result(task, "rescale18", 0.08, None, "diverged")
    assert bench.next_sweep_lr(task, "t", budget, "rescale") is None
    assert bench.chosen_lr(task, "t", budget, "rescale") == 0.04
    # the seeds phase waits for the extensions: a family with one pending is skipped
    _write_sweep_result(task, "r18_gn", 0.01, 0.20)
    _write_sweep_result(task, "r18_gn", 0.02, 0.22)
    assert bench.chosen_lr(task, "t", budget, "gn") is None


def test_a_model_that_detects_nothing_scores_zero_and_a_missing_metric_is_an_error(tmp_path):
    task = bench._detection_task()
    timing = {"data_time": 0.01, "time": 0.2}
    log = "mmengine - ERROR - coco_metric.py - The testing results of the whole dataset is empty.\n"
    scored = bench.scored_metrics(task, dict(timing), log, str(tmp_path))
    assert scored["no_detections"] is True
    assert all(scored[k] == 0.0 for k in (task.score, *task.metrics))
    full = {**timing, **{k: 0.5 for k in (task.score, *task.metrics)}}
    assert bench.scored_metrics(task, full, "", str(tmp_path)) == full
    with pytest.raises(SystemExit, match="reported no .*coco/bbox_mAP.*test.out"):
        bench.scored_metrics(task, dict(timing), "Testing finished successfully.", str(tmp_path))


@pytest.mark.slow
def test_benchmark_round_trip_through_mim(idx_root, coco_root, tmp_path, monkeypatch):
    """One tiny run of the benchmark: mim train mmdet (2 iterations) on Fashion-COCO, then
    mim test on val and test, result.json written, a second invocation skips it."""
    monkeypatch.setattr(bench, "RUNS", str(tmp_path / "runs"))
    task = bench._detection_task()
    argv = ["--data", coco_root, "--quick", "--models", "rescale18", "--tag", "t"]
    bench.main(task, argv)
    result = bench.load_result(task, "t", "rescale18", 0.02, 0)
    assert result["status"] == "done" and result["iterations"] == 2
    for split in ("val", "test"):
        for key in ("coco/bbox_mAP", "coco/segm_mAP"):
            assert 0.0 <= result[split][key] <= 1.0
    stamp = os.path.getmtime(os.path.join(bench.run_dir(task, "t", "rescale18", 0.02, 0), "result.json"))
    bench.main(task, argv)
    assert os.path.getmtime(os.path.join(bench.run_dir(task, "t", "rescale18", 0.02, 0), "result.json")) == stamp


def test_a_loss_that_ends_far_above_its_start_or_not_finite_is_a_divergence():
    assert bench.run_status([3.0, 1.2, 0.7]) == "done"
    assert bench.run_status([2.3, 2.1, 3e9, 2e20]) == "diverged"  # finite, and still diverged
    assert bench.run_status([2.3, float("nan")]) == "diverged"
    assert bench.run_status([2.3, float("inf"), 2.0]) == "diverged"
    assert bench.run_status([]) == "done"


def test_a_recorded_run_is_read_with_the_divergence_rule(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    task = bench._detection_task()
    folder = bench.run_dir(task, "t", "rescale18", 0.1, 0)
    os.makedirs(folder)
    with open(os.path.join(folder, "result.json"), "w") as f:
        json.dump({"lr": 0.1, "status": "done", "train_curve": [[50, 1.0, 2.27], [750, 1.0, 2.3e20]],
                   "val": {"coco/bbox_mAP": 0.0}}, f)
    assert bench.load_result(task, "t", "rescale18", 0.1, 0)["status"] == "diverged"
