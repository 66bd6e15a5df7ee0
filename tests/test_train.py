"""rescalenet.train on a tiny generated ImageFolder: a CPU run writes checkpoints and
logs, a resumed run continues from the saved epoch with the same calibration,
2 processes keep identical AddBias means, bad arguments fail clearly."""
import csv
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import rescalenet
from rescalenet import train
from rescalenet.data import write_imagefolder
from dist_utils import run_distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_imagefolder(str(tmp_path_factory.mktemp("shapes")), num_classes=3, train_per_class=8,
                             val_per_class=4, size=32)


def _args(data, out, *extra):
    return ["--data", data, "--output", out, "--arch", "rescalenet18", "--img-size", "32",
            "--batch-size", "4", "--workers", "0", "--progress", "plain", "--print-freq", "100",
            "--warmup-epochs", "1", *extra]


def _means(state_dict):
    return {k: v for k, v in state_dict.items() if k.endswith("init_mean") or k.endswith(".count")
            or k in ("addbias1.count",)}


def test_train_checkpoint_resume_keeps_calibration(shapes, tmp_path):
    out = str(tmp_path / "run")
    # 24 images / batch 4 = 6 steps per epoch: 2 epochs = 12 steps >= 8 calibration steps
    res = train.main(_args(shapes, out, "--epochs", "1"))
    assert rescalenet.is_calibrated(res.model)
    ckpt = torch.load(os.path.join(out, "last.pth"), weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["arch"] == "rescalenet18" and ckpt["scheduler"] == {"step": 12}
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert all(int(v) == 8 for k, v in ckpt["state_dict"].items() if k.endswith(".count"))
    assert ckpt["classes"] == ["circle", "square", "triangle"]
    # the checkpoint builds the same classifier, and a backbone (no head)
    clf = rescalenet.create_model(ckpt["arch"], **ckpt["model_kwargs"])
    clf.load_state_dict(ckpt["state_dict"])
    backbone = rescalenet.create_model("rescalenet18", out_indices=(0, 1, 2, 3))
    missing, unexpected = backbone.load_state_dict(ckpt["state_dict"], strict=False)
    assert not missing and all(k.startswith(("fc.", "final_addbias.")) for k in unexpected)
    assert rescalenet.is_calibrated(backbone)

    # resume for one more epoch: no recalibration, same means, training continues
    res2 = train.main(_args(shapes, out, "--epochs", "2", "--resume", "auto"))
    assert res2.start_epoch == 2
    ckpt2 = torch.load(os.path.join(out, "last.pth"), weights_only=True)
    assert ckpt2["epoch"] == 3 and ckpt2["scheduler"] == {"step": 18}
    for k, v in ckpt["state_dict"].items():
        if k.endswith((".init_mean", ".count")):
            assert torch.equal(ckpt2["state_dict"][k], v), k
    assert not torch.equal(ckpt2["state_dict"]["conv1.weight"], ckpt["state_dict"]["conv1.weight"])
    with open(os.path.join(out, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(0 <= float(r["val_acc1"]) <= 100 and float(r["train_loss"]) > 0 for r in rows)
    # lr: linear warm-up during epoch 1, then the peak (step schedule, no milestone yet)
    assert float(rows[0]["lr"]) < float(rows[1]["lr"]) == pytest.approx(0.1 * 4 / 256)
    assert os.path.isfile(os.path.join(out, "best.pth"))


def test_mixup_cosine_and_a_baseline_run(shapes, tmp_path):
    res = train.main(_args(shapes, str(tmp_path / "a"), "--epochs", "1", "--warmup-epochs", "0",
                           "--mixup", "0.5", "--schedule", "cosine", "--channels-last", "--amp",
                           "--limit-train-batches", "2", "--val-dir", ""))
    assert res.model.drop_rate == 0.0 and res.model.drop_conv == 0.0  # mixup: dropout off
    base = train.main(_args(shapes, str(tmp_path / "b"), "--arch", "narrow_plain_d11", "--epochs", "1",
                            "--warmup-epochs", "0", "--limit-train-batches", "2"))
    assert "val_acc1" in base.last


def test_schedule_matches_the_official_one():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    s = train.WarmupSchedule(opt, iters_per_epoch=10, epochs=100, warmup_epochs=5)
    assert s.ratio(0) == 0 and s.ratio(25) == 0.5 and s.ratio(50) == 1.0
    assert s.ratio(50 + 10 * 30 - 1) == 1.0 and s.ratio(50 + 10 * 30) == pytest.approx(0.1)  # epoch 35 absolute
    assert s.ratio(50 + 10 * 90) == pytest.approx(1e-3)
    c = train.WarmupSchedule(opt, 10, 100, 0, schedule="cosine")
    assert c.ratio(0) == 1.0 and c.ratio(500) == pytest.approx(0.5) and c.ratio(1000) == 1e-5


@pytest.mark.parametrize("extra,message", [
    (["--arch", "resnet42"], "--arch 'resnet42' is unknown"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--milestones", "60", "30"], "--milestones must be increasing"),
    (["--drop-fc", "1.5"], "--drop-fc must be in"),
    (["--evaluate"], "--evaluate needs --resume"),
    (["--clip-grad", "-1"], "--clip-grad must be >= 0"),
])
def test_bad_arguments_fail_clearly(shapes, tmp_path, extra, message):
    with pytest.raises(SystemExit, match=message):
        train.main(_args(shapes, str(tmp_path), *extra))


def test_bad_data_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match="is not a directory"):
        train.main(_args(str(tmp_path / "nope"), str(tmp_path)))
    os.makedirs(tmp_path / "d" / "train")
    with pytest.raises(SystemExit, match="has no val/ folder"):
        train.main(_args(str(tmp_path / "d"), str(tmp_path)))
    with pytest.raises(SystemExit, match="does not exist"):
        train.main(_args(str(tmp_path / "d"), str(tmp_path), "--val-dir", "", "--resume", str(tmp_path / "x.pth")))


def _train_on_rank(rank, world_size, out_dir, data):
    torch.set_num_threads(1)  # 2 processes on a small CPU
    res = train.main(_args(data, os.path.join(out_dir, "run"), "--warmup-epochs", "0", "--epochs", "3",
                           "--val-dir", ""))
    means = {k: v.clone() for k, v in res.model.state_dict().items() if k.endswith((".init_mean", ".count"))}
    torch.save(means, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()


@pytest.mark.slow
def test_two_processes_keep_identical_addbias_means(shapes, tmp_path):
    # 24 images, 2 ranks x batch 4: 3 steps per epoch, 9 steps, calibrated after 8
    out = run_distributed(_train_on_rank, tmp_path, args=(shapes,))
    r0 = torch.load(os.path.join(out, "rank0.pt"))
    r1 = torch.load(os.path.join(out, "rank1.pt"))
    assert r0.keys() == r1.keys() and r0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert all(int(v) == 8 for k, v in r0.items() if k.endswith(".count"))
    assert torch.load(os.path.join(out, "run", "last.pth"), weights_only=True)["epoch"] == 3


@pytest.mark.slow
def test_torchrun_cli_two_processes(shapes, tmp_path):
    out = str(tmp_path / "tr")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "rescalenet.train"] + _args(shapes, out, "--warmup-epochs", "0", "--epochs", "3", "--device", "cpu")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    ckpt = torch.load(os.path.join(out, "last.pth"), weights_only=True)
    assert ckpt["epoch"] == 3 and rescalenet.is_calibrated(
        _load(rescalenet.rescalenet18(num_classes=3), ckpt["state_dict"]))


def _load(model, sd):
    model.load_state_dict(sd)
    return model


def test_capped_evaluation_scores_every_class():
    """--limit-eval-batches scores every k-th image: an ImageFolder is sorted by class, so
    its first batches alone would hold one class."""
    from rescalenet.training import eval_loader

    labels = torch.arange(10).repeat_interleave(60)  # 600 images, class-sorted
    data = torch.utils.data.TensorDataset(torch.zeros(600, 1), labels)
    seen = torch.cat([y for _, y in eval_loader(data, 16, 0, limit_batches=2)])
    assert 16 < len(seen) <= 32 and set(seen.tolist()) == set(range(10))
    ranks = [torch.cat([y for _, y in eval_loader(data, 16, 0, rank=r, world_size=2, limit_batches=2)])
             for r in range(2)]
    assert sum(len(r) for r in ranks) == len(seen)
    assert len(list(eval_loader(data, 16, 0))) == 38  # uncapped: all 600


def test_clip_grad_bounds_the_gradient_norm_of_every_step(shapes, tmp_path, monkeypatch):
    """--clip-grad NORM: the global gradient norm the optimizer sees is at most NORM."""
    norms = []
    step = torch.optim.SGD.step

    def recording_step(self, *a, **k):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    train.main(_args(shapes, str(tmp_path / "clip"), "--epochs", "1", "--lr", "0.1", "--clip-grad", "1e-3"))
    assert norms and max(norms) <= 1e-3 * (1 + 1e-4)
    norms.clear()
    train.main(_args(shapes, str(tmp_path / "free"), "--epochs", "1", "--lr", "0.1"))
    assert max(norms) > 1e-2  # (without it the norms are larger: the bound above is not vacuous)
