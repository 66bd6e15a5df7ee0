"""MMDetection plugin end to end (slow): the real ``mim train`` / ``mim test`` /
``--resume`` command lines on a generated COCO set, and 2-process (gloo) training."""
import glob
import os

import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmcv.ops")
pytest.importorskip("mim")

from projects.detection.demo import DEMO_CONFIG, last_checkpoint, read_test_metrics, run_mim  # noqa: E402
from projects.detection.synthetic_coco import data_cfg_options, make_synthetic_coco  # noqa: E402

from dist_utils import run_distributed  # noqa: E402

pytestmark = pytest.mark.slow

# Keep the runs tiny: 8 training images, 2 iterations per epoch (validation after the last one).
TINY = {"train_dataloader.batch_size": 4, "randomness.seed": 0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic_coco"))
    make_synthetic_coco(root, num_train=8, num_val=4, seed=1)
    return root


def _addbias_state(state_dict):
    return {k: v for k, v in state_dict.items() if k.endswith(("init_mean", "count"))}


def test_mim_train_test_and_resume(data_root, tmp_path):
    work = str(tmp_path / "work")
    opts = dict(data_cfg_options(data_root), **TINY, **{"train_cfg.max_epochs": 1})
    out = run_mim("train", DEMO_CONFIG, work, opts, verbose=False)
    assert "Epoch(train) [1][2/2]" in out
    ckpt = last_checkpoint(work)
    assert os.path.basename(ckpt) == "epoch_1.pth"
    first = torch.load(ckpt, weights_only=True)  # (the demo config keeps only the last checkpoint)

    # mim test loads the checkpoint with weights_only=True and reports both metrics
    test_dir = str(tmp_path / "test")
    run_mim("test", DEMO_CONFIG, test_dir, data_cfg_options(data_root), ["--checkpoint", ckpt], verbose=False)
    metrics = read_test_metrics(test_dir)
    for key in ("coco/bbox_mAP", "coco/segm_mAP", "coco/bbox_mAP_50", "coco/segm_mAP_50"):
        assert 0.0 <= metrics[key] <= 1.0, key

    # --resume restores weights, optimizer, schedulers and message hub, and goes on
    opts["train_cfg.max_epochs"] = 2
    out = run_mim("train", DEMO_CONFIG, work, opts, ["--resume", ckpt], verbose=False)
    assert "resumed epoch: 1, iter: 2" in out
    assert "Epoch(train) [2][2/2]" in out and "Epoch(train) [1]" not in out
    second = torch.load(os.path.join(work, "epoch_2.pth"), weights_only=True)
    assert second["meta"]["epoch"] == 2 and second["meta"]["iter"] == 4
    # AddBias calibration continued from the checkpoint (2 + 2 passes), not restarted
    counts = [int(v) for k, v in _addbias_state(second["state_dict"]).items() if k.endswith("count")]
    assert counts and all(c == 4 for c in counts)
    # the logged loss history was restored and extended (2 entries, then 4)
    losses = [len(c["message_hub"]["log_scalars"]["train/loss"].data[0]) for c in (first, second)]
    assert losses == [2, 4]


def _train_rank(rank, world_size, out_dir, data_root):
    from mmengine.config import Config

    from projects.detection.dist_train import build_dist_runner

    torch.set_num_threads(1)
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict({**data_cfg_options(data_root), **TINY,
                         "train_dataloader.batch_size": 2, "train_cfg.max_epochs": 1})
    cfg.work_dir = os.path.join(out_dir, "work")
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # training only
    runner = build_dist_runner(cfg)
    runner.train()
    model = runner.model.module
    torch.save(_addbias_state(model.state_dict()), os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_process_gloo_training_keeps_addbias_means_identical(data_root, tmp_path):
    out_dir = run_distributed(_train_rank, tmp_path, world_size=2, args=(data_root,))
    ranks = [torch.load(p) for p in sorted(glob.glob(os.path.join(out_dir, "rank*.pt")))]
    assert len(ranks) == 2
    # RescaleNet-18: stem + 2 per block x 8 + 3 downsample shortcuts = 20 AddBias, 2 buffers each
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) == 40
    for k in ranks[0]:
        torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0, msg=k)
    # both ranks saw 2 batches (8 images / 2 ranks / batch 2) and calibrated on them
    assert all(int(v) == 2 for k, v in ranks[0].items() if k.endswith("count"))
    assert any(v.abs().sum() > 0 for k, v in ranks[0].items() if k.endswith("init_mean"))
