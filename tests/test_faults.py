"""Kill a training run with SIGKILL while the AddBias means are being calibrated, resume it
with the framework's own mechanism, and compare with the uninterrupted run
(benchmarks/fault_harness.py, one path x kill point per test: the mid-calibration case of
each of the four paths here, about 50 s each; the whole table in the benchmark). The injector (benchmarks/fault_injection) is tested
first."""
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import fault_harness as fh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _injected(code, spec, tmp_path):
    env = fh.base_env()
    env.update(FAULT_INJECT=spec, FAULT_INJECT_LOG=str(tmp_path / "kill.log"),
               PYTHONPATH=fh.INJECTOR + os.pathsep + env["PYTHONPATH"])
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)


def test_injector_kills_after_a_step_and_in_the_middle_of_a_write(tmp_path):
    steps = ("import torch\np = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=0.1)\n"
             "for i in range(5):\n    opt.step(); print('step', i + 1, flush=True)\n")
    proc = _injected(steps, "after_step:3", tmp_path)
    assert proc.returncode == -9 and proc.stdout.split() == ["step", "1", "step", "2"]
    assert (tmp_path / "kill.log").read_text().strip() == "killed after optimizer step 3"

    target = tmp_path / "ckpt.pth.tmp"
    write = (f"import torch\np = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=0.1)\n"
             f"opt.step()\nwith open({str(target)!r}, 'wb') as f:\n    torch.save({{'x': torch.zeros(1000)}}, f)\n"
             f"print('not reached')\n")
    proc = _injected(write, "in_write:1:*.pth.tmp", tmp_path)
    assert proc.returncode == -9 and "not reached" not in proc.stdout
    complete = len(_saved_bytes())
    assert os.path.getsize(target) == complete // 2
    with pytest.raises(Exception):
        torch.load(target, weights_only=True)


def _saved_bytes():
    import io

    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1000)}, buf)
    return buf.getvalue()


def _kill_and_resume(name, point, tmp_path):
    fh.register_safe_globals()  # as the harness does: the plugins' checkpoints load with weights_only=True
    path = fh.build_path(name)
    root = str(tmp_path)
    path.prepare(os.path.join(root, "data"))
    env = fh.base_env(path.env_path)
    reference = fh.run_reference(path, root, env)
    return fh.run_point(path, point, root, env, reference)


def _assert_exact(result, calibration_counts):
    assert result["killed"].startswith("killed after optimizer step 5"), result
    assert result["resumed"], result
    assert result["counts"] == calibration_counts and result["counts_equal"] and result["max_mean_diff"] == 0
    assert result["identical"], result  # bitwise: one process, no data-loading workers, on the CPU
    assert not result["unloadable_after_kill"] and not result["unloadable_after_resume"]


def test_train_killed_mid_calibration_resumes_bitwise(tmp_path):
    """python -m rescalenet.train --save-every-steps 3, killed after step 5 of the 8
    calibration steps, resumed with --resume auto from step 3 (mid-epoch)."""
    result = _kill_and_resume("train", "mid-calibration", tmp_path)
    assert "epoch 0, step 3" in result["resumed_from"]
    _assert_exact(result, [8])


@pytest.mark.parametrize("name", ["mmdet", "mmaction2"])
def test_mim_train_killed_mid_calibration_resumes_bitwise(name, tmp_path):
    """mim train with checkpoint=dict(by_epoch=False, interval=3), killed after iteration
    5, resumed with --resume from iteration 3 (in the middle of epoch 1): the plugin's
    ExactResumeHook skips the 3 batches trained before the checkpoint."""
    pytest.importorskip("mim")
    result = _kill_and_resume(name, "mid-calibration", tmp_path)
    assert "resumed epoch: 0, iter: 3" in result["resumed_from"]
    _assert_exact(result, [8])


def test_fairseq_killed_mid_calibration_resumes_bitwise(tmp_path):
    """fairseq-train --save-interval-updates 3, killed after update 5, resumed from
    checkpoint_last.pt (update 3)."""
    pytest.importorskip("fairseq")
    result = _kill_and_resume("fairseq", "mid-calibration", tmp_path)
    assert "checkpoint_last.pt" in result["resumed_from"]
    _assert_exact(result, [8])


@pytest.mark.slow
def test_fairseq_killed_while_copying_checkpoint_last_is_refused_then_resumed(tmp_path):
    """fairseq copies checkpoint_last.pt in place: a kill in the copy leaves it truncated;
    the plugin refuses it naming the newest complete checkpoint, and resuming from that
    one with --restore-file gives the uninterrupted run's model."""
    pytest.importorskip("fairseq")
    result = _kill_and_resume("fairseq", "in-write", tmp_path)
    assert "checkpoint_last.pt" in result["killed"]
    assert "is truncated or corrupt" in result["refusal"] and "--restore-file" in result["refusal"]
    assert result["resumed"] and result["identical"], result


@pytest.mark.parametrize("name", ["train", "mmdet", "mmaction2", "fairseq"])
def test_divergence_after_checkpoints_stops_at_the_next_step_and_keeps_them_finite(name, tmp_path):
    """Every weight set to NaN after step 7 (checkpoints exist from steps 3 and 6): the run
    stops at step 8 naming it and the loss, and no checkpoint it leaves holds a NaN."""
    if name != "train":
        pytest.importorskip("fairseq" if name == "fairseq" else "mim")
    fh.register_safe_globals()
    path = fh.build_path(name)
    path.prepare(str(tmp_path / "data"))
    result = fh.run_divergence(path, str(tmp_path), fh.base_env(path.env_path), late=True)
    assert result["exit_code"] != 0 and result["checkpoints"] and not result["non_finite"], result
    step = fh.LATE_DIVERGENCE_STEP + 1
    assert f"step {step}" in result["error"] or f"iteration {step}" in result["error"] \
        or f"update {step}" in result["error"], result["error"]
    assert "nan" in result["error"].lower() or "not finite" in result["error"], result["error"]
