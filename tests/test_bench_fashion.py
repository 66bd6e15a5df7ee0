"""The protocol of benchmarks/bench_fashion.py, with a stand-in for the trainer: the lr is
chosen on validation top-1 of full-budget seed-0 runs, the grid grows past a winning
edge, the chosen seed-0 run is reused as a final seed, diverged runs never win, and a
re-run skips what is done."""
import math
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_fashion as bench  # noqa: E402


class FakeRunner(bench.Runner):
    """Writes result.json as the trainer would, with a validation top-1 given by ``score(lr, seed)``."""

    def __init__(self, out, score):
        super().__init__(data="unused", out=str(out), jobs=1, quick=False)
        self.score, self.calls = score, []

    def run(self, folder, arch, args):
        done = self.result(folder)
        if done is not None:
            return done
        lr, seed = float(args[args.index("--lr") + 1]), int(args[args.index("--seed") + 1])
        assert args[args.index("--epochs") + 1] == "1" and "--test-dir" in args  # the full budget
        self.calls.append((arch, lr, seed, tuple(args[len(bench.recipe(28)):])))
        os.makedirs(folder, exist_ok=True)
        val = self.score(lr, seed)
        res = dict(failed=True, diverged=True) if val is None else dict(val_acc1=val, test_acc1=val - 1)
        with open(os.path.join(folder, "failed.json" if val is None else "result.json"), "w") as f:
            json.dump(res, f)
        return res


def test_sweep_extends_past_a_winning_edge_and_skips_diverged_runs(tmp_path):
    # best at 0.4; 0.8 diverges
    runner = FakeRunner(tmp_path, lambda lr, seed: None if lr > 0.5 else 80 - abs(lr - 0.4) * 10)
    lr = bench.sweep(runner, "cifar20", "BN", "resnet_cifar20", 28, 1)
    assert lr == 0.4
    assert sorted(c[1] for c in runner.calls) == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert {c[2] for c in runner.calls} == {0}
    assert bench.sweep_table(runner, "cifar20", "BN")[0.8] == -math.inf


def test_a_sweep_where_every_run_diverged_reports_the_lowest_lr(tmp_path):
    runner = FakeRunner(tmp_path, lambda lr, seed: None)
    assert bench.sweep(runner, "cifar20", "plain", "plain_resnet_cifar20", 28, 1) == 0.05
    assert sorted(c[1] for c in runner.calls) == [0.05, 0.1, 0.2]  # no extension downwards or upwards


def test_finals_reuse_the_chosen_seed0_run_and_pass_the_methods_flags(tmp_path):
    runner = FakeRunner(tmp_path, lambda lr, seed: 70 - abs(lr - 0.2) * 10 + seed)
    arch = "plain_resnet_cifar20 --clip-grad 1"
    lr = bench.sweep(runner, "cifar20", "plain, gradient clipping", arch, 28, 1)
    assert lr == 0.2 and [c[1] for c in runner.calls] == [0.05, 0.1, 0.2, 0.4]  # 0.2 won at the edge
    runner.calls.clear()
    runs = bench.final_runs(runner, "cifar20", "plain, gradient clipping", "plain_resnet_cifar20", 28, 0.2, 1,
                            ["--clip-grad", "1"])
    assert [c[2] for c in runner.calls] == [1, 2]  # seed 0 is the sweep's run
    assert all(c[3][-2:] == ("--clip-grad", "1") for c in runner.calls)
    assert [r["val_acc1"] for r in runs] == pytest.approx([70, 71, 72])


def test_a_second_invocation_runs_nothing_again(tmp_path):
    runner = FakeRunner(tmp_path, lambda lr, seed: 80 - abs(lr - 0.1) * 10)
    bench.sweep(runner, "cifar20", "RescaleNet", "rescalenet_cifar20", 28, 1)
    first = len(runner.calls)
    runner.calls.clear()
    assert bench.sweep(runner, "cifar20", "RescaleNet", "rescalenet_cifar20", 28, 1) == 0.1
    assert runner.calls == [] and first == 3


def test_a_method_at_chance_everywhere_is_not_swept_further(tmp_path):
    runner = FakeRunner(tmp_path, lambda lr, seed: None if lr > 0.1 else 10.0)
    bench.sweep(runner, "cifar20", "plain", "plain_resnet_cifar20", 28, 1)
    assert sorted(c[1] for c in runner.calls) == [0.05, 0.1, 0.2]


def test_the_depth_table_passes_each_methods_trainer_flags_and_real_model_names(tmp_path):
    import rescalenet

    class Recorder(bench.Runner):
        def run_all(self, tasks):
            self.tasks = getattr(self, "tasks", []) + list(tasks)
            return [dict(failed=True, diverged=True, reason="training diverged: loss is nan at epoch 1, step 3 "
                                                             "(training step 3). Lower --lr")
                    if t[1].startswith("plain") and "--clip-grad" not in t[2] else
                    dict(val_acc1=50.0 if "plain" in t[1] else 11.0, train_loss=1.5, val_loss=1.6) for t in tasks]

    runner = Recorder(data="unused", out=str(tmp_path), jobs=1, quick=False)
    table = bench.run_depth(runner, table_only=False)
    assert len(runner.tasks) == len(bench.DEPTH["archs"]) * len(bench.DEPTH["methods"])
    known = set(rescalenet.list_models())
    for folder, name, args in runner.tasks:
        assert name in known, name
        assert ("--clip-grad" in args) == folder.endswith("plain, gradient clipping"), folder
    archs = len(bench.DEPTH["archs"])
    assert table.count("| learned |") == archs  # the clipped plain net
    assert table.count("diverged (loss NaN at step 3)") == archs  # the plain net
    assert table.count("stalled at chance") == len(runner.tasks) - 2 * archs


def test_a_depth_row_at_another_lr_writes_its_own_folder_and_runs_only_what_was_asked(tmp_path):
    class Recorder(bench.Runner):
        def run_all(self, tasks):
            self.tasks = list(tasks)
            return [dict(val_acc1=40.0, train_loss=1.5, val_loss=1.6) for _ in tasks]

    runner = Recorder(data="unused", out=str(tmp_path), jobs=1, quick=False)
    table = bench.run_depth(runner, table_only=False, lr=0.0125, archs=["cifar1202"], methods=["SkipInit"])
    [(folder, name, args)] = runner.tasks
    assert folder == os.path.join(str(tmp_path), "depth", "lr0.0125", "cifar1202", "SkipInit")
    assert name == "skipinit_resnet_cifar1202" and args[args.index("--lr") + 1] == "0.0125"
    assert "| 1202 | SkipInit |" in table and "| learned |" in table
    bench.run_depth(runner, table_only=False, archs=["cifar20"], methods=["BN"])  # the table's lr: its folder
    assert runner.tasks[0][0] == os.path.join(str(tmp_path), "depth", "cifar20", "BN")


def test_the_depth_options_are_refused_outside_the_depth_group(tmp_path, capsys):
    for split in ("train", "val", "test"):
        os.makedirs(tmp_path / split)
    with pytest.raises(SystemExit):
        bench.main(["--group", "cifar20", "--lr", "0.01", "--data", str(tmp_path), "--table"])
    assert "--group depth only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--group", "depth", "--lr", "0", "--data", str(tmp_path), "--table"])
    assert "must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--group", "depth", "--lr", "inf", "--data", str(tmp_path), "--table"])
    assert "must be positive" in capsys.readouterr().err


def test_a_group_runs_its_methods_side_by_side_each_one_run_at_a_time(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(bench, "ROOT", str(tmp_path))  # the group's PNG goes to ROOT/docs
    active, peak, lock = {}, [0], threading.Lock()

    def score(lr, seed):
        return None if lr > 0.5 else 80 - abs(lr - 0.2) * 10 + seed

    class Concurrent(FakeRunner):
        def run(self, folder, arch, args):
            method = os.path.basename(os.path.dirname(folder))
            with lock:
                assert method not in active, "two runs of one method at once"
                active[method] = True
                peak[0] = max(peak[0], len(active))
            try:
                return super().run(folder, arch, args)
            finally:
                with lock:
                    del active[method]

    runner = Concurrent(tmp_path, score)
    runner.jobs = 2
    table = bench.run_group(runner, "cifar20", table_only=False)
    methods = bench.GROUPS["cifar20"]["methods"]
    # each method: 0.05, 0.1, 0.2, then 0.4 past the winning edge (0.2 wins), seeds 1 and 2 at 0.2
    assert len(runner.calls) == len(methods) * 6
    assert len({(c[0], c[1], c[2], c[3]) for c in runner.calls}) == len(runner.calls)  # nothing twice
    assert table.count("| 0.2 |") == len(methods) and "not finished" not in table
    runner.calls.clear()
    bench.run_group(runner, "cifar20", table_only=False)
    assert runner.calls == []  # a second invocation runs nothing again


def test_a_method_that_diverged_at_every_lr_says_so_in_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ROOT", str(tmp_path))
    runner = FakeRunner(tmp_path, lambda lr, seed: None)
    bench.sweep(runner, "cifar56", "plain", "plain_resnet_cifar56", 28, 1)
    table = bench.run_group(runner, "cifar56", table_only=True)
    row = next(line for line in table.splitlines() if line.startswith("| plain |"))
    assert "diverged at every lr" in row and "0.05: diverged, 0.1: diverged, 0.2: diverged" in row
    assert table.count("not finished") == len(bench.GROUPS["cifar56"]["methods"]) - 1
