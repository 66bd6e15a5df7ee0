"""The MMEngine hooks of projects/mmengine_hooks.py, in-process on a toy model with an
AddBias (seconds): a run interrupted mid-calibration in the middle of an epoch resumes
bitwise, where MMEngine alone replays the epoch; a save interrupted while writing leaves
the previous checkpoint; a diverging run stops with the iteration and the loss before a
NaN model is saved; missing data files are named before training. The same hooks on the
real ``mim train`` command lines, with SIGKILL: tests/test_faults.py (slow) and
benchmarks/fault_harness.py."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("mmengine")

from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import projects.mmengine_hooks as hooks  # noqa: E402  (registers the hooks)
from projects.safe_load import register_mmengine_safe_globals, register_safe_local_loader  # noqa: E402
from rescalenet import AddBias  # noqa: E402

# what the plugins (projects.detection, projects.video) do when a config imports them
register_mmengine_safe_globals()
register_safe_local_loader()


class ToySet(torch.utils.data.Dataset):
    """24 points of 2 classes; every access adds numpy noise (a random augmentation)."""

    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def get_data_info(self, i):  # what DataFilesCheckHook reads (MMEngine's BaseDataset API)
        return dict(img_path=f"/nowhere/{i}.png")

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i] + torch.from_numpy(np.random.normal(0, 0.1, 4)).float(), labels=self.y[i])


class ToyNet(BaseModel):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), AddBias(16, calibration_steps=8), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(16, 2))

    def forward(self, inputs, labels=None, mode="tensor"):
        out = self.net(inputs)
        return {"loss": F.cross_entropy(out, labels)} if mode == "loss" else out


class Interrupt(hooks.Hook):
    """Stands in for a kill after iteration ``at`` (the process state is lost, files stay)."""

    priority = "LOWEST"

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            raise KeyboardInterrupt(f"killed after iteration {self.at}")


def _runner(work, name, resume=False, stock=False, lr=0.1, extra_hooks=(), max_keep=1):
    checkpoint = dict(type="CheckpointHook" if stock else "SafeCheckpointHook", by_epoch=False, interval=2,
                      max_keep_ckpts=max_keep)
    custom = [] if stock else [dict(type="ExactResumeHook"), dict(type="DivergenceCheckHook")]
    torch.manual_seed(0)  # the same initial model in every run
    return Runner(
        model=ToyNet(), work_dir=str(work), experiment_name=name,
        train_dataloader=dict(dataset=ToySet(), sampler=dict(type="DefaultSampler", shuffle=True), batch_size=4,
                              num_workers=0, collate_fn=dict(type="default_collate")),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=lr, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=3),  # 6 iterations per epoch, 18 in all
        default_hooks=dict(checkpoint=checkpoint, logger=dict(type="LoggerHook", interval=100)),
        custom_hooks=custom + list(extra_hooks), randomness=dict(seed=0), resume=resume,
        default_scope="mmengine")


def _interrupted(runner):
    with pytest.raises(KeyboardInterrupt):
        runner.train()


def _state(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_resume_mid_calibration_in_the_middle_of_an_epoch_is_exact(tmp_path):
    reference = _runner(tmp_path / "ref", "ref")
    reference.train()
    want = _state(reference)
    assert int(want["net.1.count"]) == 8 and reference.iter == 18

    # killed after iteration 5: the last checkpoint is iter_4 (epoch 1, 4 of 6 batches; 4 of 8
    # calibration passes), saved by the SafeCheckpointHook, with the random states
    _interrupted(_runner(tmp_path / "run", "run1", extra_hooks=[Interrupt(5)]))
    ckpt = torch.load(tmp_path / "run" / "iter_4.pth", weights_only=False)
    assert int(ckpt["state_dict"]["net.1.count"]) == 4 and "rng_state" in ckpt
    resumed = _runner(tmp_path / "run", "run2", resume=True)
    resumed.train()
    assert resumed.iter == 18
    got = _state(resumed)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_mmengine_alone_replays_the_interrupted_epoch(tmp_path):
    """What ExactResumeHook fixes: MMEngine's EpochBasedTrainLoop resumed from an
    iteration checkpoint starts the epoch again, so the calibration sees its first
    batches twice and the run trains 4 iterations more than 3 epochs."""
    _interrupted(_runner(tmp_path / "run", "s1", stock=True, extra_hooks=[Interrupt(5)]))
    resumed = _runner(tmp_path / "run", "s2", resume=True, stock=True)
    resumed.train()
    assert resumed.iter == 18 + 4


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """MMEngine's CheckpointHook deletes the oldest checkpoint before writing the new one:
    a save that dies leaves none (max_keep_ckpts=1); the SafeCheckpointHook keeps it."""
    from mmengine.runner import Runner as MMRunner

    real = MMRunner.save_checkpoint

    def dies_at_iter_6(self, out_dir, filename, *args, **kwargs):
        if filename.startswith("iter_6"):
            raise KeyboardInterrupt("killed while saving")
        return real(self, out_dir, filename, *args, **kwargs)

    monkeypatch.setattr(MMRunner, "save_checkpoint", dies_at_iter_6)
    for stock in (True, False):
        work = tmp_path / ("stock" if stock else "safe")
        _interrupted(_runner(work, f"save{stock}", stock=stock))
        with open(work / "last_checkpoint") as f:
            pointed = f.read().strip()
        assert pointed.endswith("iter_4.pth")
        if stock:
            assert not os.path.exists(pointed)  # deleted before the failed save: nothing to resume from
        else:
            assert torch.load(pointed, weights_only=False)["meta"]["iter"] == 4


def test_divergence_stops_with_iteration_and_loss_before_saving(tmp_path):
    runner = _runner(tmp_path / "div", "div", lr=1e12)
    with pytest.raises(FloatingPointError, match=r"training diverged at iteration \d+ \(epoch 1\): loss = (nan|inf)"):
        runner.train()
    for name in os.listdir(tmp_path / "div"):
        if name.endswith(".pth"):
            state = torch.load(tmp_path / "div" / name, weights_only=False)["state_dict"]
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), name


def test_no_checkpoint_with_non_finite_weights(tmp_path):
    runner = _runner(tmp_path / "nan", "nan")
    runner.train_loop  # build
    with torch.no_grad():
        runner.model.net[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="refusing to save a checkpoint.*net.0.weight"):
        runner.save_checkpoint(str(tmp_path / "nan"), "x.pth", save_optimizer=False, save_param_scheduler=False)
    assert not os.path.exists(tmp_path / "nan" / "x.pth")


def test_missing_data_files_are_named_before_training(tmp_path):
    runner = _runner(tmp_path / "files", "files", extra_hooks=[dict(type="DataFilesCheckHook")])
    with pytest.raises(FileNotFoundError, match=r"train_dataloader: 24 of the 24 samples .*e\.g\. \['/nowhere/0\.png'"):
        runner.train()
    assert not any(n.endswith(".pth") for n in os.listdir(tmp_path / "files"))


def test_rng_state_round_trip_loads_with_weights_only(tmp_path):
    state = hooks.rng_state()
    torch.save(state, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    a = (torch.rand(3), np.random.rand(3))
    hooks.set_rng_state(loaded)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_safe_checkpoint_hook_keeps_one_best_checkpoint(tmp_path):
    """save_best with the SafeCheckpointHook: the new best file is written before the old one
    is removed, and exactly one best checkpoint (the one the message hub names) is left."""
    from mmengine.evaluator import BaseMetric
    from mmengine.registry import METRICS

    @METRICS.register_module(force=True)
    class EpochScore(BaseMetric):  # 1, 3, 2 at epochs 1..3: the best is epoch 2's
        calls = 0

        def process(self, data_batch, data_samples):
            self.results.append(0)

        def compute_metrics(self, results):
            EpochScore.calls += 1
            return {"score": {1: 1.0, 2: 3.0, 3: 2.0}[EpochScore.calls]}

    torch.manual_seed(0)
    runner = Runner(
        model=ToyNet(), work_dir=str(tmp_path), experiment_name="best",
        train_dataloader=dict(dataset=ToySet(), sampler=dict(type="DefaultSampler", shuffle=True), batch_size=4,
                              num_workers=0, collate_fn=dict(type="default_collate")),
        val_dataloader=dict(dataset=ToySet(4), sampler=dict(type="DefaultSampler", shuffle=False), batch_size=4,
                            num_workers=0, collate_fn=dict(type="default_collate")),
        val_evaluator=dict(type="EpochScore"), val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)), train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(checkpoint=dict(type="SafeCheckpointHook", interval=1, max_keep_ckpts=1,
                                           save_best="score", rule="greater")),
        randomness=dict(seed=0), default_scope="mmengine")
    runner.train()
    best = sorted(f for f in os.listdir(tmp_path) if f.startswith("best_"))
    assert best == ["best_score_epoch_2.pth"]
    assert runner.message_hub.get_info("best_ckpt") == str(tmp_path / "best_score_epoch_2.pth")
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("epoch_")) == ["epoch_3.pth"]
