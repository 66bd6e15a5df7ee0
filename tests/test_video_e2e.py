"""MMAction2 plugin end to end (slow): the real ``mim train`` / ``mim test`` / ``--resume``
command lines on generated rawframe clips, checkpoints loaded with ``weights_only=True``,
and 2-process (gloo) training."""
import glob
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("mmaction")
pytest.importorskip("mim")

from projects.video.demo import DEMO_CONFIG, ROOT, last_checkpoint, read_test_metrics, run_mim  # noqa: E402
from projects.video.synthetic_clips import data_cfg_options, generate  # noqa: E402

from dist_utils import run_distributed  # noqa: E402

pytestmark = pytest.mark.slow

# 16 training clips, batch 4: 4 iterations per epoch; no validation while training.
TINY = {"train_dataloader.batch_size": 4, "train_cfg.val_interval": 100, "randomness.seed": 0}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic_clips"))
    generate(root, num_train=16, num_val=8, seed=1)
    return root


def _addbias_state(state_dict):
    return {k: v for k, v in state_dict.items() if k.endswith(("init_mean", "count"))}


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    env["OMP_NUM_THREADS"] = "2"
    return env


def test_mim_train_test_and_resume(data_root, tmp_path):
    work = str(tmp_path / "work")
    opts = dict(data_cfg_options(data_root), **TINY, **{"train_cfg.max_epochs": 1})
    out = run_mim("train", DEMO_CONFIG, work, opts, verbose=False, env=_env())
    assert "Epoch(train) [1][4/4]" in out
    ckpt = last_checkpoint(work)
    assert os.path.basename(ckpt) == "epoch_1.pth"

    # torch 2.11 refuses the checkpoint under weights_only=True without the allowlist ...
    load = f"import torch; torch.load({ckpt!r}, weights_only=True); print('LOADED')"
    bare = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert bare.returncode != 0 and "Unsupported global" in bare.stderr
    # ... and reads it with the plugin's allowlist, safe loading kept on
    ok = subprocess.run([sys.executable, "-c", "import projects.video; " + load],
                        capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert ok.returncode == 0 and "LOADED" in ok.stdout, ok.stderr[-2000:]

    # mim test loads it (weights_only=True) and reports top-1 / top-5
    test_dir = str(tmp_path / "test")
    out = run_mim("test", DEMO_CONFIG, test_dir, data_cfg_options(data_root), ["--checkpoint", ckpt],
                  verbose=False, env=_env())
    assert "Epoch(test) [1/1]" in out  # 8 clips, batch 8
    metrics = read_test_metrics(test_dir)
    assert 0.0 <= metrics["acc/top1"] <= metrics["acc/top5"] <= 1.0

    # --resume restores weights, optimizer, scheduler and message hub, and goes on
    opts["train_cfg.max_epochs"] = 2
    out = run_mim("train", DEMO_CONFIG, work, opts, ["--resume", ckpt], verbose=False, env=_env())
    assert "resumed epoch: 1, iter: 4" in out
    assert "Epoch(train) [2][4/4]" in out and "Epoch(train) [1]" not in out
    first = torch.load(ckpt, weights_only=True)
    second = torch.load(os.path.join(work, "epoch_2.pth"), weights_only=True)
    assert second["meta"]["epoch"] == 2 and second["meta"]["iter"] == 8
    # the AddBias calibration went on from the checkpoint (4 + 4 passes), not from scratch
    counts = [int(v) for k, v in _addbias_state(second["state_dict"]).items() if k.endswith("count")]
    assert counts and all(c == 8 for c in counts)
    assert all(int(v) == 4 for k, v in _addbias_state(first["state_dict"]).items() if k.endswith("count"))


def _train_rank(rank, world_size, out_dir, data_root):
    from mmengine.config import Config

    import projects.video  # noqa: F401
    from projects.video.dist_train import build_dist_runner

    torch.set_num_threads(1)
    # what torchrun would set; MMAction2 reads LOCAL_RANK
    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world_size))
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(dict(data_cfg_options(data_root), **{
        **TINY, "train_dataloader.batch_size": 1, "train_cfg.max_epochs": 1}))
    cfg.work_dir = os.path.join(out_dir, "work")
    runner = build_dist_runner(cfg)
    # without SyncBuffersHook only AddBias's own all-reduce can make the means agree
    runner._hooks = [h for h in runner._hooks if type(h).__name__ != "SyncBuffersHook"]
    runner.train()
    model = runner.model.module
    torch.save(_addbias_state(model.state_dict()), os.path.join(out_dir, f"rank{rank}.pt"))
    seen = [int(s.gt_label) for batch in runner.train_dataloader for s in batch["data_samples"]]
    torch.save(seen, os.path.join(out_dir, f"labels{rank}.pt"))


def test_two_process_gloo_training_keeps_addbias_means_identical(data_root, tmp_path):
    out_dir = run_distributed(_train_rank, tmp_path, world_size=2, args=(data_root,))
    ranks = [torch.load(p) for p in sorted(glob.glob(os.path.join(out_dir, "rank*.pt")))]
    assert len(ranks) == 2
    # the two ranks trained on different clips ...
    labels = [torch.load(os.path.join(out_dir, f"labels{r}.pt")) for r in range(2)]
    assert len(labels[0]) == len(labels[1]) == 8 and labels[0] != labels[1]
    # ... yet hold identical, finished calibrations (8 passes of batch 1 per rank)
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) == 2 * 21  # 21 AddBias in the R-18
    for k in ranks[0]:
        torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0, msg=k)
    assert all(int(v) == 8 for k, v in ranks[0].items() if k.endswith("count"))
    assert any(v.abs().sum() > 0 for k, v in ranks[0].items() if k.endswith("init_mean"))
